"""Exploration schedules (pure functions)."""

from __future__ import annotations

import numpy as np


def linear(step: float, start: float, end: float, decay_steps: int) -> float:
    """Linear decay from ``start`` to ``end`` over ``decay_steps``, then constant."""
    frac = min(max(step, 0) / decay_steps, 1.0)
    return start + frac * (end - start)


def apex(num: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Ape-X per-actor constants ``eps_i = base ** (1 + alpha * i / (num - 1))``, ``[num]``."""
    if num == 1:
        return np.array([base], dtype=np.float64)
    i = np.arange(num, dtype=np.float64)
    return base ** (1.0 + alpha * i / (num - 1))
