"""Fuzzing the replay server's bookkeeping with hypothesis, over real gRPC on loopback.

What tests/component/test_fuzz.py does for the shape of a batch, this does for its
bookkeeping: counters at their extremes, interleaved actor lives, many actor ids,
priority indices relative to the current size (not only the capacity), restores
from checkpoints written in odd states, and Sample requests sized in bytes against
the message limit for many observation shapes. Each example runs on a fresh server
and is checked against a small reference model of the documented rules.
"""

from __future__ import annotations

import collections
import contextlib

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqn import codec, rpc
from dqn.config import build
from dqn.v1 import replay_pb2 as pb
from replay_server import checkpoint
from replay_server.bookkeeping import INCARNATIONS_KEPT, MAX_COUNTER, U64_MAX
from replay_server.server import ReplayServer
from replay_server.service import SAMPLE_OVERHEAD_BYTES
from tests.component._helpers import columns, info, make_batch, replay_stub

pytestmark = pytest.mark.component

FUZZ = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@contextlib.contextmanager
def server(obs_shape=(4,), obs_dtype=None, **replay):
    fields = {"capacity": 64, "min_size": 1, "host": "127.0.0.1", "port": 0}
    fields |= {"samples_per_insert": 0, **replay}  # no replay ratio unless asked
    s = ReplayServer(build({"replay": fields}), obs_shape, 2, obs_dtype=obs_dtype)
    s.start()
    rpc.wait_ready(s.address, timeout=60)  # generous: the machine may be loaded
    channel, stub = replay_stub(s.address, replay.get("max_message_mb", 64))
    try:
        yield s, stub
    finally:
        channel.close()
        s.stop(grace=0.1)


def push_one(stub, batch):
    """``(accepted, duplicate, status)`` of a one-batch Push."""
    try:
        reply = stub.Push(iter([pb.PushRequest(batch=batch)]), timeout=10)
    except grpc.RpcError as exc:
        return 0, 0, exc.code()
    return reply.accepted_batches, reply.duplicate_batches, grpc.StatusCode.OK


# -- counters at their extremes, interleaved lives, many actor ids ---------------------------
counter = st.one_of(
    st.integers(1, 6),
    st.sampled_from([MAX_COUNTER - 1, MAX_COUNTER, MAX_COUNTER + 1, U64_MAX]),
    st.integers(0, U64_MAX),
)
pushes = st.lists(
    st.fixed_dictionaries(
        {
            "actor_id": st.one_of(st.integers(0, 2), st.sampled_from([2**32 - 1])),
            "incarnation": st.one_of(st.integers(0, 5), st.sampled_from([U64_MAX])),
            "sequence": counter,
            "policy_version": counter,
            "actor_env_steps": counter,
            "epsilon": st.one_of(st.sampled_from([0.0, 1.0, -0.0]), st.floats(-1, 2, width=32)),
        }
    ),
    min_size=1,
    max_size=25,
)


class Model:
    """The documented rules: refuse counters above 2**53 or epsilon outside [0, 1];
    dedup per (actor, incarnation) over each actor's INCARNATIONS_KEPT newest lives."""

    def __init__(self):
        self.lives: dict[int, collections.OrderedDict[int, list[int]]] = {}
        self.retired: dict[int, int] = collections.Counter()
        self.inserted = 0

    def push(self, b: dict) -> tuple[int, int, grpc.StatusCode]:
        counters = (b["sequence"], b["policy_version"], b["actor_env_steps"])
        if b["sequence"] < 1 or max(counters) > MAX_COUNTER or not 0.0 <= b["epsilon"] <= 1.0:
            return 0, 0, grpc.StatusCode.INVALID_ARGUMENT
        lives = self.lives.setdefault(b["actor_id"], collections.OrderedDict())
        life = lives.get(b["incarnation"])
        if life is not None and b["sequence"] <= life[0]:
            return 0, 1, grpc.StatusCode.OK
        if life is None:
            life = lives[b["incarnation"]] = [0, 0]
            if len(lives) > INCARNATIONS_KEPT:
                self.retired[b["actor_id"]] += lives.popitem(last=False)[1][1]
        lives.move_to_end(b["incarnation"])
        life[0], life[1] = b["sequence"], max(life[1], b["actor_env_steps"])
        self.inserted += 1
        return 1, 0, grpc.StatusCode.OK

    def env_steps(self) -> int:
        live = sum(life[1] for lives in self.lives.values() for life in lives.values())
        return live + sum(self.retired.values())


@FUZZ
@given(batches=pushes)
def test_bookkeeping_follows_the_model_and_info_never_fails(batches):
    model = Model()
    with server() as (_, stub):
        for k, fields in enumerate(batches):
            batch = make_batch(start=k, n=1, **fields)
            assert push_one(stub, batch) == model.push(fields), fields
        r = info(stub)
        assert r.inserted == model.inserted
        assert r.env_steps == model.env_steps()
        assert {a.actor_id for a in r.actors} == set(model.lives)


