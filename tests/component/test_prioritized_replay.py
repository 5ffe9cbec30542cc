"""Prioritized replay over real gRPC on 127.0.0.1: priorities in, proportional samples
out, UpdatePriorities with stale keys, bad input refused, checkpoints, sender client."""

from __future__ import annotations

import re
import time

import grpc
import numpy as np
import pytest

from dqn import codec
from dqn.v1 import replay_pb2 as pb
from learner.priority_sender import PrioritySender, update_request
from learner.sampler import decode_sample as learner_decode
from tests.component._helpers import info, make_batch, push, replay_stub, sample

pytestmark = pytest.mark.component

CHI2_7_999 = 24.322  # 99.9% quantile of chi-square with 7 degrees of freedom


@pytest.fixture
def per_server(replay_server_factory):
    return replay_server_factory(
        capacity=8, prioritized=True, priority_alpha=1.0, priority_eps=1e-6
    )


@pytest.fixture
def stub(per_server):
    channel, stub = replay_stub(per_server.address)
    yield stub
    channel.close()


def with_priority(batch: pb.TransitionBatch, priority) -> pb.TransitionBatch:
    codec.encode(np.asarray(priority, np.float32), batch.priority)
    return batch


def per_columns(response):
    return (
        codec.decode(response.index, "index"),
        codec.decode(response.key, "key"),
        codec.decode(response.probability, "probability"),
    )


def test_sampling_follows_pushed_priorities(stub):
    prios = np.arange(1, 9, dtype=np.float32)  # slot j has priority j + 1
    push(stub, with_priority(make_batch(1, 0, 8), prios))
    counts = np.zeros(8)
    for _ in range(10):
        r = sample(stub, batch_size=64, num_batches=8)
        index, key, prob = per_columns(r)
        np.testing.assert_allclose(prob, (index + 1) / prios.sum(), rtol=1e-5)
        assert r.min_probability == pytest.approx(1 / prios.sum(), rel=1e-5)
        ids = codec.decode(r.obs, "obs")[:, 0].astype(int)
        np.testing.assert_array_equal(ids, index)  # row k of the push sits in slot k
        counts += np.bincount(index, minlength=8)
    expected = prios / prios.sum() * counts.sum()
    assert ((counts - expected) ** 2 / expected).sum() < CHI2_7_999


def test_update_priorities_changes_sampling(stub):
    push(stub, make_batch(1, 0, 8))  # no priority column: max priority (1) each
    r = sample(stub, batch_size=8)
    index, key, _ = per_columns(r)
    low = np.zeros(8, np.float32)
    low[index == 3] = 100.0
    order = np.argsort(index)
    reply = stub.UpdatePriorities(update_request(index[order], key[order], low[order]), timeout=5.0)
    assert reply.updated == 8 and reply.stale == 0
    index2, _, prob = per_columns(sample(stub, batch_size=64))
    assert (index2 == 3).mean() > 0.9
    assert info(stub).priority_updates == 8


def test_updates_to_overwritten_slots_are_ignored(stub):
    push(stub, make_batch(1, 0, 8))
    index, key, _ = per_columns(sample(stub, batch_size=8))
    push(stub, make_batch(2, 100, 4))  # overwrites slots 0..3 (capacity 8)
    reply = stub.UpdatePriorities(
        update_request(index, key, np.full(len(index), 50.0, np.float32)), timeout=5.0
    )
    overwritten = int((index < 4).sum())
    assert (reply.updated, reply.stale) == (len(index) - overwritten, overwritten)
    assert info(stub).stale_priority_updates == overwritten


@pytest.mark.parametrize(
    ("index", "key", "priority", "field"),
    [
        ([0, 1], [1, 2], [1.0, np.nan], "priority: contains NaN"),
        ([0, 1], [1, 2], [1.0, np.inf], "priority: contains NaN or infinite"),
        ([0, 1], [1, 2], [1.0, -0.5], "priority: priorities must be >= 0"),
        ([0, 8], [1, 2], [1.0, 1.0], r"index: value 8 out of range \[0, 8\)"),
        ([-1, 0], [1, 2], [1.0, 1.0], "index: value -1 out of range"),
        ([0, 1], [1], [1.0, 1.0], "key: 1 rows, but index has 2"),
        ([0, 1], [1, 2], [1.0], "priority: 1 rows, expected 2"),
    ],
)
def test_bad_priority_updates_are_refused_naming_the_field(stub, index, key, priority, field):
    push(stub, make_batch(1, 0, 8))
    before = sample(stub, batch_size=8)
    request = pb.UpdatePrioritiesRequest()
    codec.encode(np.asarray(index, np.int64), request.index)
    codec.encode(np.asarray(key, np.int64), request.key)
    codec.encode(np.asarray(priority, np.float32), request.priority)
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdatePriorities(request, timeout=5.0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field.split(":")[0] + ":")
    assert re.search(field, err.value.details()), err.value.details()
    np.testing.assert_allclose(per_columns(before)[2], 1 / 8)  # nothing changed
    assert info(stub).priority_updates == 0


