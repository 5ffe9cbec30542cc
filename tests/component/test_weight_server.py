"""The weight server at fleet size: hundreds of WatchWeights streams on one server, slow
and stalled subscribers, the broadcast counters. Real servers on 127.0.0.1, protocol-level
``grpc.aio`` clients (many streams in this one process)."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqn import rpc
from dqn import weights as weights_codec
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from learner.weight_server import SERVICE_NAME, WeightServer

pytestmark = pytest.mark.component

DEADLINE_S = 120.0  # generous: waits end as soon as their condition holds


def cartpole_state(version: int) -> dict[str, torch.Tensor]:
    """A CartPole-sized MLP (4-64-64-2, ~4.7k parameters, ~19 KB on the wire)."""
    shapes = {"0.weight": (64, 4), "0.bias": (64,), "2.weight": (64, 64), "2.bias": (64,)}
    shapes |= {"4.weight": (2, 64), "4.bias": (2,)}
    return {k: torch.full(s, float(version)) for k, s in shapes.items()}


def big_state(version: int, mib: float = 1.0) -> dict[str, torch.Tensor]:
    return {"w": torch.full((int(mib * (1 << 18)),), float(version))}


async def wait_for(predicate, what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def aio_channels(address: str, n: int) -> list[grpc.aio.Channel]:
    return [grpc.aio.insecure_channel(address, options=rpc.channel_options()) for _ in range(n)]


class Probe(threading.Thread):
    """GetWeights and health, back to back on their own channel and thread, while the
    streams run; keeps the slowest answer of each."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.address = address
        self.stop = threading.Event()
        self.worst = {"GetWeights": 0.0, "health": 0.0}
        self.calls = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with rpc.channel(self.address) as ch:
            weights = pb_grpc.WeightServiceStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            calls = {
                "GetWeights": lambda: weights.GetWeights(pb.GetWeightsRequest(), timeout=10),
                "health": lambda: health.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
                ),
            }
            while not self.stop.is_set():
                for name, call in calls.items():
                    t0 = time.monotonic()
                    try:
                        call()
                    except grpc.RpcError as exc:
                        self.errors.append(f"{name}: {exc.code()}")
                    self.worst[name] = max(self.worst[name], time.monotonic() - t0)
                self.calls += 1
                self.stop.wait(0.02)


def test_hundreds_of_streams_all_get_every_version_while_probes_answer_fast():
    """256 open WatchWeights streams on one server (the old one, with a thread per
    stream, served 32 and starved GetWeights), 6 versions published: every stream
    ends on the newest version, having received each version or a newer one, with
    versions increasing; GetWeights and health answer within a second all along; the
    server does not start a thread per stream."""
    streams, channels, versions = 256, 16, 6
    server = WeightServer("127.0.0.1", 0)
    server.start()
    server.publisher.publish(cartpole_state(1))
    probe = Probe(server.address)
    received: list[list[int]] = [[] for _ in range(streams)]
    errors: list[str] = []

    async def subscriber(stub, got: list[int]) -> None:
        try:
            # renewing like GrpcWeightClient: a stream ends (OK) after stream_seconds
            while not got or got[-1] < versions:
                call = stub.WatchWeights(
                    pb.WatchWeightsRequest(after_version=got[-1] if got else 0),
                    timeout=DEADLINE_S,
                )
                async for msg in call:
                    got.append(msg.version)
                    if msg.version >= versions:
                        break
                call.cancel()
        except grpc.RpcError as exc:
            errors.append(str(exc.code()))

    async def scenario() -> dict:
        chans = aio_channels(server.address, channels)
        stubs = [pb_grpc.WeightServiceStub(c) for c in chans]
        threads_before = threading.active_count()
        tasks = [
            asyncio.ensure_future(subscriber(stubs[i % channels], received[i]))
            for i in range(streams)
        ]
        await wait_for(lambda: all(received), "every stream's first version")
        open_streams = server.publisher.subscribers
        threads_open = threading.active_count()
        probe.start()
        for v in range(2, versions + 1):
            await asyncio.to_thread(server.publisher.publish, cartpole_state(v))
            await wait_for(lambda v=v: all(r[-1] >= v for r in received), f"version {v}")
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
        probe.stop.set()
        for c in chans:
            await c.close()
        return {"open": open_streams, "threads": (threads_before, threads_open)}

    try:
        seen = asyncio.run(scenario())
        probe.join(30)
        publisher = server.publisher
        assert seen["open"] == streams
        assert errors == [] and probe.errors == []
        for got in received:
            assert got[-1] == versions and got == sorted(set(got)), got
        assert probe.calls > 0
        assert probe.worst["GetWeights"] < 1.0 and probe.worst["health"] < 1.0, probe.worst
        before, during = seen["threads"]
        assert during - before < 8, f"threads {before} -> {during} with {streams} streams"
        newest = weights_codec.to_proto(cartpole_state(versions), versions)
        assert publisher.message_bytes == newest.ByteSize()
        assert publisher.publish_bytes == streams * publisher.message_bytes
        assert publisher.versions_sent >= streams * 2  # the first and the last, at least
    finally:
        probe.stop.set()
        server.stop(0.5)


