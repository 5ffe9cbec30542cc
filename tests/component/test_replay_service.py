"""ReplayService over real gRPC on 127.0.0.1: push, sample, info, dedup, concurrency."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqn import rpc
from dqn.v1 import replay_pb2 as pb
from replay_server.server import SERVICE_NAME
from tests.component._helpers import (
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


def test_one_push_message_carries_many_batches_stored_in_order(replay_server, stub):
    """PushRequest.batch then .batches: each stored (or dropped as a duplicate, or
    refused naming it) as if it came in a message of its own; the writer's frames
    joined are that message."""
    from actors.replay_client import frame

    batches = [make_batch(1, 0, 8), make_batch(2, 8, 8), make_batch(2, 16, 8)]  # 3rd: dup
    joined = b"".join(frame(b) for b in batches)
    assert joined == pb.PushRequest(batches=batches).SerializeToString()
    reply = stub.Push(iter([pb.PushRequest.FromString(joined)]), timeout=10)
    assert (reply.accepted_batches, reply.accepted_transitions, reply.duplicate_batches) == (
        2,
        16,
        1,
    )
    ids = row_ids(decode_sample(sample(stub, batch_size=16, num_batches=8)))
    assert set(ids.tolist()) <= set(range(16))  # the duplicate's rows 16-23 never stored
    with replay_server.servicer.lock:
        assert replay_server.servicer.storage.size == 16
    # batch, then batches[0] valid, then batches[1] invalid: two stored, then refused
    bad = make_batch(5, 40, 8)
    bad.sequence = 0
    request = pb.PushRequest(
        batch=make_batch(3, 24, 8), batches=[make_batch(4, 32, 8), bad, make_batch(6, 48, 8)]
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Push(iter([request]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "batches[1].sequence: must be >= 1, got 0"
    after = info(stub)
    assert (after.inserted, after.size) == (32, 32)  # 3 and 4 stored, 6 never reached
    # an empty message is the empty batch, refused as such
    with pytest.raises(grpc.RpcError) as err:
        stub.Push(iter([pb.PushRequest()]), timeout=10)
    assert err.value.details() == "batch.sequence: must be >= 1, got 0"


def test_push_stream_then_sample_returns_pushed_rows(stub):
    reply = push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8), make_batch(3, 16, 8))
    assert (reply.accepted_batches, reply.accepted_transitions, reply.duplicate_batches) == (
        3,
        24,
        0,
    )
    resp = sample(stub, batch_size=16, num_batches=3)
    assert (resp.num_batches, resp.batch_size, resp.reason) == (3, 16, "")
    cols = decode_sample(resp)
    expected = {
        "obs": ((48, 4), np.float32),
        "action": ((48,), np.int64),
        "reward": ((48,), np.float32),
        "next_obs": ((48, 4), np.float32),
        "terminated": ((48,), np.bool_),
        "discount": ((48,), np.float32),
    }
    for name, (shape, dtype) in expected.items():
        assert cols[name].shape == shape, name
        assert cols[name].dtype == dtype, name
    ids = row_ids(cols)  # every row is an intact pushed transition
    assert set(ids.tolist()) <= set(range(24))


def test_sampling_is_uniform_over_stored_rows(stub):
    push(stub, make_batch(1, 0, 10))
    cols = decode_sample(sample(stub, batch_size=1000, num_batches=4))
    counts = np.bincount(row_ids(cols), minlength=10)
    assert len(counts) == 10
    assert np.all(np.abs(counts / 4000 - 0.1) < 0.03), counts


def test_info_counters(stub, replay_server):
    ep = pb.Episode(actor_id=1, episode_return=12.5, length=12, truncated=False)
    push(
        stub, make_batch(1, 0, 8, policy_version=3, epsilon=0.5, actor_env_steps=40, episodes=[ep])
    )
    push(stub, make_batch(2, 8, 8, policy_version=4, epsilon=0.25, actor_env_steps=80))
    push(
        stub,
        make_batch(
            1,
            100,
            4,
            actor_id=2,
            policy_version=4,
            actor_env_steps=10,
            episodes=[
                pb.Episode(actor_id=2, episode_return=3.0, length=3),
                pb.Episode(actor_id=2, episode_return=4.0, length=4, truncated=True),
            ],
        ),
    )
    sample(stub, batch_size=5, num_batches=2, learner_version=6)
    r = info(stub)
    assert (r.capacity, r.size, r.inserted, r.sampled) == (1000, 20, 20, 10)
    assert (r.rejected_batches, r.duplicate_batches) == (0, 0)
    assert r.env_steps == 90
    assert r.samples_per_insert == pytest.approx(0.5)
    assert r.obs_bytes == replay_server.servicer.storage.nbytes == 1000 * (16 * 2 + 8 + 4 + 1 + 4)
    assert (r.num_actions, list(r.obs_shape)) == (2, [4])
    actors = {a.actor_id: a for a in r.actors}
    assert set(actors) == {1, 2}
    assert (actors[1].last_sequence, actors[1].policy_version, actors[1].env_steps) == (2, 4, 80)
    assert actors[1].epsilon == pytest.approx(0.25)
    assert (actors[2].last_sequence, actors[2].env_steps) == (1, 10)
    assert r.policy_lag == pytest.approx(2.0)  # learner 6, both actors at 4
    assert [(e.episode_return, e.length, e.truncated) for e in r.episodes] == [
        (12.5, 12, False),
        (3.0, 3, False),
        (4.0, 4, True),
    ]
    assert r.episodes_total == 3 and r.episodes_cursor == 3
    # the cursor returns only what finished later
    assert list(info(stub, after=r.episodes_cursor).episodes) == []
    push(
        stub, make_batch(3, 16, 2, episodes=[pb.Episode(actor_id=1, episode_return=9.0, length=9)])
    )
    r2 = info(stub, after=r.episodes_cursor)
    assert [e.episode_return for e in r2.episodes] == [9.0]
    assert r2.episodes_cursor == 4
    assert [e.episode_return for e in info(stub, after=2).episodes] == [4.0, 9.0]


def test_capacity_bounds_size_not_inserted(replay_server_factory):
    server = replay_server_factory(capacity=20)
    channel, stub = replay_stub(server.address)
    with channel:
        for seq in range(1, 6):
            push(stub, make_batch(seq, (seq - 1) * 8, 8))
        r = info(stub)
        assert (r.size, r.inserted) == (20, 40)
        ids = row_ids(decode_sample(sample(stub, batch_size=500)))
        assert set(ids.tolist()) <= set(range(20, 40))  # only the newest 20 remain


# -- min_size ----------------------------------------------------------------------
def test_sample_before_min_size_returns_zero_batches_with_reason(replay_server_factory):
    server = replay_server_factory(min_size=50)
    channel, stub = replay_stub(server.address)
    with channel:
        push(stub, make_batch(1, 0, 10))
        resp = sample(stub, batch_size=4, timeout_ms=20)
        assert resp.num_batches == 0
        assert "min_size 50" in resp.reason and "10" in resp.reason
        assert len(resp.obs.data) == 0
        assert info(stub).sampled == 0


def test_waiting_sample_is_answered_once_min_size_is_reached(replay_server_factory):
    server = replay_server_factory(min_size=50)
    channel, stub = replay_stub(server.address)
    with channel:
        result = {}
        thread = threading.Thread(
            target=lambda: result.setdefault("r", sample(stub, batch_size=4, timeout_ms=60_000))
        )
        thread.start()
        # The Sample must really be waiting before the data arrives.
        assert wait_until(lambda: server.servicer.waiting_samplers == 1)
        for seq in range(1, 8):
            push(stub, make_batch(seq, (seq - 1) * 8, 8))
        thread.join(60)
        assert not thread.is_alive()
        assert result["r"].num_batches == 1
        assert len(row_ids(decode_sample(result["r"]))) == 4


def wait_until(condition, timeout: float = 60.0) -> bool:
    """Poll ``condition`` until true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- rate limiter (samples-per-insert band) over the wire ---------------------------
