"""Regression tests for the replay server's bookkeeping under hostile input, each
through a real server on 127.0.0.1: dedup across actor lives, counters at their
extremes, phantom rows, unbounded actor ids, answers too large to send, and the
edge rules of UpdatePriorities."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from dqn import codec
from dqn.v1 import replay_pb2 as pb
from replay_server import checkpoint
from replay_server.bookkeeping import ACTORS_KEPT, INCARNATIONS_KEPT, MAX_COUNTER, U64_MAX
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


@pytest.fixture
def stub(replay_server):
    channel, stub = replay_stub(replay_server.address)
    yield stub
    channel.close()


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


# -- 1. dedup per (actor, incarnation) ---------------------------------------------------
def test_resend_from_an_old_life_after_a_restart_is_dropped(stub):
    old, new = 111, 222
    push(stub, make_batch(1, 0, 8, incarnation=old), make_batch(2, 8, 8, incarnation=old))
    push(stub, make_batch(1, 16, 8, incarnation=new))  # restarted: sequence back at 1
    # A zombie of the old life re-sends its batch 2, then the new life re-sends its 1.
    reply = push(stub, make_batch(2, 8, 8, incarnation=old), make_batch(1, 16, 8, incarnation=new))
    assert (reply.accepted_batches, reply.duplicate_batches) == (0, 2)
    r = info(stub)
    assert (r.size, r.inserted, r.duplicate_batches) == (24, 24, 2)
    ids = row_ids(decode_sample(sample(stub, batch_size=3000)))
    assert np.bincount(ids, minlength=24).tolist().count(0) == 0  # every row, once each
    assert set(ids.tolist()) == set(range(24))


def test_two_lives_interleaving_each_keep_their_own_sequence(stub):
    a, b = 5, 6
    order = [(a, 1), (b, 1), (a, 2), (b, 2), (a, 1), (b, 2), (a, 3), (b, 1), (b, 3)]
    accepted = []
    for k, (life, seq) in enumerate(order):
        reply = push(stub, make_batch(seq, 8 * k, 8, incarnation=life, actor_env_steps=10 * seq))
        accepted.append(reply.accepted_batches)
    assert accepted == [1, 1, 1, 1, 0, 0, 1, 0, 1]
    r = info(stub)
    assert (r.inserted, r.duplicate_batches) == (6 * 8, 3)
    assert r.env_steps == 30 + 30  # each life's own count, summed
    assert (r.actors[0].incarnation, r.actors[0].last_sequence) == (b, 3)


def test_old_lives_expire_from_a_bounded_window_and_are_counted(stub):
    lives = INCARNATIONS_KEPT + 2
    for life in range(1, lives + 1):
        push(stub, make_batch(1, 8 * life, 8, incarnation=life, actor_env_steps=100))
    r = info(stub)
    assert r.incarnations_expired == 2
    assert r.env_steps == 100 * lives  # expired lives' steps still count
    # The newest lives still drop their re-sends.
    assert push(stub, make_batch(1, 8 * lives, 8, incarnation=lives)).duplicate_batches == 1


# -- 2. counters at their extremes -------------------------------------------------------
@pytest.mark.parametrize("field", ["actor_env_steps", "policy_version", "sequence"])
@pytest.mark.parametrize("value", [MAX_COUNTER + 1, U64_MAX])
def test_impossible_counters_are_refused_and_info_keeps_working(stub, field, value):
    push(stub, make_batch(1, 0, 8, actor_id=7, actor_env_steps=5))
    kw = {"sequence": 2, field: value}
    batch = make_batch(**{"start": 8, "n": 8, "actor_id": 9, **kw})
    err = refused(lambda: push(stub, batch))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"batch.{field}: {value} exceeds the largest allowed, 2**53"
    r = info(stub)  # for everyone, not just the sender
    assert (r.size, r.env_steps, [a.actor_id for a in r.actors]) == (8, 5, [7])


def test_largest_allowed_counters_from_many_actors_do_not_break_info(stub):
    for actor in range(3):
        push(
            stub,
            make_batch(
                MAX_COUNTER,
                8 * actor,
                8,
                actor_id=actor,
                actor_env_steps=MAX_COUNTER,
                policy_version=MAX_COUNTER,
            ),
        )
    r = info(stub)
    assert r.env_steps == 3 * MAX_COUNTER
    assert r.policy_lag == 0.0
    err = refused(lambda: sample(stub, batch_size=1, learner_version=MAX_COUNTER + 1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("learner_version:")


def checkpoint_of(factory, tmp_path, **batch_fields):
    """A server with a checkpoint path, one batch pushed: (server, its checkpoint state)."""
    path = tmp_path / "replay.npz"
    server = factory(checkpoint_path=str(path))
    channel, stub = replay_stub(server.address)
    push(stub, make_batch(1, 0, 8, **batch_fields))
    channel.close()
    return server, server.write_checkpoint()


def restored_info(factory, tmp_path, state) -> tuple:
    """Save ``state`` as the checkpoint and start a second server from it: (server, Info)."""
    path = tmp_path / "replay.npz"
    checkpoint.save(path, state)
    server = factory(checkpoint_path=str(path))
    channel, stub = replay_stub(server.address)
    r = info(stub)  # never "Value out of range"
    channel.close()
    return server, r


def test_a_checkpoint_written_in_an_odd_state_restores_and_info_works(
    replay_server_factory, tmp_path
):
    _, state = checkpoint_of(replay_server_factory, tmp_path, actor_env_steps=10)
    # Edit the file as a bug or a hand would: counters past uint64 and negative.
    actors = state.actors["actors"]
    actors["1"]["lives"][0][2] = U64_MAX * 4
    actors["1"]["policy_version"] = U64_MAX + 1
    actors["2"] = {**actors["1"], "env_steps_retired": -5}
    state.counters["inserted"] = U64_MAX * 2
    _, r = restored_info(replay_server_factory, tmp_path, state)
    assert r.inserted == U64_MAX  # saturated
    assert [a.env_steps for a in r.actors] == [MAX_COUNTER, MAX_COUNTER]
    assert r.env_steps == 2 * MAX_COUNTER


# -- 3. phantom rows --------------------------------------------------------------------
@pytest.fixture
def per_stub(replay_server_factory):
    server = replay_server_factory(capacity=64, prioritized=True, priority_alpha=1.0)
    channel, stub = replay_stub(server.address)
    yield stub
    channel.close()


def priority_request(index, key, priority) -> pb.UpdatePrioritiesRequest:
    request = pb.UpdatePrioritiesRequest()
    codec.encode(np.asarray(index, np.int64), request.index)
    codec.encode(np.asarray(key, np.int64), request.key)
    codec.encode(np.asarray(priority, np.float32), request.priority)
    return request


def test_priorities_on_unwritten_slots_are_refused_and_samples_stay_inserted(per_stub):
    push(per_stub, make_batch(1, 100, 8))  # slots 0..7 hold ids 100..107
    for index in (8, 40, 63):  # inside the capacity, never written
        err = refused(
            lambda index=index: per_stub.UpdatePriorities(
                priority_request([0, index], [1, 0], [1.0, 1e6]), timeout=5
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == (
            f"index: value {index} names a slot that holds no transition (the replay holds 8)"
        )
    r = info(per_stub)
    assert (r.priority_updates, r.stale_priority_updates) == (0, 0)  # nothing applied
    ids = row_ids(decode_sample(sample(per_stub, batch_size=512, num_batches=4)))
    assert set(ids.tolist()) <= set(range(100, 108))


def test_a_slot_named_twice_gets_the_last_priority(per_stub):
    push(per_stub, make_batch(1, 0, 4))
    keys = codec.decode(sample(per_stub, batch_size=64).key, "key")  # any sample: keys 1..4
    assert set(keys.tolist()) <= {1, 2, 3, 4}
    reply = per_stub.UpdatePriorities(
        priority_request([0, 1, 2, 3, 0], [1, 2, 3, 4, 1], [9.0, 1.0, 1.0, 1.0, 1.0]), timeout=5
    )
    assert (reply.updated, reply.stale) == (5, 0)
    r = sample(per_stub, batch_size=256, num_batches=4)
    index, prob = codec.decode(r.index, "index"), codec.decode(r.probability, "probability")
    # Slot 0 ended at priority 1 (the last row), like the others: all equally likely.
    np.testing.assert_allclose(prob, 0.25, rtol=1e-5)
    assert set(index.tolist()) == {0, 1, 2, 3}


# -- 4. many actor ids ------------------------------------------------------------------
def test_many_actor_ids_keep_info_bounded(stub):
    extra = 500
    ids = range(ACTORS_KEPT + extra)
    batches = [make_batch(1, 0, 1, actor_id=a, actor_env_steps=2) for a in ids]
    for k in range(0, len(batches), 1000):
        reply = push(stub, *batches[k : k + 1000], timeout=60)
        assert reply.accepted_batches == len(batches[k : k + 1000])
    r = info(stub)
    assert len(r.actors) == ACTORS_KEPT
    assert r.actors_expired == extra
    assert r.env_steps == 2 * len(ids)  # forgotten actors' steps still counted
    assert [a.actor_id for a in r.actors] == list(range(extra, ACTORS_KEPT + extra))
    assert r.ByteSize() < 4 << 20


# -- 5. answers too large to send ----------------------------------------------------------
def test_sample_whose_answer_exceeds_the_message_limit_is_refused_uncounted(
    replay_server_factory,
):
    server = replay_server_factory(
        obs_shape=(3, 64, 64), obs_dtype=np.uint8, capacity=64, max_message_mb=4
    )
    channel, stub = replay_stub(server.address)
    obs = np.zeros((8, 3, 64, 64), np.uint8)
    cols = {**columns(0, 8), "obs": obs, "next_obs": obs}
    push(stub, make_batch(1, cols=cols))
    row = 2 * 3 * 64 * 64 + 8 + 4 + 1 + 4
    for b, k in [(1 << 20, 1), (1024, 1024), (200, 1)]:  # 200 rows: 4.9 MB > 4 MiB
        err = refused(lambda b=b, k=k: sample(stub, batch_size=b, num_batches=k))
        if b * k > 1 << 20:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            continue
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.details().startswith(f"batch_size * num_batches: {b * k} rows of {row} bytes")
    assert sample(stub, batch_size=100).num_batches == 1  # 100 rows fit in 4 MiB
    r = info(stub)
    assert r.sampled == 100  # refused requests count nothing
    assert r.samples_per_insert == pytest.approx(100 / 8)
    channel.close()


def test_server_memory_stays_bounded_after_many_large_answers(tmp_path):
    """60 answers near the message limit, then 60 refused oversize requests: the
    server process's RSS grows by a bounded amount once warm, not per answer (a
    32-thread server kept glibc arenas full of large buffers: +1.1 GiB after 60)."""
    import psutil

    from bench.common import ReplayServerProcess

    limit_mb, obs_shape = 16, (2, 40, 80)  # PixelCartPole-v1 frame stacks
    server = ReplayServerProcess(
        tmp_path,
        "--env",
        "PixelCartPole-v1",
        "--replay.capacity",
        "2048",
        "--replay.max-message-mb",
        str(limit_mb),
    )
    channel, stub = replay_stub(server.address, limit_mb)
    try:
        obs = np.random.default_rng(0).integers(0, 255, (256, *obs_shape), dtype=np.uint8)
        for seq in range(1, 9):
            cols = {**columns(0, 256), "obs": obs, "next_obs": obs}
            push(stub, make_batch(seq, cols=cols), timeout=60)
        row = 2 * obs.nbytes // 256 + 17
        rows = (limit_mb << 20) // row - 8  # just under the limit
        rss = psutil.Process(server.proc.pid).memory_info
        for _ in range(5):  # warm-up: buffers, arenas, grpc's own pools
            assert sample(stub, batch_size=rows).num_batches == 1
        warm = rss().rss
        for _ in range(60):
            assert sample(stub, batch_size=rows).num_batches == 1
        after_large = rss().rss
        for _ in range(60):
            err = refused(lambda: sample(stub, batch_size=rows * 4))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        after_refused = rss().rss
        answer = rows * row
        mib = 1 << 20
        print(
            f"\nreplay RSS: warm {warm / mib:.0f} MiB, after 60 answers of "
            f"{answer / mib:.1f} MiB {after_large / mib:.0f} MiB, after 60 refused "
            f"{after_refused / mib:.0f} MiB"
        )
        assert after_large - warm < 4 * answer, (warm, after_large, answer)
        assert after_refused - after_large < answer // 4, (after_large, after_refused)
        assert info(stub).sampled == 65 * rows
    finally:
        channel.close()
        server.stop()


# -- work per call is bounded (one call stalls the loop for its own work only) ----------
def test_prioritized_calls_are_bounded_in_rows(per_stub):
    from replay_server.service import MAX_PRIORITIZED_SAMPLE
    from replay_server.validation import MAX_PRIORITY_ROWS

    push(per_stub, make_batch(1, 0, 8))
    err = refused(lambda: sample(per_stub, batch_size=MAX_PRIORITIZED_SAMPLE + 1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        f"batch_size * num_batches: {MAX_PRIORITIZED_SAMPLE + 1} exceeds "
        f"{MAX_PRIORITIZED_SAMPLE} on a prioritized server"
    )
    rows = MAX_PRIORITY_ROWS + 1
    request = priority_request(np.zeros(rows), np.ones(rows), np.ones(rows))
    err = refused(lambda: per_stub.UpdatePriorities(request, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"index: {rows} rows, at most {MAX_PRIORITY_ROWS} per call"
    assert info(per_stub).sampled == 0


@pytest.mark.parametrize(
    "edit",
    [
        {"lives": [[2**64, 1, 1]]},  # an incarnation past uint64: clamped
        {"incarnation": -1},  # clamped to 0
        {"lives": [[k, 1, 1] for k in range(10)]},  # more lives than are kept: trimmed
    ],
)
def test_odd_actor_ids_and_lives_in_a_checkpoint(replay_server_factory, tmp_path, edit):
    _, state = checkpoint_of(replay_server_factory, tmp_path, actor_id=3)
    state.actors["actors"]["3"].update(edit)
    second, r = restored_info(replay_server_factory, tmp_path, state)
    assert [a.actor_id for a in r.actors] == [3]
    assert len(second.servicer.book.actors[3].lives) <= INCARNATIONS_KEPT


def test_an_actor_id_no_batch_could_carry_makes_the_checkpoint_refused(
    replay_server_factory, tmp_path
):
    from replay_server.server import ReplayServer

    first, state = checkpoint_of(replay_server_factory, tmp_path, actor_id=3)
    state.actors["actors"][str(2**32)] = state.actors["actors"]["3"]
    checkpoint.save(tmp_path / "replay.npz", state)
    with pytest.raises(checkpoint.CheckpointError, match="actors: malformed"):
        ReplayServer(first.config, (4,), 2)
