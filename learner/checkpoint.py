"""Learner checkpoints: both networks, optimizer, counters, eval history, config.

Written atomically (temp file, then rename), so a crash mid-write never leaves a
truncated checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save(path: str | os.PathLike, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike, device: torch.device) -> dict:
    return torch.load(Path(path), map_location=device, weights_only=False)
