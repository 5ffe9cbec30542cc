"""Replay server checkpoints: storage, counters, dedupe and rate-limiter state in one file.

The file is a NumPy ``.npz``: one array per storage column (its first ``size`` rows;
the rest of the ring is empty) and a ``meta`` array holding a JSON string with
everything small (cursor, size, counters, per-actor dedupe state, kept episodes,
rate-limiter counters, and the capacity / obs shape / dtype / action count it was
written for). A prioritized server adds its slots' weights and write keys
(``priority_*`` arrays); a prioritized server restoring a file without them gives
every stored transition weight 1. Nothing is pickled; it is read with ``allow_pickle=False``.

Guarantees:

* :func:`save` is atomic: the file at ``path`` is always either the previous
  checkpoint or the new one, complete and fsynced, never a torn mix (temp file in
  the same directory, flush + fsync, ``os.replace``, fsync of the directory).
* :func:`load` returns exactly what was saved, or raises :class:`CheckpointError`.
* :func:`check_compatible` refuses a checkpoint written for another capacity, obs
  shape, obs dtype or action count, naming every difference.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dqn.config import ConfigError
from dqn.files import atomic_open
from dqn.interfaces import TRANSITION_COLUMNS as COLUMNS
from dqn.v1 import replay_pb2 as pb
from replay_server.rate_limiter import RateLimiter

log = logging.getLogger("replay_server.checkpoint")
# 2: per-(actor, incarnation) dedup state; 3: episodes carry their env_steps stamp.
# Formats 1 and 2 still load (their episodes get env_steps 0, as from an old server).
FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
_EPISODE_FIELDS = ("actor_id", "episode_return", "length", "truncated", "env_steps")
PRIORITY_ARRAYS = (
    "priority_weight",
    "priority_key",
    "priority_next_key",
    "priority_max_weight",
)


class CheckpointError(ConfigError):
    """An unreadable or incompatible replay checkpoint (message starts with the field)."""


@dataclass
class ReplayState:
    """A consistent copy of a replay server's state; plain data, no locks, no views."""

    capacity: int
    obs_shape: tuple[int, ...]
    obs_dtype: str  # numpy dtype string, e.g. "<f4"
    n_actions: int
    cursor: int
    size: int
    columns: dict[str, np.ndarray]  # the first ``size`` rows of each storage column
    counters: dict[str, int]  # servicer counters, by attribute name
    # ActorBook.state(): per-(actor, incarnation) dedup and bookkeeping (a file of
    # format 1 holds {actor_id: fields} with one life per actor; ActorBook reads both).
    actors: dict
    episodes: list[tuple[int, pb.Episode]] = field(default_factory=list)
    limiter: dict = field(default_factory=dict)
    # Prioritized replay (see Priorities.state): weights and keys of the first ``size``
    # slots; None when the server sampled uniformly (a prioritized server restoring
    # such a file gives every stored transition weight 1).
    priorities: dict[str, np.ndarray] | None = None

    def full_columns(self) -> dict[str, np.ndarray]:
        """The columns padded with zero rows to ``capacity`` (what RingStorage holds)."""
        out = {}
        for name, rows in self.columns.items():
            col = np.zeros((self.capacity, *rows.shape[1:]), rows.dtype)
            col[: len(rows)] = rows
            out[name] = col
        return out


# -- rate limiter (its counters have no accessor of their own) ------------------------
def limiter_state(limiter: RateLimiter) -> dict:
    return {
        "inserted": limiter.inserted,
        "sampled": limiter.sampled,
        "started": limiter._started,
    }


def load_limiter_state(limiter: RateLimiter, state: dict) -> None:
    limiter.inserted = int(state["inserted"])
    limiter.sampled = int(state["sampled"])
    limiter._started = bool(state["started"])


# -- file format ----------------------------------------------------------------------
def _meta(state: ReplayState) -> dict:
    return {
        "format": FORMAT,
        "capacity": state.capacity,
        "obs_shape": list(state.obs_shape),
        "obs_dtype": state.obs_dtype,
        "n_actions": state.n_actions,
        "cursor": state.cursor,
        "size": state.size,
        "counters": state.counters,
        "actors": state.actors,
        "episodes": [
            [cursor, *(getattr(ep, f) for f in _EPISODE_FIELDS)] for cursor, ep in state.episodes
        ],
        "limiter": state.limiter,
    }


