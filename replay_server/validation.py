"""Checks every TransitionBatch before any of it touches storage.

A failed check raises :class:`BatchError` carrying the gRPC status to answer with
and a message that names the offending field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc
import numpy as np

from dqn import codec
from dqn.v1 import replay_pb2 as pb
from replay_server.bookkeeping import MAX_COUNTER

# Rows one UpdatePriorities may set (a learner sends batches_per_call x batch_size,
# 2,048 by default): a call's sum-tree work stalls the server's loop, so it is bounded.
MAX_PRIORITY_ROWS = 1 << 16


class BatchError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def naming(self, field: str) -> BatchError:
        """This error about ``batch.*`` said of the batch named ``field`` instead (one of
        a Push message's ``batches[i]``)."""
        if field == "batch" or not self.message.startswith("batch."):
            return self
        return BatchError(self.code, field + self.message[len("batch") :])


def _invalid(message: str) -> BatchError:
    return BatchError(grpc.StatusCode.INVALID_ARGUMENT, message)


class BatchSpec:
    """What a valid batch looks like for one environment."""

    def __init__(
        self, obs_shape: Sequence[int], n_actions: int, max_transitions: int, obs_dtype=np.float32
    ):
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self.n_actions = int(n_actions)
        self.max_transitions = int(max_transitions)
        self.columns = {
            "obs": (self.obs_dtype, self.obs_shape),
            "action": (np.dtype(np.int64), ()),
            "reward": (np.dtype(np.float32), ()),
            "next_obs": (self.obs_dtype, self.obs_shape),
            "terminated": (np.dtype(np.bool_), ()),
            "discount": (np.dtype(np.float32), ()),
        }
        obs_check = "finite" if self.obs_dtype.kind == "f" else ""
        checks = {"obs": obs_check, "next_obs": obs_check, "reward": "finite"}
        checks.update(action="action", terminated="bool", discount="unit")
        # What validate_batch walks for every batch: (name, field, dtype, inner, check).
        self.fields = tuple(
            (name, f"batch.{name}", dtype, inner, checks[name])
            for name, (dtype, inner) in self.columns.items()
        )


def validate_batch(batch: pb.TransitionBatch, spec: BatchSpec) -> dict[str, np.ndarray]:
    """Decode and check a batch; return its columns as numpy arrays."""
    if batch.sequence < 1:
        raise _invalid("batch.sequence: must be >= 1, got 0")
    if not batch.HasField("action"):
        raise _invalid("batch.action: missing")
    n_claimed = batch.action.shape[:1]
    if n_claimed and n_claimed[0] > spec.max_transitions:
        raise BatchError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"batch.action: {n_claimed[0]} transitions, at most {spec.max_transitions} per batch",
        )
    out: dict[str, np.ndarray] = {}
    n = None
    n_actions = spec.n_actions
    for name, field, dtype, inner, check in spec.fields:
        if not batch.HasField(name):
            raise _invalid(f"{field}: missing")
        tensor = getattr(batch, name)
        try:
            arr = codec.decode(tensor, field)
        except codec.CodecError as exc:
            raise _invalid(str(exc)) from None
        if arr.dtype != dtype:
            raise _invalid(
                f"{field}: dtype {codec.dtype_name(tensor.dtype)}, expected "
                f"{codec.proto_dtype_name(dtype)}"
            )
        if arr.shape[1:] != inner or arr.ndim != 1 + len(inner):
            expected = ", ".join(["N", *map(str, inner)])
            raise _invalid(f"{field}: shape {list(arr.shape)}, expected [{expected}]")
        if n is None:
            n = arr.shape[0]
            if n < 1:
                raise _invalid(f"{field}: empty batch (N = 0)")
            if n > spec.max_transitions:
                raise BatchError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{field}: {n} transitions, at most {spec.max_transitions} per batch",
                )
        elif arr.shape[0] != n:
            raise _invalid(f"{field}: {arr.shape[0]} rows, but batch.obs has {n}")
        # Each check is one reduction (or one bytes call): this runs for every batch.
        if check == "finite" and not _all_finite(arr):
            raise _invalid(f"{field}: contains NaN or infinite values")
        if check == "unit" and not _in_unit_interval(arr):
            if not _all_finite(arr):
                raise _invalid(f"{field}: contains NaN or infinite values")
            raise _invalid(f"{field}: values must lie in [0, 1]")
        if check == "bool" and tensor.data.translate(None, b"\x00\x01"):  # not just 0s, 1s
            raise _invalid(f"{field}: bool bytes must be 0 or 1")
        # Viewed as unsigned, a negative action is huge: one reduction checks both ends.
        if check == "action" and np.maximum.reduce(arr.view(np.uint64), axis=None) >= n_actions:
            bad = arr[(arr < 0) | (arr >= n_actions)][0]
            raise _invalid(f"{field}: value {int(bad)} out of range [0, {n_actions})")
        out[name] = arr
    if batch.HasField("priority"):
        out["priority"] = _priorities(batch.priority, "batch.priority", n)
    _check_bookkeeping(batch)
    return out


