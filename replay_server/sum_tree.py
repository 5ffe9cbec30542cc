"""Vectorised sum tree (and min tree) over ``capacity`` leaves, for prioritized replay.

The tree is one float64 array of ``2 * P`` nodes (``P`` = ``capacity`` rounded up to
a power of two): node ``i`` has children ``2i`` and ``2i + 1``, leaf ``j`` is node
``P + j``, node 1 is the root. Every operation works on whole index arrays, one
numpy call per tree level (``log2 P`` levels), never a Python loop over items.

Parents are recomputed from their children (not updated by deltas), so rounding
errors cannot accumulate however many updates are made.
"""

from __future__ import annotations

import numpy as np


class SegmentTree:
    """Leaves ``[capacity]`` and their reduction by ``op`` (``np.add`` or ``np.minimum``)."""

    def __init__(self, capacity: int, op, neutral: float):
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.leaf0 = 1 << max(self.capacity - 1, 0).bit_length()  # P, a power of two
        self.op = op
        self.neutral = float(neutral)
        self.depth = self.leaf0.bit_length() - 1  # levels above the leaves
        self.nodes = np.full(2 * self.leaf0, self.neutral, np.float64)

    @property
    def root(self) -> float:
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        """A view of the ``capacity`` leaf values."""
        return self.nodes[self.leaf0 : self.leaf0 + self.capacity]

    def update(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``index`` ``[M]`` to ``values`` ``[M]`` (the last one wins on repeats)."""
        index = np.asarray(index, np.int64)
        if index.size == 0:
            return
        nodes = index + self.leaf0
        self.nodes[nodes] = values
        nodes = np.sort(nodes)  # halving keeps it sorted: repeats are then neighbours
        for _ in range(self.depth):  # all leaves sit at the same depth
            nodes >>= 1
            nodes = nodes[np.concatenate(([True], nodes[1:] != nodes[:-1]))]
            self.nodes[nodes] = self.op(self.nodes[2 * nodes], self.nodes[2 * nodes + 1])

    def load(self, values: np.ndarray) -> None:
        """Replace all leaves (``[n]``, ``n <= capacity``; the rest get ``neutral``) and rebuild."""
        self.nodes[:] = self.neutral
        self.nodes[self.leaf0 : self.leaf0 + len(values)] = values
        level = self.leaf0
        while level > 1:
            parents = np.arange(level // 2, level)
            self.nodes[parents] = self.op(self.nodes[2 * parents], self.nodes[2 * parents + 1])
            level //= 2


class SumTree(SegmentTree):
    def __init__(self, capacity: int):
        super().__init__(capacity, np.add, 0.0)

    @property
    def total(self) -> float:
        return self.root

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf indices ``[M]`` whose prefix-sum interval holds each of ``mass`` ``[M]``.

        Leaf ``j`` owns ``[sum(leaves[:j]), sum(leaves[:j+1]))``; masses must lie in
        ``[0, total)``. A subtree with zero mass is never entered, so a leaf with zero
        priority (an empty slot) is never returned, even when rounding puts a mass at
        or past the end of the last positive leaf.
        """
        mass = np.array(mass, np.float64)
        node = np.ones(mass.shape, np.int64)
        for _ in range(self.depth):
            left = self.nodes[2 * node]
            right = self.nodes[2 * node + 1]
            go_right = (mass >= left) & (right > 0)
            mass = np.where(go_right, mass - left, mass)
            node = 2 * node + go_right
        return node - self.leaf0

    def sample_stratified(self, batch_size: int, num_batches: int, rng) -> np.ndarray:
        """``num_batches * batch_size`` leaf indices, batch-major.

        Each batch splits ``[0, total)`` into ``batch_size`` equal segments and draws one
        uniform mass in each, so leaf ``j`` is drawn with probability
        ``leaves[j] / total`` per draw, with less variance than independent draws.
        """
        seg = self.total / batch_size
        u = rng.random((num_batches, batch_size))
        mass = (np.arange(batch_size)[None, :] + u) * seg
        return self.find(np.minimum(mass, np.nextafter(self.total, 0)).reshape(-1))


class MinTree(SegmentTree):
    def __init__(self, capacity: int):
        super().__init__(capacity, np.minimum, np.inf)

    @property
    def min(self) -> float:
        return self.root
