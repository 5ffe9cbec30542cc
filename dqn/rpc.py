"""gRPC plumbing every server and client shares: options, health, addresses, readiness.

Servers are :class:`AioServer`: a ``grpc.aio`` server on an event-loop thread of its
own, so an open stream or a waiting call costs a coroutine, not a thread (decision 23
in ``docs/decisions.md``). Its behaviours are coroutine functions and run on that one
loop: CPU-bound work longer than a call's own share goes to ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqn.files import atomic_write_text
from dqn.security import (
    OPEN_METHODS_PREFIX,
    Security,
    handler_like,
    secure_channel,
    server_credentials,
    server_interceptors,
)

log = logging.getLogger("dqn.rpc")

MiB = 1 << 20
# Server-side limits of an AioServer (see AioServer's docstring).
MAX_OPEN_CALLS = 4096  # calls open at once, health and exempt methods aside
HEALTH_CALLS = 256  # health calls (Check, Watch streams) open at once, a pool of their own
EXEMPT_CALLS = 256  # calls of a server's exempt methods (the learner's) open at once
IDLE_CONNECTION_MS = 300_000  # close a connection with no call open for 5 minutes
RETRY_AFTER_KEY = "retry-after-ms"  # trailing metadata: when a refused call may retry
BUSY_RETRY_MS = 1_000
MAX_RETRY_AFTER_S = 30.0  # the longest a server's retry hint can make a client wait
STOP_SLACK_S = 5.0  # how long stop() waits past the grace before giving up on the loop


def channel_options(max_message_mb: int = 64) -> list[tuple[str, int]]:
    size = max_message_mb * MiB
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Reconnect within a second or two after a server restart; gRPC's default
        # backoff grows to 120 s, which would stall a fleet long after recovery.
        # Not grpc.min_reconnect_backoff_ms: C-core also takes it as the connect
        # timeout, and at 100 ms a busy server's first SETTINGS frame came too late
        # ("connection attempt timed out before receiving SETTINGS frame").
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def server_options(max_message_mb: int = 64) -> list[tuple[str, int]]:
    return [
        *channel_options(max_message_mb),
        ("grpc.so_reuseport", 0),
        # Accept the clients' 20 s keepalive pings even on idle channels; the default
        # (one per 5 min) answers them with GOAWAY "too_many_pings".
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        # and never close a transport over pings: an idle client's keepalives are
        # not an attack worth a GOAWAY that fails its next call.
        ("grpc.http2.max_ping_strikes", 0),
    ]


def bind(server, host: str, port: int, security: Security | None = None) -> int:
    """Bind ``host:port`` (port 0 picks a free one), with TLS if configured; the port."""
    address = f"{host}:{port}"
    try:
        if security is not None and security.cert_pem is not None:
            bound = server.add_secure_port(address, server_credentials(security))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # newer grpc raises instead of returning 0
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return bound


def retry_after(err: grpc.RpcError) -> float | None:
    """Seconds a server asked the client to wait before retrying (``retry-after-ms``
    trailing metadata), or None when it gave no hint."""
    for key, value in getattr(err, "trailing_metadata", lambda: None)() or ():
        if key == RETRY_AFTER_KEY:
            with contextlib.suppress(ValueError):  # at most MAX_RETRY_AFTER_S: a bad
                return min(max(0.0, int(value) / 1000), MAX_RETRY_AFTER_S)  # hint is no hang
    return None


class _Pool:
    """Calls of one kind open now, against their own cap."""

    def __init__(self, what: str, limit: int):
        if limit < 1:
            raise ValueError(f"{what}: must be >= 1, got {limit}")
        self.what, self.limit, self.open, self.refused = what, limit, 0, 0


class CallLimit(grpc.aio.ServerInterceptor):
    """Caps on open calls, each refused past its cap at once with ``RESOURCE_EXHAUSTED``
    and a ``retry-after-ms`` hint: at most ``limit`` ordinary calls, and separate,
    smaller pools for health (``health_limit``) and for the ``exempt`` methods (full
    names, ``/pkg.Service/Method``; ``exempt_limit``). A fleet that fills its pool
    therefore never locks out probes or the learner's own calls, and no pool can
    reach gRPC's own hard cap (their sum), which refuses with no hint. Runs on the
    loop: the counts need no lock."""

    def __init__(
        self,
        limit: int,
        exempt: tuple[str, ...] = (),
        exempt_limit: int = EXEMPT_CALLS,
        health_limit: int = HEALTH_CALLS,
    ):
        self.calls = _Pool("max_open_calls", limit)
        self.health = _Pool("health calls", health_limit)
        self.learner = _Pool("exempt calls", exempt_limit)
        self.exempt = frozenset(exempt)

    @property
    def limit(self) -> int:
        return self.calls.limit

    @property
    def open(self) -> int:
        return self.calls.open

    @property
    def refused(self) -> int:
        return self.calls.refused

    @property
    def total(self) -> int:
        """Every pool's cap together: gRPC's hard cap is set to this."""
        return self.calls.limit + self.health.limit + self.learner.limit

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if method.startswith(OPEN_METHODS_PREFIX):
            pool = self.health
        elif method in self.exempt:
            pool = self.learner
        else:
            pool = self.calls
        return handler_like(handler, self._counted(_behaviour(handler), pool))

    @staticmethod
    async def _refuse(context, pool: _Pool) -> None:
        pool.refused += 1
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"server busy: {pool.open} {'calls' if pool.what == 'max_open_calls' else pool.what}"
            f" open, the limit; retry in {BUSY_RETRY_MS / 1000:g} s",
            trailing_metadata=((RETRY_AFTER_KEY, str(BUSY_RETRY_MS)),),
        )

    def _counted(self, behaviour, pool: _Pool):
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request, context):
                if pool.open >= pool.limit:
                    await self._refuse(context, pool)
                pool.open += 1
                try:
                    async for item in behaviour(request, context):
                        yield item
                finally:
                    pool.open -= 1

            return stream
        if not inspect.iscoroutinefunction(behaviour):
            raise TypeError(f"AioServer behaviours must be coroutine functions: {behaviour!r}")

        async def call(request, context):
            if pool.open >= pool.limit:
                await self._refuse(context, pool)
            pool.open += 1
            try:
                return await behaviour(request, context)
            finally:
                pool.open -= 1

        return call


def _behaviour(handler: grpc.RpcMethodHandler):
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


class AioServer:
    """A ``grpc.aio`` server on its own event-loop thread; start and stop it from
    synchronous code.

    Behaviours (generic handlers or ``add_servicer``) are coroutine functions or async
    generators; they all run on :attr:`loop`, so each must hand work of more than a
    few hundred microseconds to a thread (``await asyncio.to_thread(...)`` uses this
    server's executor). Other threads hand state to the loop with :meth:`call` and
    :meth:`submit`.

    Limits: with ``security.token`` every call but health needs the token (and exactly
    one ``authorization`` value); at most ``max_open_calls`` calls open at once
    (:class:`CallLimit`; health and ``exempt_methods`` have pools of their own,
    ``HEALTH_CALLS`` and ``EXEMPT_CALLS``, and gRPC's own hard cap is the sum, so it
    is never what refuses a call); a connection with no call open
    for ``IDLE_CONNECTION_MS`` is closed (clients reconnect on their next call);
    keepalive pings are always accepted. :attr:`health` is gRPC health (``""`` and
    ``health_services`` SERVING); :meth:`stop` turns it NOT_SERVING first.
    """

    def __init__(
        self,
        max_message_mb: int = 64,
        security: Security | None = None,
        health_services: tuple[str, ...] = (),
        max_open_calls: int = MAX_OPEN_CALLS,
        health_calls: int = HEALTH_CALLS,
        exempt_calls: int = EXEMPT_CALLS,
        exempt_methods: tuple[str, ...] = (),
        name: str = "grpc-aio",
        executor_threads: int = 4,
    ):
        self._options = [
            *server_options(max_message_mb),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
        ]
        self._security = security
        self._health_services = ("", *health_services)
        self.limit = CallLimit(max_open_calls, exempt_methods, exempt_calls, health_calls)
        self._interceptors = [*server_interceptors(security), self.limit]
        self._adders: list[Callable[[grpc.aio.Server], None]] = []
        self._stop_hooks: list[Callable[[], object]] = []
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            executor_threads, thread_name_prefix=f"{name}-work"
        )
        self.loop.set_default_executor(self.executor)
        self.health = health_async.HealthServicer()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._stopped = False
        self._lag_max = 0.0
        self._lag_task: asyncio.Task | None = None

    # -- before start ---------------------------------------------------------------
    def add_handlers(self, *handlers: grpc.GenericRpcHandler) -> None:
        """Generic handlers (``grpc.method_handlers_generic_handler``); before start."""
        self._adders.append(lambda server: server.add_generic_rpc_handlers(handlers))

    def add_servicer(self, add_to_server: Callable, servicer) -> None:
        """A generated ``add_XServicer_to_server`` and an async servicer; before start."""
        self._adders.append(lambda server: add_to_server(servicer, server))

    def on_stop(self, hook: Callable[[], object]) -> None:
        """Run ``hook()`` on the loop when :meth:`stop` begins, after health turns
        NOT_SERVING and before the grace starts (end long streams here)."""
        self._stop_hooks.append(hook)

    # -- life -------------------------------------------------------------------------
    def start(self, host: str, port: int) -> int:
        """Bind ``host:port`` (0 picks a port; TLS/mTLS as ``security`` says), start the
        loop thread and the server; returns the port."""
        with self._state_lock:
            if self._thread is not None or self._stopped:
                raise RuntimeError(f"{self.name}: start() called twice or after stop()")
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        try:
            self.port = self.submit(self._start(host, port)).result(timeout=60)
        except BaseException:
            self.stop(0)
            raise
        return self.port

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _start(self, host: str, port: int) -> int:
        server = grpc.aio.server(
            interceptors=self._interceptors,
            options=self._options,
            maximum_concurrent_rpcs=self.limit.total,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for add in self._adders:
            add(server)
        for name in self._health_services:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        bound = bind(server, host, port, self._security)
        await server.start()
        self._server = server
        self._lag_task = asyncio.ensure_future(self._probe_lag())
        return bound

    async def _probe_lag(self, every: float = 0.05) -> None:
        """Record how late the loop wakes a 50 ms sleeper: the longest stall any call
        caused (read with :meth:`take_loop_lag`)."""
        while True:
            t0 = self.loop.time()
            await asyncio.sleep(every)
            self._lag_max = max(self._lag_max, self.loop.time() - t0 - every)

    def take_loop_lag(self) -> float:
        """The longest loop stall (seconds) seen since the previous call."""
        lag, self._lag_max = self._lag_max, 0.0
        return lag

    def call(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the loop soon (thread-safe; a stopped loop ignores it)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
            self.loop.call_soon_threadsafe(fn, *args)

    def submit(self, coro: Awaitable) -> concurrent.futures.Future:
        """Run coroutine ``coro`` on the loop; a future for its result (thread-safe)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def set_health(self, service: str, status) -> concurrent.futures.Future:
        """Set a health status from any thread (``health_pb2.HealthCheckResponse.X``)."""
        return self.submit(self.health.set(service, status))

    @property
    def running(self) -> bool:
        return self._server is not None and not self._stopped

    def stop(self, grace: float = 1.0) -> None:
        """Health NOT_SERVING, the ``on_stop`` hooks, then refuse new calls and give open
        ones ``grace`` seconds before cancelling them; the loop thread ends. Idempotent;
        returns within about ``grace + STOP_SLACK_S`` seconds whatever the calls do."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        if thread is None:  # never started
            self.loop.close()
            self.executor.shutdown(wait=False)
            return
        if thread.is_alive():
            done = self.submit(self._shutdown(grace))
            try:
                done.result(timeout=grace + STOP_SLACK_S)
            except concurrent.futures.TimeoutError:
                log.warning("%s: not stopped %.1fs after its grace", self.name, STOP_SLACK_S)
            except Exception:
                log.exception("%s: error while stopping", self.name)
            self.call(self.loop.stop)
            thread.join(STOP_SLACK_S)

    async def _shutdown(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        for hook in self._stop_hooks:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s: stop hook failed", self.name)
        if self._server is not None:
            await self._server.stop(grace)


def channel(
    address: str, max_message_mb: int = 64, security: Security | None = None
) -> grpc.Channel:
    """A client channel; TLS and the token are added as ``security`` says."""
    return secure_channel(address, channel_options(max_message_mb), security)


def wait_ready(address: str, timeout: float = 30.0, security: Security | None = None) -> None:
    """Block until the server at ``address`` reports SERVING on gRPC health."""
    deadline = time.monotonic() + timeout
    with channel(address, security=security) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no healthy gRPC server at {address} after {timeout:.0f}s")
            time.sleep(0.05)


class ProcessExited(RuntimeError):
    """The process a ready file was awaited from exited before writing it."""


def write_ready_file(path: str | os.PathLike | None, **info) -> None:
    """Atomically write ``info`` as JSON, telling a parent we are up."""
    if path:
        atomic_write_text(path, json.dumps(info))


def read_ready_file(path: str | os.PathLike, timeout: float, alive=lambda: True) -> dict:
    """Wait for a ready file written by :func:`write_ready_file` and return its JSON."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not alive():
            raise ProcessExited(f"process exited before writing {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:.0f}s")
        time.sleep(0.02)
    return json.loads(path.read_text())
