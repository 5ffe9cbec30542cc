"""The actor fleet on Ray: placement, restart on failure, resizing while training runs.

Ray is the control plane only: each Ray actor runs :class:`actors.actor.Actor` in a
thread and talks to the replay server and weight service over gRPC directly, so no
transition or weight goes through Ray's object store. A restarted Ray actor reruns
its constructor, which starts acting again with a new incarnation id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

# Must be set before Ray is imported: otherwise a local Ray binds its ports on every
# interface (and advertises the machine's address) even when told to use 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402

from dqn.config import Config
from dqn.security import Security

log = logging.getLogger("actors.fleet")

# A new local Ray turns token authentication on by default and logs a notice saying so
# (and how to opt out) on every start. The project keeps that default, so the notice
# tells a user nothing; this filter on the one logger that emits it drops that record
# only (every other Ray warning, including "token authentication is disabled", stays).
RAY_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_TOKEN_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


def _not_the_token_auth_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(RAY_TOKEN_AUTH_NOTICE)


class _RayActor:
    """Body of one Ray actor; the loop runs in a thread so calls stay answerable."""

    def __init__(
        self,
        config: Config,
        actor_id: int,
        replay_address: str,
        weights_address: str,
        security: Security | None = None,
    ):
        from actors.actor import run_actor_process

        self.actor_id = actor_id
        self.started = time.time()
        self._stop = threading.Event()

        def body() -> None:
            try:
                run_actor_process(
                    config, actor_id, replay_address, weights_address, self._stop, security
                )
            except BaseException:  # a dead loop must not leave a live, idle actor behind
                log.exception("actor %d failed; exiting so Ray restarts it", actor_id)
                os._exit(1)

        self._thread = threading.Thread(target=body, name=f"actor-{actor_id}", daemon=True)
        self._thread.start()

    def ping(self) -> dict:
        return {
            "actor_id": self.actor_id,
            "pid": os.getpid(),
            "alive": self._thread.is_alive(),
            "node": ray.get_runtime_context().get_node_id(),
            "started": self.started,
        }

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(10.0)
        return not self._thread.is_alive()


class _RayEvaluator:
    """Body of the evaluator Ray actor (:mod:`actors.evaluator`), in a thread."""

    def __init__(self, config: Config, learner_address: str, security: Security | None = None):
        from actors.evaluator import run_evaluator

        self._stop = threading.Event()

        def body() -> None:
            try:
                run_evaluator(config, learner_address, self._stop, security)
            except BaseException:
                log.exception("evaluator failed; exiting so Ray restarts it")
                os._exit(1)

        self._thread = threading.Thread(target=body, name="evaluator", daemon=True)
        self._thread.start()

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(10.0)
        return not self._thread.is_alive()


class RayFleet:
    """N Ray actors with restarts; ``resize(n)`` grows or shrinks the running fleet."""

    def __init__(
        self,
        config: Config,
        replay_address: str,
        weights_address: str,
        security: Security | None = None,
    ):
        a = config.actors
        self.config = config
        self.security = security
        self.replay_address = replay_address
        self.weights_address = weights_address
        self._cls = ray.remote(
            num_cpus=a.cpus_per_actor,
            max_restarts=a.max_restarts,
            max_task_retries=0,
            scheduling_strategy="SPREAD" if a.placement == "spread" else "DEFAULT",
        )(_RayActor)
        self.handles: dict[int, ray.actor.ActorHandle] = {}
        self.evaluator: ray.actor.ActorHandle | None = None

    @property
    def size(self) -> int:
        return len(self.handles)

    @property
    def evaluator_cpus(self) -> float:
        """Ray CPUs the evaluator actor reserves (``eval.cpus``)."""
        return self.config.eval.cpus if self.evaluator is not None else 0.0

    def cluster_cpus(self) -> float:
        """CPUs of the live nodes: what ``autoscale`` divides among actors."""
        return float(ray.cluster_resources().get("CPU", 0.0))

    def states(self, timeout: float = 2.0) -> list[dict]:
        """Each actor's ping, or ``alive: False`` if it is dead, restarting or unplaced."""
        refs = {actor_id: h.ping.remote() for actor_id, h in self.handles.items()}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        ready_set = set(ready)
        out = []
        for actor_id, ref in refs.items():
            state = {"actor_id": actor_id, "alive": False, "node": "", "pid": 0}
            if ref in ready_set:
                with contextlib.suppress(Exception):  # died between ready and get
                    state.update(ray.get(ref, timeout=0))
            out.append(state)
        return out

    def supervise(self) -> None:
        """Ray restarts failed actors itself (``max_restarts``); nothing to do here."""

    def resize(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"actor count must be >= 0, got {n}")
        next_id = max(self.handles, default=-1) + 1
        while len(self.handles) < n:
            self.handles[next_id] = self._cls.remote(
                self.config, next_id, self.replay_address, self.weights_address, self.security
            )
            next_id += 1
        # Shrink all at once: every leaving actor is told to stop (it flushes what it
        # holds), then all are awaited together, so stopping a fleet of 48 takes one
        # actor's stop time, not 48 of them one after another.
        leaving = [self.handles.pop(actor_id) for actor_id in sorted(self.handles)[n:]]
        stops = [handle.stop.remote() for handle in leaving]
        if stops:
            with contextlib.suppress(Exception):  # dead actors need no stop
                ray.wait(stops, num_returns=len(stops), timeout=15)
        for handle in leaving:
            ray.kill(handle, no_restart=True)
        log.info("fleet resized to %d actors", n)

    def start(self, n: int | None = None, evaluator: bool = False) -> None:
        """Start ``n`` actors (default ``actors.num_actors``), and the evaluator actor."""
        if evaluator and self.evaluator is None:
            self.evaluator = ray.remote(
                num_cpus=self.config.eval.cpus, max_restarts=-1, max_task_retries=0
            )(_RayEvaluator).remote(self.config, self.weights_address, self.security)
        self.resize(self.config.actors.num_actors if n is None else n)

    def stop(self) -> None:
        evaluator, self.evaluator = self.evaluator, None
        if evaluator is not None:
            with contextlib.suppress(Exception):  # dead or restarting: nothing to stop
                ray.get(evaluator.stop.remote(), timeout=15)
            ray.kill(evaluator, no_restart=True)
        self.resize(0)


def init_ray(
    address: str = "local", num_cpus: int | None = None, connect_timeout: float = 60.0
) -> None:
    """Join the Ray cluster at ``address`` ('auto' = the one running here), or with
    'local' start a private single-node Ray on loopback that never joins another."""
    if address != "local":
        # A cluster: ``ray start`` nodes (set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 before
        # importing this module, as deploy.builder does) or ``ray://head:10001``.
        node_ip = os.environ.get("RAY_NODE_IP_ADDRESS")
        kwargs = {"_node_ip_address": node_ip} if node_ip and "://" not in address else {}
        # A head that has just started can refuse the first connection (Ray Client's
        # per-driver server failing to start, GCS not yet up): retry for a minute.
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                ray.init(address=address, configure_logging=False, **kwargs)
                return
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    ray.shutdown()
                if time.monotonic() > deadline:
                    raise
                log.warning("joining Ray at %s failed (%s); retrying", address, exc)
                time.sleep(3.0)
    logging.getLogger(RAY_TOKEN_AUTH_LOGGER).addFilter(_not_the_token_auth_notice)  # idempotent
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        log_to_driver=True,
    )


def shutdown_ray() -> None:
    ray.shutdown()
