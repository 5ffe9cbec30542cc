"""``dqn actors``: run a fleet against given replay and weight addresses."""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading

from dqn.config import Config
from dqn.security import Security

log = logging.getLogger("deploy.fleet_driver")


def run_fleet(
    config: Config,
    replay_address: str,
    weights_address: str,
    ray_address: str = "local",
    security: Security | None = None,
) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    n = config.actors.num_actors
    if config.actors.runner == "process":
        from actors.actor import run_actor_process

        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(
                target=run_actor_process,
                args=(config, i, replay_address, weights_address, None, security),
                daemon=False,
            )
            for i in range(n)
        ]
        for p in procs:
            p.start()
        log.info("%d actor processes started", n)
        stop.wait()
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        return 0

    from actors.fleet import RayFleet, init_ray, shutdown_ray

    init_ray(ray_address)
    fleet = RayFleet(config, replay_address, weights_address, security)
    fleet.start(n)
    log.info("%d Ray actors started", n)
    try:
        stop.wait()
    finally:
        fleet.stop()
        shutdown_ray()
    return 0