def test_a_subscriber_that_stops_reading_skips_versions_and_delays_no_one():
    """One stream stops reading while 40 versions of 4 MiB are published, far more than
    the pipe to it holds (HTTP/2 windows and socket buffers: here up to ~40 MB, the
    kernel's tcp_rmem max is 32 MB). The 4 others get every version before the next is
    published; when the slow one reads again it gets what the pipe held, then the
    newest, never the backlog; the server counts what it skipped."""
    fast_n, published, mib = 4, 40, 4.0
    server = WeightServer("127.0.0.1", 0)
    server.start()
    server.publisher.publish(big_state(1, mib))

    async def scenario() -> tuple[list[list[int]], list[int]]:
        chans = aio_channels(server.address, 3)
        stub = [pb_grpc.WeightServiceStub(c) for c in chans]
        slow = stub[0].WatchWeights(pb.WatchWeightsRequest(), timeout=DEADLINE_S)
        slow_got = [(await slow.read()).version]
        fast = [[] for _ in range(fast_n)]

        async def reader(i: int) -> None:
            call = stub[1 + i % 2].WatchWeights(pb.WatchWeightsRequest(), timeout=DEADLINE_S)
            async for msg in call:
                fast[i].append(msg.version)
                if msg.version == published:
                    return

        tasks = [asyncio.ensure_future(reader(i)) for i in range(fast_n)]
        await wait_for(lambda: all(fast), "the fast streams' first version")
        for v in range(2, published + 1):
            await asyncio.to_thread(server.publisher.publish, big_state(v, mib))
            await wait_for(lambda v=v: all(f[-1] == v for f in fast), f"fast streams at {v}")
        await asyncio.gather(*tasks)
        while slow_got[-1] < published:  # the slow one reads again
            slow_got.append((await slow.read()).version)
        slow.cancel()
        for c in chans:
            await c.close()
        return fast, slow_got

    try:
        fast, slow_got = asyncio.run(scenario())
        for got in fast:
            assert got == list(range(1, published + 1))  # every version, none skipped
        assert slow_got[-1] == published and slow_got == sorted(set(slow_got))
        assert len(slow_got) < published // 2, slow_got  # skipped, no backlog
        assert server.publisher.versions_skipped == published - len(slow_got)
    finally:
        server.stop(0.5)


def test_a_stalled_subscriber_is_ended_with_unavailable():
    """A client that stops reading holds its stream only until one write has waited
    ``stall_seconds``; it then gets UNAVAILABLE (and reconnects, like GrpcWeightClient)."""
    server = WeightServer("127.0.0.1", 0, stall_seconds=0.5)
    server.start()
    server.publisher.publish(big_state(1, 4.0))

    async def scenario():
        async with grpc.aio.insecure_channel(server.address, options=rpc.channel_options()) as ch:
            stub = pb_grpc.WeightServiceStub(ch)
            stalled = stub.WatchWeights(pb.WatchWeightsRequest(), timeout=DEADLINE_S)
            assert (await stalled.read()).version == 1
            v, deadline = 1, time.monotonic() + DEADLINE_S
            while server.publisher.stalled == 0:  # publish until the pipe is full
                assert time.monotonic() < deadline, "no write ever stalled"
                v += 1
                await asyncio.to_thread(server.publisher.publish, big_state(v, 4.0))
                await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                while True:
                    await stalled.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            details = err.value.details()
            assert details.startswith("weights stream stalled: version "), details
            assert details.endswith(" not read in 0.5 s; reconnect"), details
        await wait_for(lambda: server.publisher.subscribers == 0, "the stream closed")

    try:
        asyncio.run(scenario())
        assert server.publisher.stalled == 1
    finally:
        server.stop(0.5)