def test_missing_and_wrongly_typed_columns_are_refused(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdatePriorities(pb.UpdatePrioritiesRequest(), timeout=5.0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "index: missing"
    request = update_request([0], [1], [1.0])
    codec.encode(np.array([1.0], np.float64), request.priority)
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdatePriorities(request, timeout=5.0)
    assert "priority: dtype DTYPE_FLOAT64, expected DTYPE_FLOAT32" in err.value.details()


@pytest.mark.parametrize(
    ("priority", "message"),
    [
        ([1.0] * 7 + [np.nan], "batch.priority: contains NaN"),
        ([1.0] * 7 + [-1.0], "batch.priority: priorities must be >= 0"),
        ([1.0] * 7, "batch.priority: 7 rows, expected 8"),
    ],
)
def test_bad_priority_column_in_a_batch_is_refused(stub, priority, message):
    with pytest.raises(grpc.RpcError) as err:
        push(stub, with_priority(make_batch(1, 0, 8), priority))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(message)
    assert info(stub).size == 0


def test_uniform_server_answers_failed_precondition_and_sends_no_per_columns(replay_server):
    channel, stub = replay_stub(replay_server.address)
    try:
        push(stub, with_priority(make_batch(1, 0, 8), np.ones(8)))  # column ignored
        r = sample(stub, batch_size=4)
        assert not r.HasField("index") and not r.HasField("probability")
        assert set(learner_decode(r)) == {
            "obs", "action", "reward", "next_obs", "terminated", "discount"
        }  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            stub.UpdatePriorities(update_request([0], [1], [1.0]), timeout=5.0)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details().startswith("replay.prioritized:")
    finally:
        channel.close()


def test_learner_decodes_per_columns(stub):
    push(stub, with_priority(make_batch(1, 0, 8), np.arange(8)))
    out = learner_decode(sample(stub, batch_size=4, num_batches=2))
    assert out["index"].shape == out["key"].shape == out["probability"].shape == (8,)
    assert float(out["min_probability"][0]) == pytest.approx(
        1e-6 / (np.arange(8).sum() + 8e-6), rel=1e-3
    )


def test_priority_sender_delivers_updates(stub, per_server):
    import torch

    push(stub, make_batch(1, 0, 8))
    index, key, _ = (a.copy() for a in per_columns(sample(stub, batch_size=8)))
    sender = PrioritySender(per_server.address, flush_every=2)
    try:
        half = len(index) // 2
        td = torch.full((half,), 9.0)
        sender.add(torch.from_numpy(index[:half]), torch.from_numpy(key[:half]), td)
        sender.add(torch.from_numpy(index[half:]), torch.from_numpy(key[half:]), td)
        # The second add() flushes: the sender thread delivers without close().
        deadline = time.monotonic() + 30
        while info(stub).priority_updates < len(index):
            assert time.monotonic() < deadline, "priority updates not delivered in 30 s"
            time.sleep(0.05)
    finally:
        sender.close()
    assert info(stub).priority_updates == len(index)
    assert sender.sent == len(index) and sender.dropped == 0


def test_priorities_survive_a_checkpoint(replay_server_factory, tmp_path):
    path = tmp_path / "replay.npz"
    kw = {"capacity": 8, "prioritized": True, "priority_alpha": 1.0, "checkpoint_path": str(path)}
    first = replay_server_factory(**kw)
    channel, stub = replay_stub(first.address)
    push(stub, with_priority(make_batch(1, 0, 8), np.arange(8)))
    channel.close()
    before = first.servicer.priorities
    first.stop(grace=0.5)
    second = replay_server_factory(**kw)
    after = second.servicer.priorities
    np.testing.assert_array_equal(after.sum.leaves, before.sum.leaves)
    np.testing.assert_array_equal(after.keys, before.keys)
    assert after.next_key == before.next_key == 9
