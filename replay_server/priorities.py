"""Prioritized replay state of the server: priorities, sampling, stale-update guard.

Where the exponent lives: clients (actors for new transitions, the learner after an
update) send raw priorities ``|TD error|``; this class alone turns them into
sampling weights ``(|TD| + eps) ** alpha``, so alpha and eps have one home
(``replay.priority_alpha``, ``replay.priority_eps``).

A slot's ``key`` is a number drawn from a counter each time the slot is written. A
sample hands out ``(index, key)`` pairs and an update names them back: an update
whose key no longer matches (the slot was overwritten meanwhile by a newer
transition) is ignored, so an old TD error never lands on a new transition.

Not thread-safe: the servicer serialises access under its lock.
"""

from __future__ import annotations

import numpy as np

from replay_server.sum_tree import MinTree, SumTree


class Priorities:
    def __init__(self, capacity: int, alpha: float, eps: float):
        self.capacity = int(capacity)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.sum = SumTree(capacity)
        self.min = MinTree(capacity)
        self.keys = np.zeros(capacity, np.int64)  # 0 = never written
        self.next_key = 1
        self.max_weight = 1.0  # largest sampling weight given so far (for new items)

    def weight(self, raw: np.ndarray) -> np.ndarray:
        """Sampling weights ``(raw + eps) ** alpha`` of raw priorities ``[M]`` (float64)."""
        return (np.asarray(raw, np.float64) + self.eps) ** self.alpha

    def on_insert(self, index: np.ndarray, raw: np.ndarray | None) -> None:
        """Slots ``index`` ``[M]`` were just written; ``raw`` their priorities, or None
        for the largest weight seen so far (new data gets sampled at least once)."""
        if raw is None:
            w = np.full(len(index), self.max_weight)
        else:
            w = self.weight(raw)
            self.max_weight = max(self.max_weight, float(w.max(initial=0.0)))
        self.sum.update(index, w)
        self.min.update(index, w)
        self.keys[index] = np.arange(self.next_key, self.next_key + len(index))
        self.next_key += len(index)

    def sample(self, batch_size: int, num_batches: int, rng):
        """Stratified draws: ``(index [K*B], key [K*B], probability [K*B], min_probability)``.

        ``probability`` is each drawn slot's ``weight / total``; ``min_probability`` the
        smallest over the stored slots, for importance weights ``(min_p / p) ** beta``.
        """
        index = self.sum.sample_stratified(batch_size, num_batches, rng)
        total = self.sum.total
        prob = self.sum.leaves[index] / total
        return index, self.keys[index].copy(), prob, self.min.min / total

    def update(self, index: np.ndarray, key: np.ndarray, raw: np.ndarray) -> int:
        """Apply priorities ``raw`` to slots ``index`` whose key still matches ``key``;
        returns how many were stale (ignored). Inputs must have been validated."""
        fresh = self.keys[index] == key
        index, raw = index[fresh], raw[fresh]
        if len(index):
            w = self.weight(raw)
            self.max_weight = max(self.max_weight, float(w.max()))
            self.sum.update(index, w)
            self.min.update(index, w)
        return int((~fresh).sum())

    # -- checkpoints ------------------------------------------------------------------
    def state(self, size: int) -> dict[str, np.ndarray]:
        return {
            "priority_weight": self.sum.leaves[:size].copy(),
            "priority_key": self.keys[:size].copy(),
            "priority_next_key": np.array(self.next_key, np.int64),
            "priority_max_weight": np.array(self.max_weight, np.float64),
        }

    def load_state(self, state: dict[str, np.ndarray] | None, size: int) -> None:
        """Restore; without saved priorities every stored slot gets weight 1."""
        if state is None:
            weights = np.ones(size)
            keys = np.arange(1, size + 1)
            next_key, max_weight = size + 1, 1.0
        else:
            weights, keys = state["priority_weight"], state["priority_key"]
            next_key = int(state["priority_next_key"])
            max_weight = float(state["priority_max_weight"])
        self.sum.load(weights)
        self.min.load(weights)
        self.keys[:] = 0
        self.keys[:size] = keys
        self.next_key, self.max_weight = next_key, max_weight
