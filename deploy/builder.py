"""The composition root: one place that builds every part of a run from a ``Config``.

The parts (``replay_server``, ``learner``, ``actors``) know nothing of each other; the
shared core (``dqn``) knows none of them. What a run is made of — which replay
server, which learner, which fleet (Ray actors or plain processes) and the evaluator —
is decided here and nowhere else, and every way of running uses this one builder:

- the ``dqn`` subcommands (``deploy.cli``), which are also the compose services and
  the children ``dqn train`` starts;
- ``dqn train`` itself (``deploy.local``), which builds the fleet in its own process;
- the Python API (``deploy.api``, exported as ``dqn.train``).
"""

from __future__ import annotations

import os

from dqn.config import Config
from dqn.security import Security
from dqn.security import load as load_security


class Builder:
    """Builds the parts of a run, and runs each as a process, from one ``Config``."""

    def __init__(self, config: Config, security: Security | None = None):
        self.config = config
        self.security = security if security is not None else load_security(config.security)

    # -- the parts -----------------------------------------------------------------
    def replay_server(self):
        from replay_server.server import ReplayServer

        return ReplayServer(self.config, security=self.security)

    def learner(
        self,
        replay_address: str,
        *,
        resume: bool | str = False,
        start_time: float | None = None,
        num_actors: int | None = None,
    ):
        from learner.learner import Learner

        return Learner(
            self.config,
            replay_address,
            resume=resume,
            start_time=start_time,
            num_actors=num_actors,
            security=self.security,
        )

    def start_ray(self, ray_address: str = "local") -> bool:
        """Bring up what the fleet runs on: for a Ray fleet, 'local' starts a private
        Ray on this machine and anything else joins a cluster; a process fleet needs
        nothing. Returns whether Ray was started (the caller shuts it down)."""
        if self.config.actors.runner == "process":
            return False
        if ray_address != "local":
            # Joining a multi-node cluster: multi-node mode on (actors.fleet defaults to
            # the loopback-only local mode) and the nodes' auth rule, set before Ray is
            # imported (it reads them at import time).
            from deploy.ray_node import ray_env

            os.environ.update(ray_env(dict(os.environ)))
        from actors.fleet import init_ray

        if ray_address == "local":
            init_ray("local", num_cpus=max(os.cpu_count() or 1, 1))
        else:
            init_ray(ray_address)
        return True

    def fleet(self, replay_address: str, weights_address: str):
        """The actor fleet the config asks for (Ray actors, after :meth:`start_ray`, or
        plain processes); ``fleet.start(evaluator=True)`` starts the actors and the
        evaluator."""
        if self.config.actors.runner == "process":
            from actors.process_fleet import ProcessFleet

            return ProcessFleet(self.config, replay_address, weights_address, self.security)
        from actors.fleet import RayFleet

        return RayFleet(self.config, replay_address, weights_address, self.security)

    # -- each part as a process (the `dqn` subcommands, the compose services) ---------
    def serve_replay(self, ready_file: str | None = None) -> int:
        from replay_server.server import serve

        return serve(self.replay_server(), self.config, ready_file)

    def serve_learner(
        self,
        replay_address: str,
        *,
        resume: bool | str = False,
        ready_file: str | None = None,
        start_time: float | None = None,
    ) -> int:
        from learner.main import serve

        learner = self.learner(replay_address, resume=resume, start_time=start_time)
        return serve(learner, self.config, ready_file)

    def run_fleet(
        self,
        replay_address: str,
        weights_address: str,
        ray_address: str = "local",
        ready_file: str | None = None,
    ) -> int:
        from deploy.fleet_driver import run_fleet

        self.start_ray(ray_address)
        fleet = self.fleet(replay_address, weights_address)
        return run_fleet(fleet, self.config, self.security, ready_file=ready_file)

    def run_evaluator(self, weights_address: str) -> int:
        from actors.evaluator import run_evaluator

        run_evaluator(self.config, weights_address, None, self.security)
        return 0