# -- priority indices relative to the current size -------------------------------------------
@FUZZ
@given(
    stored=st.integers(1, 64),
    index=st.lists(st.integers(-3, 70), min_size=1, max_size=12),
)
def test_priority_indices_are_checked_against_the_size(stored, index):
    with server(prioritized=True) as (_, stub):
        stub.Push(iter([pb.PushRequest(batch=make_batch(1, 1000, stored))]), timeout=10)
        request = pb.UpdatePrioritiesRequest()
        codec.encode(np.asarray(index, np.int64), request.index)
        codec.encode(np.arange(1, len(index) + 1, dtype=np.int64), request.key)
        codec.encode(np.full(len(index), 1e3, np.float32), request.priority)
        # Checked in the documented order: the capacity first, then the size.
        bad = [i for i in index if not 0 <= i < 64] or [i for i in index if i >= stored]
        try:
            stub.UpdatePriorities(request, timeout=5)
            assert not bad
        except grpc.RpcError as exc:
            assert bad and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert exc.details().startswith(f"index: value {bad[0]} ")
        r = stub.Sample(pb.SampleRequest(batch_size=256, num_batches=2), timeout=10)
        ids = codec.decode(r.obs, "obs")[:, 0].astype(int)
        assert set(ids.tolist()) <= set(range(1000, 1000 + stored))  # inserted rows only


# -- restores from checkpoints written in odd states -----------------------------------------
odd = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, U64_MAX, U64_MAX + 1, -1]))


@FUZZ
@given(
    counters=st.fixed_dictionaries({"inserted": odd, "sampled": odd, "duplicates": odd}),
    life=st.tuples(st.integers(0, U64_MAX), odd, odd),
    actor=st.fixed_dictionaries({"policy_version": odd, "env_steps_retired": odd}),
    retired=odd,
)
def test_odd_checkpoints_restore_into_a_server_whose_info_works(
    tmp_path_factory, counters, life, actor, retired
):
    path = tmp_path_factory.mktemp("ckpt") / "replay.npz"
    with server(checkpoint_path=str(path)) as (s, stub):
        push_one(stub, make_batch(1, 0, 4, actor_id=3))
        state = s.write_checkpoint()
    state.counters.update(counters)
    state.actors["env_steps_retired"] = retired
    state.actors["actors"]["3"].update(actor, lives=[list(life)])
    checkpoint.save(path, state)
    with server(checkpoint_path=str(path)) as (_, stub):
        r = info(stub)
        assert r.size == 4
        assert r.actors[0].env_steps <= 2 * MAX_COUNTER
        assert r.env_steps <= 3 * MAX_COUNTER
        # and it keeps taking data
        assert push_one(stub, make_batch(1, 4, 4, actor_id=9))[2] == grpc.StatusCode.OK


# -- Sample sized in bytes against the message limit, for many observation shapes ------------
@FUZZ
@given(
    obs_shape=st.lists(st.integers(1, 48), min_size=1, max_size=3).map(tuple),
    uint8=st.booleans(),
    batch_size=st.integers(1, 4096),
    num_batches=st.integers(1, 64),
)
def test_sample_answers_always_fit_the_message_limit(obs_shape, uint8, batch_size, num_batches):
    dtype = np.uint8 if uint8 else np.float32
    limit = 1 * rpc.MiB
    with server(obs_shape, dtype, max_message_mb=1, max_batch_transitions=8) as (_, stub):
        for k in range(8):  # one row per batch: a row of the largest shape fits 1 MiB
            cols = columns(k, 1, obs_shape)
            cols["obs"] = cols["obs"].astype(dtype)
            cols["next_obs"] = cols["next_obs"].astype(dtype)
            assert push_one(stub, make_batch(k + 1, cols=cols))[2] == grpc.StatusCode.OK
        rows = batch_size * num_batches
        row_bytes = 2 * int(np.prod(obs_shape)) * np.dtype(dtype).itemsize + 8 + 4 + 1 + 4
        fits = rows * row_bytes + SAMPLE_OVERHEAD_BYTES <= limit
        request = pb.SampleRequest(batch_size=batch_size, num_batches=num_batches)
        try:
            r = stub.Sample(request, timeout=30)
            assert fits and r.num_batches == num_batches and r.ByteSize() <= limit
        except grpc.RpcError as exc:
            assert not fits, exc.details()
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert exc.details().startswith(f"batch_size * num_batches: {rows} rows of ")
        assert info(stub).sampled == (rows if fits else 0)
