"""The actor fleet as plain processes: for machines without Ray (the lent GPU box) and
for ``--actors.runner process``. Same surface as :class:`actors.fleet.RayFleet`."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os

from dqn.config import Config
from dqn.security import Security

log = logging.getLogger("actors.process_fleet")


class ProcessFleet:
    """N spawned actor processes; ``resize`` grows or shrinks, ``supervise`` restarts."""

    def __init__(
        self,
        config: Config,
        replay_address: str,
        weights_address: str,
        security: Security | None = None,
    ):
        self.config = config
        self.replay_address = replay_address
        self.weights_address = weights_address
        self.security = security
        self._ctx = mp.get_context("spawn")
        self.procs: dict[int, mp.process.BaseProcess] = {}
        self.evaluator: mp.process.BaseProcess | None = None
        self._with_evaluator = False
        self.restarts = 0

    @property
    def size(self) -> int:
        return len(self.procs)

    def cluster_cpus(self) -> float:
        return float(os.cpu_count() or 1)

    def _spawn(self, actor_id: int) -> None:
        from actors.actor import run_actor_process

        p = self._ctx.Process(
            target=run_actor_process,
            args=(
                self.config,
                actor_id,
                self.replay_address,
                self.weights_address,
                None,
                self.security,
            ),
            name=f"actor-{actor_id}",
            daemon=False,
        )
        p.start()
        self.procs[actor_id] = p

    def resize(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"actor count must be >= 0, got {n}")
        next_id = max(self.procs, default=-1) + 1
        while len(self.procs) < n:
            self._spawn(next_id)
            next_id += 1
        doomed = []
        while len(self.procs) > n:
            doomed.append(self.procs.pop(max(self.procs)))
        for p in doomed:
            p.terminate()
        for p in doomed:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        log.info("fleet resized to %d actor processes", n)

    def _spawn_evaluator(self) -> None:
        from actors.evaluator import run_evaluator

        self.evaluator = self._ctx.Process(
            target=run_evaluator,
            args=(self.config, self.weights_address, None, self.security),
            name="evaluator",
            daemon=False,
        )
        self.evaluator.start()

    def start(self, n: int | None = None, evaluator: bool = False) -> None:
        """Start ``n`` actors (default ``actors.num_actors``), and the evaluator."""
        if evaluator and self.evaluator is None:
            self._with_evaluator = True
            self._spawn_evaluator()
        self.resize(self.config.actors.num_actors if n is None else n)

    def states(self, timeout: float = 0.0) -> list[dict]:
        return [
            {"actor_id": i, "alive": p.is_alive(), "node": "local", "pid": p.pid or 0}
            for i, p in sorted(self.procs.items())
        ]

    def supervise(self) -> None:
        """Restart dead actor processes under the same id (a new incarnation)."""
        limit = self.config.actors.max_restarts
        for actor_id, p in list(self.procs.items()):
            if p.is_alive() or (0 <= limit <= self.restarts):
                continue
            log.warning("actor %d (pid %s) exited with %s; restarting", actor_id, p.pid, p.exitcode)
            p.join(0)
            self.restarts += 1
            self._spawn(actor_id)
        if self._with_evaluator and self.evaluator is not None and not self.evaluator.is_alive():
            log.warning("evaluator exited with %s; restarting it", self.evaluator.exitcode)
            self.evaluator.join(0)
            self._spawn_evaluator()

    def stop(self) -> None:
        evaluator, self.evaluator = self.evaluator, None
        self._with_evaluator = False
        if evaluator is not None:
            evaluator.terminate()
            evaluator.join(10)
            if evaluator.is_alive():
                evaluator.kill()
                evaluator.join(5)
        self.resize(0)