def _from_meta(meta: dict, columns: dict[str, np.ndarray]) -> ReplayState:
    # formats 1 and 2 wrote episodes without their env_steps stamp (it reads as 0)
    names = _EPISODE_FIELDS if meta["format"] >= 3 else _EPISODE_FIELDS[:-1]
    episodes = [
        (int(cursor), pb.Episode(**dict(zip(names, values, strict=True))))
        for cursor, *values in meta["episodes"]
    ]
    return ReplayState(
        capacity=int(meta["capacity"]),
        obs_shape=tuple(meta["obs_shape"]),
        obs_dtype=meta["obs_dtype"],
        n_actions=int(meta["n_actions"]),
        cursor=int(meta["cursor"]),
        size=int(meta["size"]),
        columns=columns,
        counters=meta["counters"],
        actors=meta["actors"],
        episodes=episodes,
        limiter=meta["limiter"],
    )


def save(path: str | os.PathLike, state: ReplayState) -> None:
    """Write ``state`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        np.savez(
            f,
            meta=np.array(json.dumps(_meta(state))),
            **state.columns,
            **(state.priorities or {}),
        )


def load(path: str | os.PathLike) -> ReplayState:
    """Read a checkpoint written by :func:`save`; CheckpointError if it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            columns = {name: data[name] for name in COLUMNS}
            priorities = (
                {name: data[name] for name in PRIORITY_ARRAYS}
                if PRIORITY_ARRAYS[0] in data.files
                else None
            )
        if meta.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {meta.get('format')!r}, this server reads {FORMAT}")
        state = _from_meta(meta, columns)
        state.priorities = priorities
        return state
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"replay.checkpoint_path: cannot read {path}: {exc}") from None


def check_compatible(
    state: ReplayState, capacity: int, obs_shape, obs_dtype, n_actions: int, path=""
) -> None:
    """Raise CheckpointError naming each of capacity/obs_shape/obs_dtype/n_actions that differ."""
    expected = {
        "capacity": capacity,
        "obs_shape": tuple(int(d) for d in obs_shape),
        "obs_dtype": np.dtype(obs_dtype).str,
        "n_actions": int(n_actions),
    }
    found = {name: getattr(state, name) for name in expected}
    diffs = [f"{k} {found[k]!r} != {v!r}" for k, v in expected.items() if found[k] != v]
    if diffs:
        raise CheckpointError(
            f"replay.checkpoint_path: {path} was written for another configuration "
            f"(checkpoint != running server): {'; '.join(diffs)}"
        )
    bad = [n for n, rows in state.columns.items() if len(rows) != state.size]
    if state.priorities is not None:
        bad += [
            n
            for n in PRIORITY_ARRAYS[:2]
            if len(state.priorities[n]) != state.size or not np.isfinite(state.priorities[n]).all()
        ]
    if bad or not 0 <= state.cursor < max(capacity, 1) or state.size > capacity:
        raise CheckpointError(
            f"replay.checkpoint_path: {path} is inconsistent: size {state.size}, cursor "
            f"{state.cursor}, capacity {capacity}, columns with wrong row counts {bad}"
        )


# -- periodic writer ------------------------------------------------------------------
class Checkpointer:
    """Writes ``snapshot()`` to ``path`` every ``every_seconds`` on a daemon thread.

    ``snapshot`` must return a consistent copy (it is taken by the caller's lock;
    the disk write here happens outside it). Writes are serialised, so a periodic
    write never races the final one; a failed periodic write is logged and retried
    at the next period. ``close()`` stops the thread and writes once more.
    """

    def __init__(
        self, snapshot: Callable[[], ReplayState], path: str | os.PathLike, every_seconds: float
    ):
        self.snapshot = snapshot
        self.path = Path(path)
        self.every_seconds = every_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-checkpoint", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def write(self) -> ReplayState:
        """Snapshot and save now; returns what was written."""
        with self._lock:
            state = self.snapshot()
            save(self.path, state)
        return state

    def close(self) -> None:
        """Stop the periodic thread, then write the final checkpoint (once)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self._closed:
            self._closed = True
            state = self.write()
            log.info("final replay checkpoint: %d transitions -> %s", state.size, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            try:
                self.write()
            except Exception:  # noqa: BLE001 - a full disk must not take the server down
                log.exception("replay checkpoint to %s failed; retrying next period", self.path)
