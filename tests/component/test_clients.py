"""Real clients against real servers: GrpcReplayWriter, GrpcWeightClient + WeightServer,
PrefetchingSampler."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actors.replay_client import GrpcReplayWriter, ReplayWriterError
from actors.weight_client import GrpcWeightClient
from dqn import rpc
from dqn import weights as weights_codec
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from learner.sampler import PrefetchingSampler
from learner.weight_server import SERVICE_NAME as WEIGHTS_SERVICE
from tests.component._helpers import columns_for, info, make_batch, push, replay_stub

pytestmark = pytest.mark.component


def wait_until(predicate, timeout: float = 30.0, poll: float = 0.01) -> bool:
    """Poll ``predicate`` (no event to wait on) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    idle = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        idle.wait(poll)
    return True


# -- GrpcReplayWriter --------------------------------------------------------------
def test_writer_delivers_everything_and_close_flushes(replay_server):
    writer = GrpcReplayWriter(replay_server.address, max_pending=8, max_per_call=3)
    for seq in range(1, 8):
        writer.write(make_batch(seq, (seq - 1) * 10, 10, actor_id=4))
    writer.close()
    assert (writer.pushed_batches, writer.pushed_transitions) == (7, 70)
    channel, stub = replay_stub(replay_server.address)
    with channel:
        r = info(stub)
    assert (r.inserted, r.size, r.duplicate_batches) == (70, 70, 0)
    assert [(a.actor_id, a.last_sequence) for a in r.actors] == [(4, 7)]


def test_writer_close_flushes_a_full_queue_under_backpressure(replay_server):
    """close() must deliver what was written even when the queue is full at that moment
    (the server is applying backpressure)."""
    max_pending = 4
    writer = GrpcReplayWriter(replay_server.address, max_pending=max_pending, max_per_call=1)
    closer = threading.Thread(target=writer.close, kwargs={"timeout": 30.0})
    # close() is caught in the act: waiting for room in the full queue.
    blocked = threading.Event()
    wait_for_room = writer._queue.not_full.wait

    def spy_wait(*args, **kwargs):
        blocked.set()
        return wait_for_room(*args, **kwargs)

    with replay_server.servicer.lock:  # the server stalls every Push before storing
        # the sender takes batch 1 and blocks in Push; the next max_pending fill the queue
        for seq in range(1, max_pending + 2):
            writer.write(make_batch(seq, (seq - 1) * 10, 10))
        assert writer._queue.full()
        writer._queue.not_full.wait = spy_wait  # from now on only close() waits for room
        closer.start()
        # Release the server only once close() waits on the full queue (or has given up
        # on it), however long the thread takes to get there.
        assert wait_until(lambda: blocked.is_set() or writer._closed.is_set())
    closer.join(40)
    assert not closer.is_alive()
    channel, stub = replay_stub(replay_server.address)
    with channel:
        inserted = info(stub).inserted
    assert inserted == (max_pending + 1) * 10, (
        f"close() dropped {(max_pending + 1) * 10 - inserted} queued transitions"
    )


