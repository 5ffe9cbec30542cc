"""Every bad TransitionBatch gets a precise status naming the field and touches nothing."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from dqn.v1 import replay_pb2 as pb
from tests.component._helpers import (
    columns,
    decode_sample,
    info,
    make_batch,
    push,
    replay_stub,
    row_ids,
    sample,
)

pytestmark = pytest.mark.component

MAX_BATCH = 64
GOOD_IDS = set(range(16))
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def with_column(name, array):
    def build(seq):
        cols = columns(1000, 8)
        cols[name] = array
        return make_batch(seq, cols=cols)

    return build


def mutated(fn):
    def build(seq):
        batch = make_batch(seq, 1000, 8)
        fn(batch)
        return batch

    return build


def poisoned(name, value, row=3):
    cols = columns(1000, 8)
    arr = cols[name].copy()
    arr[row] = value
    return with_column(name, arr)


def _clear(name):
    return mutated(lambda b: b.ClearField(name))


def _set(**kw):
    def fn(batch):
        for key, value in kw.items():
            setattr(batch, key, value)

    return mutated(fn)


def _tensor(name, **kw):
    def fn(batch):
        tensor = getattr(batch, name)
        for key, value in kw.items():
            if key == "shape":
                tensor.shape[:] = value
            else:
                setattr(tensor, key, value)

    return mutated(fn)


F32 = np.float32
CASES = {
    # dtype per column
    "obs float64": (
        with_column("obs", np.zeros((8, 4), np.float64)),
        INVALID,
        "batch.obs: dtype DTYPE_FLOAT64, expected DTYPE_FLOAT32",
    ),
    "action int32": (
        with_column("action", np.zeros(8, np.int32)),
        INVALID,
        "batch.action: dtype DTYPE_INT32, expected DTYPE_INT64",
    ),
    "reward float64": (
        with_column("reward", np.zeros(8, np.float64)),
        INVALID,
        "batch.reward: dtype DTYPE_FLOAT64",
    ),
    "next_obs uint8": (
        with_column("next_obs", np.zeros((8, 4), np.uint8)),
        INVALID,
        "batch.next_obs: dtype DTYPE_UINT8",
    ),
    "terminated uint8": (
        with_column("terminated", np.zeros(8, np.uint8)),
        INVALID,
        "batch.terminated: dtype DTYPE_UINT8, expected DTYPE_BOOL",
    ),
    "discount float64": (
        with_column("discount", np.ones(8, np.float64)),
        INVALID,
        "batch.discount: dtype DTYPE_FLOAT64",
    ),
    "unknown dtype": (_tensor("reward", dtype=42), INVALID, "batch.reward: unsupported dtype"),
    # shapes
    "obs [8,3]": (
        with_column("obs", np.zeros((8, 3), F32)),
        INVALID,
        "batch.obs: shape [8, 3], expected [N, 4]",
    ),
    "obs [8,4,1]": (with_column("obs", np.zeros((8, 4, 1), F32)), INVALID, "batch.obs: shape"),
    "obs 0-d": (with_column("obs", np.zeros((), F32)), INVALID, "batch.obs: shape"),
    "next_obs [8,2,2]": (
        with_column("next_obs", np.zeros((8, 2, 2), F32)),
        INVALID,
        "batch.next_obs: shape",
    ),
    "action [8,1]": (
        with_column("action", np.zeros((8, 1), np.int64)),
        INVALID,
        "batch.action: shape [8, 1], expected [N]",
    ),
    "reward [8,2]": (with_column("reward", np.zeros((8, 2), F32)), INVALID, "batch.reward: shape"),
    "negative dim": (_tensor("obs", shape=[-8, 4]), INVALID, "batch.obs: negative dimension"),
    "empty batch": (
        lambda seq: make_batch(seq, cols=columns(0, 0)),
        INVALID,
        "batch.obs: empty batch",
    ),
    # row counts
    "reward 7 rows": (
        with_column("reward", np.zeros(7, F32)),
        INVALID,
        "batch.reward: 7 rows, but batch.obs has 8",
    ),
    "action 9 rows": (
        with_column("action", np.zeros(9, np.int64)),
        INVALID,
        "batch.action: 9 rows",
    ),
    "next_obs 7 rows": (
        with_column("next_obs", np.zeros((7, 4), F32)),
        INVALID,
        "batch.next_obs: 7 rows",
    ),
    "terminated 7 rows": (
        with_column("terminated", np.zeros(7, bool)),
        INVALID,
        "batch.terminated: 7 rows",
    ),
    "discount 9 rows": (
        with_column("discount", np.ones(9, F32)),
        INVALID,
        "batch.discount: 9 rows",
    ),
    # non-finite values
    "obs nan": (poisoned("obs", np.nan), INVALID, "batch.obs: contains NaN or infinite"),
    "obs inf": (poisoned("obs", np.inf), INVALID, "batch.obs: contains NaN or infinite"),
    "reward nan": (poisoned("reward", np.nan), INVALID, "batch.reward: contains NaN"),
    "reward -inf": (poisoned("reward", -np.inf), INVALID, "batch.reward: contains NaN"),
    "next_obs nan": (poisoned("next_obs", np.nan, row=7), INVALID, "batch.next_obs: contains"),
    "next_obs -inf": (poisoned("next_obs", -np.inf, row=0), INVALID, "batch.next_obs: contains"),
    "discount nan": (poisoned("discount", np.nan), INVALID, "batch.discount: contains"),
    # value ranges
    "action -1": (poisoned("action", -1), INVALID, "batch.action: value -1 out of range [0, 2)"),
    "action 2": (
        poisoned("action", 2, row=7),
        INVALID,
        "batch.action: value 2 out of range [0, 2)",
    ),
    "discount 1.5": (poisoned("discount", 1.5), INVALID, "batch.discount: values must lie"),
    "discount -0.1": (poisoned("discount", -0.1), INVALID, "batch.discount: values must lie"),
    # missing columns
    **{
        f"missing {name}": (_clear(name), INVALID, f"batch.{name}: missing")
        for name in ("obs", "action", "reward", "next_obs", "terminated", "discount")
    },
    # bookkeeping
    "sequence 0": (_set(sequence=0), INVALID, "batch.sequence: must be >= 1"),
    # corrupted bytes
    "obs bytes short": (
        _tensor("obs", data=b"\0" * 127),
        INVALID,
        "batch.obs: 127 data bytes, shape [8, 4] of DTYPE_FLOAT32 needs 128",
    ),
    "action bytes long": (
        _tensor("action", data=b"\0" * 72),
        INVALID,
        "batch.action: 72 data bytes",
    ),
    "terminated bytes short": (
        _tensor("terminated", data=b"\0" * 7),
        INVALID,
        "batch.terminated: 7 data bytes",
    ),
    # size limits
    "over max_batch_transitions": (
        lambda seq: make_batch(seq, 1000, MAX_BATCH + 1),
        EXHAUSTED,
        f"batch.action: {MAX_BATCH + 1} transitions, at most {MAX_BATCH} per batch",
    ),
    "action claims huge N": (
        _tensor("action", shape=[10**9]),
        EXHAUSTED,
        "batch.action: 1000000000 transitions",
    ),
    "obs over max, action fine": (
        with_column("obs", np.zeros((MAX_BATCH + 1, 4), F32)),
        EXHAUSTED,
        "batch.obs: 65 transitions",
    ),
}


@pytest.fixture
def server(replay_server_factory):
    return replay_server_factory(max_batch_transitions=MAX_BATCH, capacity=100)


@pytest.fixture
def stub(server):
    channel, stub = replay_stub(server.address)
    yield stub
    channel.close()


def assert_untouched(stub, before: pb.InfoResponse, rejected: int):
    after = info(stub)
    assert (after.size, after.inserted, after.duplicate_batches) == (
        before.size,
        before.inserted,
        before.duplicate_batches,
    )
    assert after.rejected_batches == before.rejected_batches + rejected
    assert [(a.actor_id, a.last_sequence) for a in after.actors] == [
        (a.actor_id, a.last_sequence) for a in before.actors
    ]
    ids = row_ids(decode_sample(sample(stub, batch_size=500)))  # intact rows only
    assert set(ids.tolist()) <= GOOD_IDS


@pytest.mark.parametrize("name", list(CASES))
def test_bad_batch_is_refused_precisely_and_stores_nothing(stub, name):
    build, code, expected = CASES[name]
    push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8))
    before = info(stub)
    assert (before.size, before.inserted) == (16, 16)
    with pytest.raises(grpc.RpcError) as err:
        push(stub, build(3))
    assert err.value.code() == code
    assert err.value.details().startswith(expected), err.value.details()
    assert_untouched(stub, before, rejected=1)
    # the refused sequence number was not consumed: a good batch 3 is accepted
    assert push(stub, make_batch(3, 16, 4)).accepted_batches == 1


def test_batches_before_a_bad_one_in_the_same_stream_stay_stored(stub):
    with pytest.raises(grpc.RpcError) as err:
        push(
            stub,
            make_batch(1, 0, 8),
            make_batch(2, 8, 8),
            CASES["reward nan"][0](3),
            make_batch(4, 16, 8),
        )
    assert err.value.code() == INVALID
    assert err.value.details().startswith("batch.reward")
    r = info(stub)
    assert (r.size, r.inserted, r.rejected_batches) == (16, 16, 1)
    assert r.actors[0].last_sequence == 2
    ids = row_ids(decode_sample(sample(stub, batch_size=500)))
    assert set(ids.tolist()) == GOOD_IDS  # batch 4 after the bad one was not stored


def test_message_over_grpc_max_size_is_resource_exhausted(replay_server_factory):
    server = replay_server_factory(max_message_mb=1, max_batch_transitions=100_000)
    channel, stub = replay_stub(server.address, max_message_mb=16)  # the client would send it
    with channel:
        push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8))
        before = info(stub)
        big = make_batch(3, 0, 40_000)  # ~2.0 MiB on the wire, valid otherwise
        assert big.ByteSize() > 1 << 20
        with pytest.raises(grpc.RpcError) as err:
            push(stub, big)
        assert err.value.code() == EXHAUSTED
        assert "larger than max" in err.value.details()
        assert str(1 << 20) in err.value.details()
        after = info(stub)
        assert (after.size, after.inserted) == (before.size, before.inserted)
        ids = row_ids(decode_sample(sample(stub, batch_size=200)))
        assert set(ids.tolist()) <= GOOD_IDS
        # the server still works after refusing the message
        assert push(stub, make_batch(3, 16, 8)).accepted_batches == 1
