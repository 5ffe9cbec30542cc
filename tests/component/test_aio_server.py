"""dqn.rpc.AioServer: a grpc.aio server on its own loop thread, with real calls on
127.0.0.1 (limits, stop, health, loop stalls, bind errors)."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqn import rpc
from dqn.security import MULTIPLE_TOKENS as MULTIPLE
from dqn.security import Security

pytestmark = pytest.mark.component

SERVICE = "test.Echo"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Behaviours:
    """Echo, a call that waits on an asyncio event, a stream, a loop-blocking call and
    one that blocks a worker thread."""

    def __init__(self):
        self.release: asyncio.Event | None = None  # made on the loop
        self.waiting = 0
        self.thread_gate = threading.Event()

    async def echo(self, request, context):
        return request

    async def wait(self, request, context):
        if self.release is None:
            self.release = asyncio.Event()
        self.waiting += 1
        try:
            await self.release.wait()
        finally:
            self.waiting -= 1
        return b"released"

    async def count(self, request, context):
        for i in range(int(request or b"3")):
            yield bytes([i])

    async def block_loop(self, request, context):
        time.sleep(float(request))  # deliberately on the loop: what take_loop_lag sees
        return b"done"

    async def in_thread(self, request, context):
        await asyncio.to_thread(self.thread_gate.wait, 30)
        return b"thread done"

    def handler(self) -> grpc.GenericRpcHandler:
        u = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": u(self.echo),
                "Wait": u(self.wait),
                "Count": grpc.unary_stream_rpc_method_handler(self.count),
                "BlockLoop": u(self.block_loop),
                "InThread": u(self.in_thread),
            },
        )


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    idle = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        idle.wait(0.01)
    return True


@pytest.fixture
def served():
    """An AioServer with the test behaviours (limit 3 open calls, Echo exempt)."""
    b = Behaviours()
    server = rpc.AioServer(
        health_services=(SERVICE,),
        max_open_calls=3,
        exempt_methods=(f"/{SERVICE}/Echo",),
        name="test-aio",
    )
    server.add_handlers(b.handler())
    server.start("127.0.0.1", 0)
    ch = rpc.channel(f"127.0.0.1:{server.port}")
    yield server, b, ch
    b.thread_gate.set()
    ch.close()
    server.stop(0.2)


def health(ch, service: str = "") -> int:
    return (
        health_pb2_grpc.HealthStub(ch)
        .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        .status
    )


def test_unary_and_stream_behaviours_and_health(served):
    server, _, ch = served
    assert server.running and server.port > 0
    assert ch.unary_unary(f"/{SERVICE}/Echo")(b"hi", timeout=5) == b"hi"
    assert list(ch.unary_stream(f"/{SERVICE}/Count")(b"4", timeout=5)) == [
        b"\0",
        b"\1",
        b"\2",
        b"\3",
    ]
    assert health(ch) == SERVING and health(ch, SERVICE) == SERVING


def test_open_call_limit_refuses_with_a_retry_hint_and_spares_health_and_exempt(served):
    server, b, ch = served
    waits = [ch.unary_unary(f"/{SERVICE}/Wait").future(b"", timeout=30) for _ in range(3)]
    assert wait_until(lambda: b.waiting == 3)
    with pytest.raises(grpc.RpcError) as err:
        ch.unary_unary(f"/{SERVICE}/Count")(b"1", timeout=5).__next__()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == "server busy: 3 calls open, the limit; retry in 1 s"
    assert rpc.retry_after(err.value) == 1.0
    assert server.limit.refused == 1 and server.limit.open == 3
    # probes and exempt methods still answer while the limit is reached
    assert health(ch, SERVICE) == SERVING
    assert ch.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=5) == b"x"
    server.call(b.release.set)
    assert [w.result(timeout=10) for w in waits] == [b"released"] * 3
    assert wait_until(lambda: server.limit.open == 0)
    assert list(ch.unary_stream(f"/{SERVICE}/Count")(b"1", timeout=5)) == [b"\0"]


def test_work_in_a_thread_leaves_the_loop_free(served):
    server, b, ch = served
    blocked = ch.unary_unary(f"/{SERVICE}/InThread").future(b"", timeout=30)
    assert wait_until(
        lambda: any(t.name.startswith("test-aio-work") for t in threading.enumerate())
    )
    # The loop answers while the worker blocks (it blocks until the gate opens, so a
    # loop it held would miss these calls' deadlines: no speed assumption needed).
    assert health(ch, SERVICE) == SERVING
    assert ch.unary_unary(f"/{SERVICE}/Echo")(b"y", timeout=5) == b"y"
    assert not blocked.done()
    b.thread_gate.set()
    assert blocked.result(timeout=10) == b"thread done"


def test_loop_lag_probe_sees_a_call_that_blocks_the_loop(served):
    server, _, ch = served
    server.take_loop_lag()
    assert ch.unary_unary(f"/{SERVICE}/BlockLoop")(b"0.3", timeout=10) == b"done"
    assert wait_until(lambda: server._lag_max >= 0.25)  # probe wakes after the block
    assert server.take_loop_lag() >= 0.25
    assert server.take_loop_lag() < 0.25  # reset by the read


def test_stop_turns_health_off_runs_hooks_gives_grace_then_cancels_and_is_idempotent():
    b = Behaviours()
    server = rpc.AioServer(health_services=(SERVICE,), name="test-aio-stop")
    server.add_handlers(b.handler())
    seen = {}

    def hook():
        seen["health"] = server.health._server_status[SERVICE]
        seen["thread"] = threading.current_thread().name

    server.on_stop(hook)
    port = server.start("127.0.0.1", 0)
    with rpc.channel(f"127.0.0.1:{port}") as ch:
        pending = ch.unary_unary(f"/{SERVICE}/Wait").future(b"", timeout=30)
        assert wait_until(lambda: b.waiting == 1)
        t0 = time.monotonic()
        server.stop(0.5)
        took = time.monotonic() - t0
        with pytest.raises(grpc.RpcError) as err:
            pending.result(timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # cancelled after the grace
    assert seen == {"health": NOT_SERVING, "thread": "test-aio-stop"}
    assert 0.4 <= took < 0.5 + rpc.STOP_SLACK_S
    assert not server.running and not server._thread.is_alive()
    assert server.loop.is_closed()
    server.stop(0.5)  # idempotent
    with pytest.raises(RuntimeError, match="after stop"):
        server.start("127.0.0.1", 0)


def test_a_port_in_use_is_an_oserror_and_leaves_no_thread():
    first = rpc.AioServer(name="test-aio-first")
    port = first.start("127.0.0.1", 0)
    try:
        second = rpc.AioServer(name="test-aio-second")
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}"):
            second.start("127.0.0.1", port)
        assert not second._thread.is_alive()
    finally:
        first.stop(0)


def test_sync_behaviours_are_refused_at_call_time():
    """Behaviours must be coroutines: a plain function would run on the loop thread
    unseen; it is a programming error, reported as one."""
    server = rpc.AioServer(name="test-aio-sync")

    def plain(request, context):
        return request

    server.add_handlers(
        grpc.method_handlers_generic_handler(
            SERVICE, {"Plain": grpc.unary_unary_rpc_method_handler(plain)}
        )
    )
    port = server.start("127.0.0.1", 0)
    try:
        with rpc.channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as err:
            ch.unary_unary(f"/{SERVICE}/Plain")(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNKNOWN
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing token"),
        ((("authorization", "Bearer wrong"),), "invalid token"),
        ((("authorization", "Bearer wrong"), ("authorization", "Bearer tok")), MULTIPLE),
        ((("authorization", "Bearer tok"), ("authorization", "Bearer tok")), MULTIPLE),
    ],
)
def test_token_rule_on_the_aio_server(metadata, message):
    server = rpc.AioServer(security=Security(token="tok"), name="test-aio-token")
    server.add_handlers(Behaviours().handler())
    port = server.start("127.0.0.1", 0)
    try:
        with rpc.channel(f"127.0.0.1:{port}") as ch:
            echo = ch.unary_unary(f"/{SERVICE}/Echo")
            assert echo(b"in", timeout=5, metadata=(("authorization", "Bearer tok"),)) == b"in"
            for call in (
                lambda: echo(b"", timeout=5, metadata=metadata),
                lambda: next(
                    ch.unary_stream(f"/{SERVICE}/Count")(b"1", timeout=5, metadata=metadata)
                ),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert err.value.details() == message
            assert health(ch) == SERVING  # health needs no token
    finally:
        server.stop(0)


def test_health_streams_have_a_pool_of_their_own_and_cannot_crowd_out_calls():
    """Token-less health Watch streams past their own cap are refused with a hint;
    ordinary calls keep their room (grpc's hard cap is never what refuses them)."""
    b = Behaviours()
    server = rpc.AioServer(
        health_services=(SERVICE,), max_open_calls=3, health_calls=4, name="test-aio"
    )
    server.add_handlers(b.handler())
    server.start("127.0.0.1", 0)
    ch = rpc.channel(f"127.0.0.1:{server.port}")
    watch = ch.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    streams = []
    try:
        for _ in range(4):
            streams.append(watch(health_pb2.HealthCheckRequest(), timeout=30))
            assert next(streams[-1]).status == SERVING
        extra = watch(health_pb2.HealthCheckRequest(), timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            next(extra)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details().startswith("server busy: 4 health calls open")
        assert rpc.retry_after(err.value) == 1.0
        # ordinary calls still have all their room
        assert ch.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=5) == b"x"
        assert server.limit.health.refused == 1 and server.limit.refused == 0
    finally:
        for stream in streams:
            stream.cancel()
        b.thread_gate.set()
        ch.close()
        server.stop(0.2)
