"""Batch builders and stub helpers shared by the component tests."""

from __future__ import annotations

import numpy as np

from dqn import codec, rpc
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc

OBS_SHAPE = (4,)
N_ACTIONS = 2


def columns(start: int, n: int, obs_shape=OBS_SHAPE) -> dict[str, np.ndarray]:
    """``n`` valid transitions; row k is tagged with id ``start + k`` in every column."""
    return columns_for(np.arange(start, start + n), obs_shape)


def columns_for(ids: np.ndarray, obs_shape=OBS_SHAPE) -> dict[str, np.ndarray]:
    """The transitions tagged with ``ids`` (see :func:`columns`)."""
    n = len(ids)
    obs = np.repeat(ids[:, None], int(np.prod(obs_shape)), axis=1).astype(np.float32)
    obs = obs.reshape(n, *obs_shape)
    return {
        "obs": obs,
        "action": (ids % N_ACTIONS).astype(np.int64),
        "reward": (ids * 0.5).astype(np.float32),
        "next_obs": obs + 0.25,
        "terminated": ids % 5 == 0,
        "discount": np.full(n, 0.99, np.float32),
    }


def make_batch(
    sequence: int,
    start: int = 0,
    n: int = 8,
    actor_id: int = 1,
    incarnation: int = 1,
    cols: dict | None = None,
    **fields,
) -> pb.TransitionBatch:
    batch = pb.TransitionBatch(
        actor_id=actor_id, sequence=sequence, incarnation=incarnation, **fields
    )
    for name, array in (cols if cols is not None else columns(start, n)).items():
        codec.encode(array, getattr(batch, name))
    return batch


def replay_stub(address: str, max_message_mb: int = 64):
    channel = rpc.channel(address, max_message_mb)
    return channel, pb_grpc.ReplayServiceStub(channel)


def push(stub, *batches, timeout: float = 10.0) -> pb.PushResponse:
    return stub.Push(iter([pb.PushRequest(batch=b) for b in batches]), timeout=timeout)


def info(stub, after: int = 0) -> pb.InfoResponse:
    return stub.Info(pb.InfoRequest(episodes_after=after), timeout=5.0)


def sample(stub, batch_size: int, num_batches: int = 1, timeout_ms: int = 0, **kw):
    return stub.Sample(
        pb.SampleRequest(
            batch_size=batch_size, num_batches=num_batches, timeout_ms=timeout_ms, **kw
        ),
        timeout=10.0,
    )


def decode_sample(response: pb.SampleResponse) -> dict[str, np.ndarray]:
    return {
        name: codec.decode(getattr(response, name), name)
        for name in ("obs", "action", "reward", "next_obs", "terminated", "discount")
    }


def row_ids(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The id of each sampled row, after checking the row is an intact pushed transition."""
    ids = cols["obs"].reshape(len(cols["obs"]), -1)[:, 0].astype(np.int64)
    ref = columns_for(ids, cols["obs"].shape[1:])
    for name, col in cols.items():
        np.testing.assert_array_equal(col, ref[name], err_msg=f"sampled {name} rows corrupted")
    return ids
