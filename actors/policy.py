"""Epsilon-greedy action selection as a pure function of Q-values, epsilon and an RNG."""

from __future__ import annotations

import numpy as np


def epsilon_greedy(
    q_values: np.ndarray, epsilon: np.ndarray | float, rng: np.random.Generator
) -> np.ndarray:
    """Actions ``[E]`` int64 from Q-values ``[E, A]``: argmax, or uniform with prob. eps."""
    num, n_actions = q_values.shape
    greedy = q_values.argmax(axis=1)
    explore = rng.random(num) < epsilon
    random_actions = rng.integers(0, n_actions, size=num)
    return np.where(explore, random_actions, greedy).astype(np.int64)
