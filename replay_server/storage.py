"""Structure-of-arrays ring buffer, preallocated so memory never grows past capacity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class RingStorage:
    """Fixed-capacity transition storage; the oldest transitions are overwritten.

    Columns: obs ``[C, *obs_shape]``, action ``[C]`` int64, reward ``[C]`` float32,
    next_obs ``[C, *obs_shape]``, terminated ``[C]`` bool, discount ``[C]`` float32.
    Not thread-safe: the service serialises access.
    """

    def __init__(self, capacity: int, obs_shape: Sequence[int], obs_dtype=np.float32):
        self.capacity = int(capacity)
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        c = self.capacity
        self.columns: dict[str, np.ndarray] = {
            "obs": np.zeros((c, *self.obs_shape), self.obs_dtype),
            "action": np.zeros(c, np.int64),
            "reward": np.zeros(c, np.float32),
            "next_obs": np.zeros((c, *self.obs_shape), self.obs_dtype),
            "terminated": np.zeros(c, np.bool_),
            "discount": np.zeros(c, np.float32),
        }
        self.cursor = 0  # next write position
        self.size = 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.columns.values())

    def add(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Append ``n`` transitions (columns of equal leading size), wrapping around.

        Returns the slots written ``[n]`` (fewer when ``n > capacity``: only the newest
        ``capacity`` transitions are kept, and their slots are returned).
        """
        n = len(batch["action"])
        if n > self.capacity:  # only the newest `capacity` survive
            batch = {k: v[-self.capacity :] for k, v in batch.items()}
            n = self.capacity
        first = min(n, self.capacity - self.cursor)
        slots = np.arange(self.cursor, self.cursor + n)
        if first < n:
            slots[first:] -= self.capacity
        for name, col in self.columns.items():
            src = batch[name]
            col[self.cursor : self.cursor + first] = src[:first]
            if first < n:
                col[: n - first] = src[first:]
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return slots

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        # np.take, not col[idx]: fancy indexing rows of a 2-D column (obs [C, 4]) is
        # ~15x slower (bench/replay.py, Sample at 64 x 128 per call).
        return {name: np.take(col, idx, axis=0) for name, col in self.columns.items()}

    def state(self) -> dict[str, np.ndarray | int]:
        """What a checkpoint needs to restore this storage."""
        return {"cursor": self.cursor, "size": self.size, **self.columns}

    def load_state(self, state: dict) -> None:
        for name, col in self.columns.items():
            if state[name].shape != col.shape:
                raise ValueError(
                    f"checkpoint column {name}: shape {state[name].shape} != {col.shape}"
                )
            col[...] = state[name]
        self.cursor = int(state["cursor"])
        self.size = int(state["size"])
