"""Learner checkpoints: both networks, optimizer, counters, eval history, config.

Written atomically (temp file, then rename), so a crash mid-write never leaves a
truncated checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dqn.files import atomic_write_with


def save(path: str | os.PathLike, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


def load(path: str | os.PathLike, device: torch.device) -> dict:
    return torch.load(Path(path), map_location=device, weights_only=False)


def write(path: Path, update, progress, metrics, config) -> None:
    """The learner's checkpoint: ``update`` (a learner.q_learning.DQNUpdate), its
    ``learner.records.Progress``, the newest episodes of its ``metrics``, the config."""
    save(
        path,
        {
            "online": update.online.state_dict(),
            "target": update.target.state_dict(),
            "optimizer": update.optimizer.state_dict(),
            "progress": progress.to_state(),
            "episodes": list(metrics.episodes)[-10_000:],
            "episodes_total": metrics.episodes_total,
            "config": config.to_dict(),
        },
    )


def restore(path: Path, update, metrics, device: torch.device):
    """Load what :func:`write` wrote into ``update`` and ``metrics``; returns the
    restored ``Progress``."""
    from learner.records import Progress

    if not Path(path).exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = load(path, device)
    update.online.load_state_dict(state["online"])
    update.target.load_state_dict(state["target"])
    update.optimizer.load_state_dict(state["optimizer"])
    progress = Progress.restore(state["progress"])
    update.updates = progress.updates
    metrics.episodes.extend(tuple(e) for e in state.get("episodes", []))
    metrics.episodes_total = state.get("episodes_total", 0)
    return progress