def spi_server(factory):
    return factory(
        min_size=8,
        samples_per_insert=1.0,
        spi_tolerance=16.0,
        learner={"batch_size": 8, "batches_per_call": 1},
        actors={"push_every": 8},
    )


def test_band_holds_back_a_fast_fleet_until_the_learner_samples(replay_server_factory):
    server = spi_server(replay_server_factory)
    channel, stub = replay_stub(server.address)
    with channel:
        push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8), make_batch(3, 16, 8))  # diff 16
        done, result = threading.Event(), {}

        def blocked_push():
            result["reply"] = push(stub, make_batch(4, 24, 8))  # would take diff to 24
            done.set()

        thread = threading.Thread(target=blocked_push)
        thread.start()
        try:
            held = wait_until(lambda: server.servicer.waiting_pushers == 1 or done.is_set())
            assert held and not done.is_set(), "push was not held back by the rate limiter"
            assert info(stub).inserted == 24
            assert sample(stub, batch_size=8).num_batches == 1  # diff 8: room for 8 more
            assert done.wait(60), "push not released after the learner sampled"
        finally:
            thread.join(60)
        assert result["reply"].accepted_batches == 1
        assert info(stub).inserted == 32


def test_duplicate_is_dropped_without_waiting_for_the_band(replay_server_factory):
    """A retried batch the server already holds is not an insert: answer at once."""
    server = spi_server(replay_server_factory)
    channel, stub = replay_stub(server.address)
    with channel:
        push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8), make_batch(3, 16, 8))  # diff 16
        try:
            reply = push(stub, make_batch(3, 16, 8), timeout=30.0)  # a retry of seq 3
        except grpc.RpcError as exc:
            pytest.fail(f"duplicate push held back by the rate limiter: {exc.code()}")
        assert (reply.accepted_batches, reply.duplicate_batches) == (0, 1)
        assert info(stub).inserted == 24