def _all_finite(arr: np.ndarray) -> bool:
    """True when no element is NaN or infinite (one ufunc and one reduction, called
    directly: ``ndarray.all()`` adds a Python-level wrapper on every batch)."""
    return bool(np.logical_and.reduce(np.isfinite(arr), axis=None))


def _in_unit_interval(arr: np.ndarray) -> bool:
    """Every element in [0, 1]; False for NaN too (it fails both comparisons)."""
    return bool(np.minimum.reduce(arr, axis=None) >= 0 and np.maximum.reduce(arr, axis=None) <= 1)


def _column(tensor: pb.Tensor, field: str, dtype) -> np.ndarray:
    try:
        arr = codec.decode(tensor, field)
    except codec.CodecError as exc:
        raise _invalid(str(exc)) from None
    if arr.dtype != np.dtype(dtype):
        raise _invalid(
            f"{field}: dtype {codec.dtype_name(tensor.dtype)}, expected "
            f"{codec.proto_dtype_name(dtype)}"
        )
    if arr.ndim != 1:
        raise _invalid(f"{field}: shape {list(arr.shape)}, expected [N]")
    return arr


def _priorities(tensor: pb.Tensor, field: str, n: int) -> np.ndarray:
    """A raw priority column ``[n]`` float32: finite and >= 0."""
    arr = _column(tensor, field, np.float32)
    if len(arr) != n:
        raise _invalid(f"{field}: {len(arr)} rows, expected {n}")
    if not np.isfinite(arr).all():
        raise _invalid(f"{field}: contains NaN or infinite values")
    if (arr < 0).any():
        raise _invalid(f"{field}: priorities must be >= 0, got {float(arr.min())}")
    return arr


def validate_priority_update(
    request: pb.UpdatePrioritiesRequest, capacity: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode and check an UpdatePrioritiesRequest: ``(index, key, priority)``, ``[M]`` each.

    Every index must name a written slot (``< size``): a priority on an empty slot
    would let Sample return a row that was never inserted."""
    for name in ("index", "key", "priority"):
        if not request.HasField(name):
            raise _invalid(f"{name}: missing")
    rows = request.index.shape[0] if request.index.shape else 0
    if rows > MAX_PRIORITY_ROWS:  # checked before decoding: the sum tree's work is per row
        raise _invalid(f"index: {rows} rows, at most {MAX_PRIORITY_ROWS} per call")
    index = _column(request.index, "index", np.int64)
    key = _column(request.key, "key", np.int64)
    if len(key) != len(index):
        raise _invalid(f"key: {len(key)} rows, but index has {len(index)}")
    priority = _priorities(request.priority, "priority", len(index))
    bad = (index < 0) | (index >= capacity)
    if bad.any():
        raise _invalid(f"index: value {int(index[bad][0])} out of range [0, {capacity})")
    empty = index >= size
    if empty.any():
        raise _invalid(
            f"index: value {int(index[empty][0])} names a slot that holds no transition "
            f"(the replay holds {size})"
        )
    return index, key, priority


def _check_bookkeeping(batch: pb.TransitionBatch) -> None:
    # Counters no client can reach (2**53 env steps is 285 years at 1M/s): refused, so
    # one client's impossible values never reach the sums and means Info reports.
    for name in ("sequence", "policy_version", "actor_env_steps"):
        value = getattr(batch, name)
        if value > MAX_COUNTER:
            raise _invalid(f"batch.{name}: {value} exceeds the largest allowed, 2**53")
    if not 0.0 <= batch.epsilon <= 1.0:  # also false for NaN
        raise _invalid(f"batch.epsilon: must lie in [0, 1], got {batch.epsilon}")
    for i, ep in enumerate(batch.episodes):
        if not math.isfinite(ep.episode_return):
            raise _invalid(f"batch.episodes[{i}].episode_return: must be finite")
