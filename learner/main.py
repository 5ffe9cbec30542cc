"""Learner process: ``dqn learner`` (and the learner side of ``dqn train``).

The loop is :class:`learner.learner.Learner`; this module is the process around it:
signals, the ready file, the closing line. It imports no gymnasium (the learner builds
no env; ``tests/integration/test_env_ids.py`` checks it).
"""

from __future__ import annotations

import logging

from dqn import rpc
from dqn.config import Config
from dqn.signals import stop_on_signals
from learner.learner import Learner, pick_device
from learner.policy_export import export_policy

__all__ = ["Learner", "export_policy", "pick_device", "serve"]
log = logging.getLogger("learner")


def serve(learner: Learner, config: Config, ready_file: str | None = None) -> int:
    """Process entry (``dqn learner``): run ``learner`` (built by ``deploy.builder``)
    until done or SIGTERM/SIGINT, always writing the outputs."""
    stop_on_signals(learner.stop_event)
    address = learner.start()
    rpc.write_ready_file(
        ready_file,
        address=address,
        port=learner.weights.port,
        device=str(learner.device),
        metrics_port=learner.telemetry.port,
    )
    log.info(
        "learner on %s, weights at %s, replay at %s, metrics %s",
        learner.device,
        address,
        learner.replay_address,
        learner.telemetry.url or "off",
    )
    try:
        summary = learner.run()
    finally:
        learner.close()
    print(
        f"[{summary['wall_seconds']:6.1f}s] done: {summary['stop_reason']}; eval "
        f"{summary['eval_mean']:.1f} ± {summary['eval_std']:.1f}; {summary['env_steps']:,} env "
        f"steps, {summary['updates']:,} updates; run dir {config.run.dir}",
        flush=True,
    )
    return 0
