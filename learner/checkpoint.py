"""Learner checkpoints: both networks, optimizer, counters, eval history, config.

Written atomically (temp file, then rename), so a crash mid-write never leaves a
truncated checkpoint behind. It holds tensors and plain containers only (dicts, lists,
tuples, numbers, strings; :func:`plain` checks on the way in) and is read with
``torch.load(weights_only=True)``, which refuses anything else: restoring a checkpoint
runs no code from it. Older checkpoints (record tuples, dicts) hold the same kinds.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqn.files import atomic_write_with


def plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as what ``weights_only`` loading accepts: tensors, dicts, lists,
    tuples, numbers, strings, None (dataclasses become dicts, numpy scalars numbers)."""
    if isinstance(value, np.generic):  # before float: np.float64 is one
        return value.item()
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where}: {type(value).__name__} cannot go in a weights-only checkpoint")


def save(path: str | os.PathLike, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = plain(state)
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


def load(path: str | os.PathLike, device: torch.device) -> dict:
    """The checkpoint at ``path``, read with ``weights_only=True`` (no code runs)."""
    try:
        return torch.load(Path(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = [line for line in str(exc).splitlines() if "Unsupported" in line]
        why = found[0].split("error: ")[-1].split(" was not")[0] if found else ""
        raise ValueError(
            f"{path}: holds objects other than tensors and plain containers, which are "
            f"not unpickled ({why or type(exc).__name__})"
        ) from None


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