def test_band_holds_back_a_fast_learner(replay_server_factory):
    server = spi_server(replay_server_factory)
    channel, stub = replay_stub(server.address)
    with channel:
        push(stub, make_batch(1, 0, 8))  # reaches min_size: diff 0
        assert sample(stub, batch_size=8, num_batches=2).num_batches == 2  # diff -16
        resp = sample(stub, batch_size=8, timeout_ms=20)
        assert resp.num_batches == 0
        assert "samples-per-insert" in resp.reason
        push(stub, make_batch(2, 8, 8))
        assert sample(stub, batch_size=8).num_batches == 1


def test_pushers_held_back_by_the_band_do_not_starve_the_sampler(replay_server_factory):
    """A large fleet blocked by backpressure must not starve the server: the learner's
    Sample (which is what releases the fleet) and Info still get served at once."""
    server = spi_server(replay_server_factory)
    channel, stub = replay_stub(server.address)
    fleet = 100  # far more than the 32 threads of the synchronous server this replaced
    threads, outcomes = [], []
    try:
        push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8), make_batch(3, 16, 8))  # diff 16

        def actor(actor_id):
            ch, st = replay_stub(server.address)
            try:
                outcomes.append(
                    push(st, make_batch(1, 100 * actor_id, 8, actor_id=actor_id), timeout=30)
                )
            except grpc.RpcError as exc:
                outcomes.append(exc.code())
            finally:
                ch.close()

        threads = [threading.Thread(target=actor, args=(i,)) for i in range(10, 10 + fleet)]
        for t in threads:
            t.start()

        # wait until the fleet has arrived: every pusher waiting in the band or answered
        def arrived():
            return server.servicer.waiting_pushers + len(outcomes) >= fleet

        deadline = time.monotonic() + 60
        while not arrived() and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert arrived()
        assert server.servicer.waiting_pushers == fleet  # all held, none refused
        try:
            assert info(stub).size == 24
            resp = stub.Sample(pb.SampleRequest(batch_size=8, num_batches=1), timeout=30)
        except grpc.RpcError as exc:
            pytest.fail(f"Sample starved by {fleet} blocked pushers: {exc.code()}")
        assert resp.num_batches == 1
    finally:
        server.stop(grace=0.1)  # releases the pushers still waiting
        for t in threads:
            t.join(10)
        channel.close()
    assert len(outcomes) == fleet