def test_close_keeps_retrying_the_last_message_until_it_lands(replay_server_factory):
    """The last message is retried like any other while close() has time left: a
    replay server that is not up yet when the actor closes still gets every batch."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on yet
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # a long linger: the sender wakes only for close(), and drains the batches and
    # close()'s marker together, so it is draining when its push fails
    writer = GrpcReplayWriter(f"127.0.0.1:{port}", linger_s=30.0)
    for seq in range(1, 4):
        writer.write(make_batch(seq, (seq - 1) * 10, 10, actor_id=6))
    closer = threading.Thread(target=writer.close, kwargs={"timeout": 60.0})
    closer.start()
    assert wait_until(writer._queue.empty)  # the marker taken: the sender is draining
    server = replay_server_factory(port=port)
    closer.join(90)
    assert not closer.is_alive()
    assert (writer.pushed_batches, writer.dropped_at_stop) == (3, 0)
    channel, stub = replay_stub(server.address)
    with channel:
        assert info(stub).inserted == 30


def test_a_stopping_writer_does_not_wait_on_backpressure(replay_server):
    """An actor told to stop while the server holds pushes back (its rate limiter once
    the learner stopped sampling) drops what cannot be queued and closes without
    waiting out the flush timeout: stopping a fleet must not hang on the limiter."""
    stop = threading.Event()
    writer = GrpcReplayWriter(replay_server.address, max_pending=2, max_per_call=1, stop=stop)
    with replay_server.servicer.lock:  # the server stalls every Push
        for seq in range(1, 4):  # one in the sender's Push, two fill the queue
            writer.write(make_batch(seq, (seq - 1) * 10, 10))
        assert wait_until(writer._queue.full)
        stop.set()
        writer.write(make_batch(4, 30, 10))  # returns: dropped, not waited for
        assert writer.dropped_at_stop == 1
        closer = threading.Thread(target=writer.close, kwargs={"timeout": 120.0})
        closer.start()
        # close() gives up on the stalled server by itself, long before its timeout
        closer.join(60)
        assert not closer.is_alive()


def test_writer_surfaces_non_retryable_refusal(replay_server):
    writer = GrpcReplayWriter(replay_server.address)
    try:
        writer.write(make_batch(0, 0, 4))  # sequence 0 is invalid
        writer._thread.join(10)  # the sender stops on a non-retryable error
        assert not writer._thread.is_alive()
        with pytest.raises(ReplayWriterError, match=r"batches\[0\]\.sequence: must be >= 1"):
            writer.write(make_batch(1, 0, 4))
    finally:
        writer.close()


# -- WeightServer + GrpcWeightClient -----------------------------------------------
def state_for(version: int, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, float(version)) for k, v in net.state_dict().items()}


def small_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_get_weights_before_any_publish_is_unavailable(weight_server):
    with rpc.channel(weight_server.address) as channel:
        stub = pb_grpc.WeightServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetWeights(pb.GetWeightsRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_publish_versions_and_get_weights_returns_newest(weight_server):
    net = small_net()
    versions = [
        weight_server.publisher.publish(state_for(v, net), updates=10 * v) for v in range(1, 6)
    ]
    assert versions == [1, 2, 3, 4, 5]
    with rpc.channel(weight_server.address) as channel:
        msg = pb_grpc.WeightServiceStub(channel).GetWeights(pb.GetWeightsRequest(), timeout=5)
    assert (msg.version, msg.updates) == (5, 50)
    state = weights_codec.from_proto(msg)
    assert set(state) == set(net.state_dict())
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32
        assert tensor.shape == net.state_dict()[name].shape
        assert torch.all(tensor == 5.0)


def test_watch_weights_latest_wins_no_backlog(weight_server):
    net = small_net()
    for v in range(1, 6):
        weight_server.publisher.publish(state_for(v, net))
    with rpc.channel(weight_server.address) as channel:
        stream = pb_grpc.WeightServiceStub(channel).WatchWeights(
            pb.WatchWeightsRequest(after_version=0), timeout=10
        )
        try:
            first = next(stream)
            assert first.version == 5  # not 1: the backlog was skipped
            weight_server.publisher.publish(state_for(6, net))
            second = next(stream)
            assert second.version == 6
            assert torch.all(weights_codec.from_proto(second)["0.weight"] == 6.0)
        finally:
            stream.cancel()


def test_watch_weights_after_version_waits_for_newer(weight_server):
    net = small_net()
    for v in range(1, 4):
        weight_server.publisher.publish(state_for(v, net))
    with rpc.channel(weight_server.address) as channel:
        stream = pb_grpc.WeightServiceStub(channel).WatchWeights(
            pb.WatchWeightsRequest(after_version=3), timeout=10
        )
        try:
            weight_server.publisher.publish(state_for(4, net))
            assert next(stream).version == 4
        finally:
            stream.cancel()


def test_weight_client_ends_with_newest(weight_server):
    net, publisher = small_net(), weight_server.publisher
    client = GrpcWeightClient(weight_server.address)
    try:
        assert client.update(net) is False  # nothing published yet
        assert client.version == 0
        for v in range(1, 6):  # quickly: the client may see any subset, but must end at 5
            publisher.publish(state_for(v, net))
        loaded = []

        def got_newest():
            if client.update(net):
                loaded.append(client.version)
            return client.version == 5

        assert wait_until(got_newest), f"client stuck at version {client.version}"
        assert loaded == sorted(set(loaded)) and loaded[-1] == 5
        for p in net.parameters():
            assert torch.all(p == 5.0)
        assert client.update(net) is False  # nothing new
        assert client.version == 5
        publisher.publish(state_for(6, net))
        assert wait_until(lambda: client.update(net))
        assert client.version == 6
        assert all(torch.all(p == 6.0) for p in net.parameters())
    finally:
        client.close()


def test_weight_client_joining_late_gets_only_newest(weight_server):
    net = small_net()
    for v in range(1, 6):
        weight_server.publisher.publish(state_for(v, net))
    client = GrpcWeightClient(weight_server.address)
    try:
        assert wait_until(lambda: client.update(net))
        assert client.version == 5
        assert client.update(net) is False
    finally:
        client.close()


def test_health_serving_on_both_servers(replay_server, weight_server):
    for address, name in (
        (replay_server.address, "dqn.v1.ReplayService"),
        (weight_server.address, WEIGHTS_SERVICE),
    ):
        with rpc.channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", name):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (address, service)


# -- PrefetchingSampler ------------------------------------------------------------
EXPECTED_DTYPES = {
    "obs": torch.float32,
    "action": torch.int64,
    "reward": torch.float32,
    "next_obs": torch.float32,
    "terminated": torch.bool,
    "discount": torch.float32,
}


def test_prefetching_sampler_yields_batches(replay_server_factory):
    server = replay_server_factory(min_size=64)
    sampler = PrefetchingSampler(
        server.address, batch_size=16, batches_per_call=4, depth=2, device=torch.device("cpu")
    )
    try:
        assert sampler.next(timeout=0.1) is None  # below min_size: nothing yet
        channel, stub = replay_stub(server.address)
        with channel:
            push(stub, *[make_batch(s, (s - 1) * 16, 16) for s in range(1, 5)])
            for _ in range(10):  # spans several Sample calls
                batch = sampler.next(timeout=10)
                assert batch is not None
                assert set(batch) == set(EXPECTED_DTYPES)
                for name, dtype in EXPECTED_DTYPES.items():
                    assert batch[name].dtype == dtype, name
                    assert batch[name].shape[0] == 16, name
                assert batch["obs"].shape == (16, 4) and batch["next_obs"].shape == (16, 4)
                ids = batch["obs"][:, 0].numpy().astype(np.int64)
                assert set(ids.tolist()) <= set(range(64))
                ref = columns_for(ids)
                for name in EXPECTED_DTYPES:
                    np.testing.assert_array_equal(batch[name].numpy(), ref[name])
            assert info(stub).sampled >= 10 * 16
    finally:
        sampler.close()


def test_prefetching_sampler_raises_non_retryable_errors(replay_server):
    sampler = PrefetchingSampler(
        replay_server.address, batch_size=0, batches_per_call=1, depth=1, device=torch.device("cpu")
    )
    try:
        with pytest.raises(grpc.RpcError) as err:
            sampler.next(timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        sampler.close()
