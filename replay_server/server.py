"""Replay server process: ``dqn replay-server`` (or :class:`ReplayServer` in-process)."""

from __future__ import annotations

import logging
import signal
import threading

import numpy as np

from dqn import rpc
from dqn.config import Config
from dqn.envs import env_spec
from dqn.v1 import replay_pb2_grpc as pb_grpc
from replay_server.rate_limiter import RateLimiter
from replay_server.service import ReplayServicer
from replay_server.storage import RingStorage
from replay_server.validation import BatchSpec

log = logging.getLogger("replay_server")
SERVICE_NAME = "dqn.v1.ReplayService"
RPC_THREADS = 32


class ReplayServer:
    """A gRPC replay server. ``start()`` binds (port 0 picks one) and returns the port."""

    def __init__(self, config: Config, obs_shape=None, n_actions: int | None = None):
        r = config.replay
        if obs_shape is None or n_actions is None:
            obs_shape, n_actions, _ = env_spec(config.env.id)
        self.config = config
        storage = RingStorage(r.capacity, obs_shape)
        spec = BatchSpec(obs_shape, n_actions, r.max_batch_transitions)
        limiter = RateLimiter(
            r.min_size,
            r.samples_per_insert,
            r.spi_tolerance,
            max_sample=config.learner.batch_size * config.learner.batches_per_call,
            max_insert=config.actors.push_every,
        )
        # Half the threads at most may wait on the rate limiter (see ReplayServicer).
        self.servicer = ReplayServicer(
            storage,
            spec,
            limiter,
            np.random.default_rng(config.run.seed + 7919),
            max_waiting_pushers=RPC_THREADS // 2,
        )
        self._server = rpc.make_server(r.max_message_mb, max_workers=RPC_THREADS)
        pb_grpc.add_ReplayServiceServicer_to_server(self.servicer, self._server)
        self._health = rpc.add_health(self._server, SERVICE_NAME)
        self.port: int | None = None
        self._stopped = threading.Event()

    def start(self) -> int:
        r = self.config.replay
        self.port = rpc.bind(self._server, r.host, r.port)
        self._server.start()
        log.info(
            "replay server on %s:%d (capacity %d, %.1f MiB preallocated)",
            r.host,
            self.port,
            r.capacity,
            self.servicer.storage.nbytes / rpc.MiB,
        )
        return self.port

    @property
    def address(self) -> str:
        return f"{self.config.replay.host}:{self.port}"

    def stop(self, grace: float = 2.0) -> None:
        self._health.enter_graceful_shutdown()
        self.servicer.stop()
        self._server.stop(grace).wait()
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def serve(config: Config, ready_file: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; exit code 0 on a clean stop."""
    server = ReplayServer(config)
    port = server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rpc.write_ready_file(ready_file, address=f"{config.replay.host}:{port}", port=port)
    stop.wait()
    log.info("replay server stopping")
    server.stop()
    return 0