# -- Sample arguments --------------------------------------------------------------
@pytest.mark.parametrize(
    "batch_size, num_batches, field",
    [
        (0, 1, "batch_size"),
        (1, 0, "num_batches"),
        (0, 0, "batch_size"),
        (1 << 11, 1 << 10, "batch_size * num_batches"),
    ],
)
def test_sample_argument_errors(stub, batch_size, num_batches, field):
    push(stub, make_batch(1, 0, 8))
    with pytest.raises(grpc.RpcError) as err:
        sample(stub, batch_size=batch_size, num_batches=num_batches)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")
    assert info(stub).sampled == 0


# -- duplicates --------------------------------------------------------------------
def test_duplicate_sequence_is_stored_once(stub):
    assert push(stub, make_batch(1, 0, 8)).accepted_batches == 1
    reply = push(stub, make_batch(1, 0, 8))  # a retry after a lost reply
    assert (reply.accepted_batches, reply.accepted_transitions, reply.duplicate_batches) == (
        0,
        0,
        1,
    )
    push(stub, make_batch(2, 8, 8))
    reply = push(stub, make_batch(2, 8, 8), make_batch(1, 0, 8), make_batch(3, 16, 8))
    assert (reply.accepted_batches, reply.duplicate_batches) == (1, 2)
    r = info(stub)
    assert (r.size, r.inserted, r.duplicate_batches) == (24, 24, 3)
    assert r.actors[0].last_sequence == 3
    ids = row_ids(decode_sample(sample(stub, batch_size=2000)))
    assert np.bincount(ids, minlength=24).min() > 0


def test_same_sequence_from_other_actor_is_not_a_duplicate(stub):
    push(stub, make_batch(1, 0, 8, actor_id=1))
    reply = push(stub, make_batch(1, 8, 8, actor_id=2))
    assert (reply.accepted_batches, reply.duplicate_batches) == (1, 0)
    assert info(stub).inserted == 16


def test_new_incarnation_restarts_sequences(stub):
    push(
        stub,
        make_batch(1, 0, 8, incarnation=111, actor_env_steps=100),
        make_batch(2, 8, 8, incarnation=111, actor_env_steps=200),
    )
    reply = push(stub, make_batch(1, 16, 8, incarnation=222, actor_env_steps=30))
    assert (reply.accepted_batches, reply.duplicate_batches) == (1, 0)
    assert push(stub, make_batch(1, 16, 8, incarnation=222)).duplicate_batches == 1
    r = info(stub)
    assert (r.inserted, r.duplicate_batches) == (24, 1)
    assert r.actors[0].last_sequence == 1
    assert r.env_steps == 230  # the earlier life's steps are kept


# -- concurrency -------------------------------------------------------------------
def test_concurrent_pushers(replay_server):
    threads_n, calls, per_call, rows = 8, 5, 4, 16
    start = threading.Barrier(threads_n)
    errors, replies = [], []

    def pusher(actor_id: int):
        channel, stub = replay_stub(replay_server.address)
        try:
            start.wait(60)
            seq = 0
            for _ in range(calls):
                batches = []
                for _ in range(per_call):
                    seq += 1
                    batches.append(
                        make_batch(
                            seq,
                            actor_id * 1000 + seq * rows,
                            rows,
                            actor_id=actor_id,
                            actor_env_steps=seq * rows,
                        )
                    )
                replies.append(push(stub, *batches))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            channel.close()

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(replies) == threads_n * calls
    total = threads_n * calls * per_call * rows
    assert sum(r.accepted_transitions for r in replies) == total
    channel, stub = replay_stub(replay_server.address)
    with channel:
        r = info(stub)
    assert (r.inserted, r.size, r.duplicate_batches, r.rejected_batches) == (total, 1000, 0, 0)
    assert sorted((a.actor_id, a.last_sequence) for a in r.actors) == [
        (i, calls * per_call) for i in range(threads_n)
    ]
    assert r.env_steps == threads_n * calls * per_call * rows