def test_a_quiet_stream_ends_with_ok_after_its_lifetime_and_renews():
    """No stream outlives ``stream_seconds``: it ends with OK (before the clients' own
    deadline), and a renewed stream with ``after_version`` resends nothing old."""
    server = WeightServer("127.0.0.1", 0, stream_seconds=0.3)
    server.start()
    server.publisher.publish(big_state(1, 0.01))

    async def scenario():
        async with grpc.aio.insecure_channel(server.address, options=rpc.channel_options()) as ch:
            stub = pb_grpc.WeightServiceStub(ch)
            first = stub.WatchWeights(pb.WatchWeightsRequest(), timeout=DEADLINE_S)
            assert [m.version async for m in first] == [1]  # then the lifetime ends it
            assert await first.code() == grpc.StatusCode.OK
            renewed = stub.WatchWeights(pb.WatchWeightsRequest(after_version=1), timeout=DEADLINE_S)
            assert [m async for m in renewed] == []
            assert await renewed.code() == grpc.StatusCode.OK
        await wait_for(lambda: server.publisher.subscribers == 0, "streams closed")

    try:
        asyncio.run(scenario())
    finally:
        server.stop(0.5)


def test_a_busy_stream_ends_after_its_lifetime_too():
    """With a newer version after every write the stream never waits; its lifetime
    must still end it (OK), long before the client's own deadline."""
    server = WeightServer("127.0.0.1", 0, stream_seconds=0.5)
    server.start()
    stop = threading.Event()

    def publish_fast():
        while not stop.is_set():
            server.publisher.publish(big_state(1, 0.01))
            time.sleep(0.002)

    publisher = threading.Thread(target=publish_fast)
    try:
        server.publisher.publish(big_state(1, 0.01))
        publisher.start()
        with rpc.channel(server.address) as ch:
            call = pb_grpc.WeightServiceStub(ch).WatchWeights(
                pb.WatchWeightsRequest(), timeout=DEADLINE_S
            )
            t0 = time.monotonic()
            received = sum(1 for _ in call)
            took = time.monotonic() - t0
            assert call.code() == grpc.StatusCode.OK
        assert received > 1
        # Ended by its lifetime (0.5 s), not by the client's deadline.
        assert took < DEADLINE_S / 2, took
    finally:
        stop.set()
        publisher.join(10)
        server.stop(0.5)


def test_clients_vanishing_mid_write_end_their_streams_quietly(caplog):
    """Subscribers cancelled while large weights are being written to them: each stream
    ends without grpc's 'ExecuteBatchError raised in core' traceback in the log, and
    the server counts them and holds no subscriber afterwards."""
    server = WeightServer("127.0.0.1", 0)
    server.start()
    state = {"w": torch.randn(2_000_000)}  # 8 MB: writes take long enough to be cut
    stop = threading.Event()

    def publish_fast():
        while not stop.is_set():
            server.publisher.publish(state)
            time.sleep(0.01)

    publisher = threading.Thread(target=publish_fast)
    try:
        server.publisher.publish(state)
        publisher.start()
        with caplog.at_level("ERROR"):
            for _ in range(20):
                with rpc.channel(server.address) as ch:
                    call = pb_grpc.WeightServiceStub(ch).WatchWeights(
                        pb.WatchWeightsRequest(), timeout=30
                    )
                    try:
                        for k, _msg in enumerate(call):
                            if k == 1:
                                call.cancel()
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.CANCELLED
            stop.set()
            publisher.join(10)
            deadline = time.monotonic() + 30
            while server.publisher.subscribers and time.monotonic() < deadline:
                time.sleep(0.05)
        assert server.publisher.subscribers == 0
        noise = [r.getMessage() for r in caplog.records if "ExecuteBatchError" in r.getMessage()]
        assert not noise, noise
    finally:
        stop.set()
        server.stop(0.5)
