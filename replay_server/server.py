"""Replay server process: ``dqn replay-server`` (or :class:`ReplayServer` in-process).

It builds no env: the shapes and dtype it stores and checks batches against come from
the config's env spec (``env.obs_shape``, ``env.obs_dtype``, ``env.n_actions``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc
import numpy as np

from dqn import rpc, seeding
from dqn.config import Config
from dqn.security import Security
from dqn.signals import stop_on_signals
from dqn.telemetry import MetricsEndpoint
from dqn.v1 import replay_pb2 as pb
from replay_server import checkpoint
from replay_server.metrics import replay_series
from replay_server.priorities import Priorities
from replay_server.rate_limiter import RateLimiter
from replay_server.service import ReplayServicer
from replay_server.storage import RingStorage
from replay_server.validation import BatchSpec

log = logging.getLogger("replay_server")
SERVICE_NAME = "dqn.v1.ReplayService"
# The learner's calls are not counted against AioServer's open-call cap, so a fleet
# that fills the server never starves Sample or Info (health is never counted).
LEARNER_METHODS = (f"/{SERVICE_NAME}/Sample", f"/{SERVICE_NAME}/Info")


def replay_handler(servicer: ReplayServicer) -> grpc.GenericRpcHandler:
    """The servicer's methods like the generated ``add_ReplayServiceServicer_to_server``,
    but with requests handed over as raw bytes: the servicer parses them, so a message
    that does not parse is answered INVALID_ARGUMENT (grpc's own deserializer answers
    INTERNAL and, on a stream, can leave the call unfinished so the server never stops).
    """

    def raw(data: bytes) -> bytes:
        return data

    handlers = {
        "Push": grpc.stream_unary_rpc_method_handler(
            servicer.Push, raw, pb.PushResponse.SerializeToString
        ),
        "Sample": grpc.unary_unary_rpc_method_handler(servicer.Sample, raw, _serialized),
        "Info": grpc.unary_unary_rpc_method_handler(
            servicer.Info, raw, pb.InfoResponse.SerializeToString
        ),
        "UpdatePriorities": grpc.unary_unary_rpc_method_handler(
            servicer.UpdatePriorities, raw, pb.UpdatePrioritiesResponse.SerializeToString
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _serialized(response: bytes | pb.SampleResponse) -> bytes:
    """Sample answers come serialized already (encoded off the loop when large)."""
    return response if isinstance(response, bytes) else response.SerializeToString()


class ReplayServer:
    """A gRPC replay server. ``start()`` binds (port 0 picks one) and returns the port."""

    def __init__(
        self,
        config: Config,
        obs_shape=None,
        n_actions: int | None = None,
        security: Security | None = None,
        obs_dtype=None,
    ):
        r = config.replay
        if obs_shape is None or n_actions is None:  # the spec the config carries
            config.env.require_spec()
            obs_shape, n_actions = config.env.obs_shape, config.env.n_actions
            obs_dtype = config.env.obs_dtype if obs_dtype is None else obs_dtype
        obs_dtype = np.dtype(obs_dtype or np.float32)
        self.config = config
        storage = RingStorage(r.capacity, obs_shape, obs_dtype)
        spec = BatchSpec(obs_shape, n_actions, r.max_batch_transitions, obs_dtype)
        limiter = RateLimiter(
            r.min_size,
            r.samples_per_insert,
            config.spi_tolerance(),
            max_sample=config.learner.batch_size * config.learner.batches_per_call,
            max_insert=config.actors.push_every,
        )
        self.servicer = ReplayServicer(
            storage,
            spec,
            limiter,
            np.random.default_rng(seeding.derive(config.run.seed, "replay")),
            priorities=(
                Priorities(r.capacity, r.priority_alpha, r.priority_eps) if r.prioritized else None
            ),
            max_message_bytes=r.max_message_mb * rpc.MiB,
        )
        self._server = rpc.AioServer(
            r.max_message_mb,
            security,
            health_services=(SERVICE_NAME,),
            exempt_methods=LEARNER_METHODS,
            name="replay-grpc",
        )
        self._server.add_handlers(replay_handler(self.servicer))
        self._server.on_stop(self.servicer.stop)  # wakes waiting calls, on the loop
        self.metrics = MetricsEndpoint(r.host, r.metrics_port, lambda: replay_series(self.servicer))
        self.port: int | None = None
        self._stopped = threading.Event()
        self._checkpointer = self._open_checkpoint()

    def _open_checkpoint(self) -> checkpoint.Checkpointer | None:
        """Restore from ``replay.checkpoint_path`` if that file exists; its periodic writer."""
        r = self.config.replay
        if not r.checkpoint_path:
            return None
        path = Path(r.checkpoint_path)
        if path.exists():
            self.servicer.restore(checkpoint.load(path), str(path))
            log.info(
                "restored %d transitions (%d inserted so far) from %s",
                self.servicer.storage.size,
                self.servicer.inserted,
                path,
            )
        else:
            log.info("no replay checkpoint at %s yet; starting empty", path)
        return checkpoint.Checkpointer(self.servicer.snapshot, path, r.checkpoint_every_seconds)

    def start(self) -> int:
        r = self.config.replay
        self.port = self._server.start(r.host, r.port)
        try:
            self.metrics.start()
        except OSError:
            self._server.stop(0)
            raise
        log.info(
            "replay server on %s:%d (capacity %d, obs %s %s, %.1f MiB preallocated), metrics %s",
            r.host,
            self.port,
            r.capacity,
            list(self.servicer.storage.obs_shape),
            self.servicer.storage.obs_dtype,
            self.servicer.storage.nbytes / rpc.MiB,
            self.metrics.url or "off",
        )
        if self._checkpointer is not None:
            self._checkpointer.start()
        return self.port

    @property
    def address(self) -> str:
        return f"{self.config.replay.host}:{self.port}"

    def take_loop_lag(self) -> float:
        """The longest stall of the server's event loop (seconds) since the last call."""
        return self._server.take_loop_lag()

    def write_checkpoint(self) -> checkpoint.ReplayState | None:
        """Write a checkpoint now (None when none is configured); returns what was written."""
        return self._checkpointer.write() if self._checkpointer is not None else None

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls, let in-flight ones finish within ``grace`` seconds, then
        write the final checkpoint, which holds every transition a Push acknowledged."""
        # Health NOT_SERVING, waiting calls woken, in-flight ones given `grace`; bounded
        # in time even if a call never finishes, so the final checkpoint is written.
        self._server.stop(grace)
        try:
            self.metrics.stop()
            if self._checkpointer is not None:
                self._checkpointer.close()
        finally:
            self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def serve(server: ReplayServer, config: Config, ready_file: str | None = None) -> int:
    """Process entry (``dqn replay-server``): serve ``server`` (built by
    ``deploy.builder``) until SIGTERM/SIGINT; exit code 0 on a clean stop."""
    port = server.start()
    stop = threading.Event()
    stop_on_signals(stop)
    rpc.write_ready_file(
        ready_file,
        address=f"{config.replay.host}:{port}",
        port=port,
        metrics_port=server.metrics.port,
    )
    stop.wait()
    log.info("replay server stopping")
    server.stop()
    return 0