# -- health ------------------------------------------------------------------------
def test_health_serving(replay_server):
    with rpc.channel(replay_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    rpc.wait_ready(replay_server.address, timeout=5)


def test_batch_too_big_for_the_band_is_refused_not_parked(replay_server_factory):
    """A batch larger than the band could ever admit would wait forever (and its writer
    retry forever): it is refused at once, naming the limit, and nothing is stored."""
    server = replay_server_factory(
        samples_per_insert=8.0,
        spi_tolerance=2048.0,
        max_batch_transitions=4096,
        learner={"batch_size": 8, "batches_per_call": 1},
        actors={"push_every": 64},
    )
    channel, stub = replay_stub(server.address)
    try:
        with pytest.raises(grpc.RpcError) as err:
            push(stub, make_batch(1, 0, 600), timeout=5)  # 8 * 600 > 2 * 2048
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "can never pass the rate limiter band (at most 512 per batch" in (
            err.value.details()
        )
        assert info(stub).size == 0 and info(stub).rejected_batches == 1
        assert push(stub, make_batch(1, 0, 64)).accepted_transitions == 64
    finally:
        channel.close()


# -- bounded waiting, with a retry hint the clients honour -------------------------------
def test_pushers_past_the_waiting_bound_get_a_retry_hint_and_writers_retry(
    replay_server_factory,
):
    from actors.replay_client import GrpcReplayWriter
    from dqn.retry import is_retryable, retry_after

    server = spi_server(replay_server_factory)
    server.servicer.max_waiting_pushers = 2
    channel, stub = replay_stub(server.address)
    push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8), make_batch(3, 16, 8))  # band full
    writers = [GrpcReplayWriter(server.address, max_per_call=1) for _ in range(2)]
    try:
        for k, w in enumerate(writers):
            w.write(make_batch(1, 100 + 8 * k, 8, actor_id=10 + k))
        deadline = time.monotonic() + 60
        while server.servicer.waiting_pushers < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.servicer.waiting_pushers == 2
        with pytest.raises(grpc.RpcError) as err:  # a third pusher: refused at once
            push(stub, make_batch(1, 200, 8, actor_id=30))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "2 pushers wait already" in err.value.details()
        assert retry_after(err.value) == pytest.approx(0.2) and is_retryable(err.value)
        # A writer that is refused this way keeps retrying (it does not give up) ...
        late = GrpcReplayWriter(server.address, max_per_call=1)
        writers.append(late)
        late.write(make_batch(1, 300, 8, actor_id=40))
        # ... and everything lands once the learner samples enough to open the band.
        while info(stub).inserted < 48 and time.monotonic() < deadline + 60:
            sample(stub, batch_size=8)
        assert info(stub).inserted == 48
        assert all(w._error is None for w in writers)
    finally:
        for w in writers:
            w.close()
        channel.close()


def test_a_push_held_back_too_long_is_refused_with_a_retry_hint(replay_server_factory, monkeypatch):
    """The server bounds how long a push may wait in the band, whatever the client's
    own deadline (a client without one cannot hold a waiting place for ever)."""
    from dqn.retry import retry_after
    from replay_server import service

    monkeypatch.setattr(service, "MAX_PUSH_WAIT_S", 0.5)
    server = spi_server(replay_server_factory)
    channel, stub = replay_stub(server.address)
    with channel:
        push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8), make_batch(3, 16, 8))  # band full
        with pytest.raises(grpc.RpcError) as err:
            stub.Push(iter([pb.PushRequest(batch=make_batch(4, 24, 8))]))  # no deadline
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "held back 0.5 s without room" in err.value.details()
        assert retry_after(err.value) == pytest.approx(0.2)
        assert server.servicer.waiting_pushers == 0
        assert info(stub).inserted == 24
