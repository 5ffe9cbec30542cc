"""The weight server: hosts ``dqn.v1.WeightService`` for the fleet and publishes versions.

:class:`WeightServer` runs on an :class:`dqn.rpc.AioServer`, so an open ``WatchWeights``
stream costs a coroutine, not a thread. :class:`WeightPublisher` (its ``publisher``,
the learner's ``WeightSource``) serializes each version once, in the caller's thread;
every stream and ``GetWeights`` sends those same bytes (the response serializer is
the identity). Latest wins per subscriber: a stream whose client reads slowly is
blocked in its own write and, once that completes, sends the newest version, skipping
the ones in between; there is no queue, and the others never wait for it. A stream
holds at most the bytes grpc's transport buffers for it (HTTP/2 flow control) and is
ended with ``UNAVAILABLE`` when one write stalls for ``stall_seconds``. Streams end
with OK after ``stream_seconds`` (below the clients' own 60 s deadline), and the
client renews with ``after_version``, so a vanished client holds nothing for long.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import NamedTuple

import grpc

from dqn import rpc
from dqn import weights as weights_codec
from dqn.security import Security
from dqn.telemetry import Series
from dqn.v1 import replay_pb2 as pb

SERVICE_NAME = "dqn.v1.WeightService"
STREAM_SECONDS = 50.0  # a WatchWeights stream ends (OK) after this; clients renew
STALL_SECONDS = 30.0  # a write the subscriber has not taken in this long ends its stream
WRITE_GRACE_S = 5.0  # a write past the lifetime gets this long (clients wait 60 s)
WAKE_GROUPS = 16  # a publish wakes the streams in this many groups, one at a time
KEPT_VERSIONS = 64  # recent versions kept for the policy export of a solving evaluation
KEPT_BYTES = 256 * 1024 * 1024  # ... and at most this many bytes of them
PINNED_VERSIONS = 16  # versions kept while evaluators play them (EvaluationService.Begin)


class Version(NamedTuple):
    number: int
    data: bytes  # the serialized dqn.v1.Weights, shared by every subscriber


class WeightPublisher:
    """The weight server's state: the newest version, its subscribers, what was sent.

    ``publish`` may be called from any thread; the streams run on the server's loop
    (``schedule`` hands a callable to it). Counters are plain attributes, written on
    the loop and read anywhere (``/metrics``):

    * ``subscribers``: ``WatchWeights`` streams open now;
    * ``message_bytes``: size of the newest serialized version;
    * ``publish_bytes``: ``subscribers × message_bytes`` at the latest publish, the
      bytes that version costs to broadcast;
    * ``bytes_sent``: bytes written so far, streams and ``GetWeights`` together;
    * ``versions_sent`` and ``versions_skipped`` (versions a slow stream jumped over);
    * ``stalled``: streams ended because their client stopped reading;
    * ``gone``: streams whose client vanished in the middle of a write.
    """

    def __init__(
        self,
        schedule: Callable[[Callable[[], None]], None] | None = None,
        stream_seconds: float = STREAM_SECONDS,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self._schedule = schedule
        self._lock = threading.Lock()  # version numbering across publishing threads
        self._latest: Version | None = None
        self._kept: dict[int, bytes] = {}  # version -> bytes, oldest first (see _keep)
        self._pinned: dict[int, bytes] = {}  # versions evaluators are playing (see pin)
        # Subscribers wait on one of WAKE_GROUPS events (round-robin); a publish wakes
        # the groups one after another, yielding to the loop between them, so health
        # checks and GetWeights wait for one group's writes, not for every stream's.
        self._groups = [asyncio.Event() for _ in range(WAKE_GROUPS)]
        self._joined = 0
        self._broadcasts: set[asyncio.Task] = set()
        self._stopping = False
        self.stream_seconds = stream_seconds
        self.stall_seconds = stall_seconds
        self.subscribers = 0
        self.message_bytes = 0
        self.publish_bytes = 0
        self.bytes_sent = 0
        self.versions_sent = 0
        self.versions_skipped = 0
        self.stalled = 0
        self.gone = 0  # streams whose client vanished in the middle of a write

    @property
    def version(self) -> int:
        latest = self._latest
        return latest.number if latest is not None else 0

    def publish(
        self, state_dict: dict, updates: int = 0, env_steps: int = 0, evaluate: bool = False
    ) -> int:
        """Serialize ``state_dict`` once as the next version and wake the streams
        (``evaluate``: ask evaluators to play this version whatever their schedule)."""
        with self._lock:
            version = self.version + 1
            msg = weights_codec.to_proto(state_dict, version, updates, env_steps)
            msg.evaluate = evaluate
            self._latest = Version(version, msg.SerializeToString())
            self._keep(self._latest)
        if self._schedule is not None:
            self._schedule(self._wake)
        return version

    def _keep(self, version: Version) -> None:
        """Keep the newest versions' bytes (at most KEPT_VERSIONS, KEPT_BYTES): an
        evaluation reports on a version older than the newest, and the policy the
        learner exports when one solves is that version, not the newest."""
        self._kept[version.number] = version.data
        total = sum(map(len, self._kept.values()))
        while len(self._kept) > 1 and (len(self._kept) > KEPT_VERSIONS or total > KEPT_BYTES):
            total -= len(self._kept.pop(next(iter(self._kept))))

    def kept(self, version: int) -> pb.Weights | None:
        """Version ``version`` as published, if it is still kept (or pinned)."""
        with self._lock:
            data = self._kept.get(version) or self._pinned.get(version)
        return pb.Weights.FromString(data) if data is not None else None

    def pin(self, version: int) -> bool:
        """Keep ``version`` beyond the ring until :meth:`unpin` (an evaluator is playing
        it); at most PINNED_VERSIONS, the oldest pin dropped first. False when that
        version is no longer kept."""
        with self._lock:
            data = self._kept.get(version) or self._pinned.pop(version, None)
            if data is None:
                return False
            self._pinned[version] = data
            while len(self._pinned) > PINNED_VERSIONS:
                self._pinned.pop(next(iter(self._pinned)))
        return True

    def unpin(self, version: int) -> None:
        with self._lock:
            self._pinned.pop(version, None)

    def _wake(self) -> None:  # on the loop
        latest = self._latest
        self.message_bytes = len(latest.data)
        self.publish_bytes = self.subscribers * self.message_bytes
        task = asyncio.ensure_future(self._broadcast())
        self._broadcasts.add(task)
        task.add_done_callback(self._broadcasts.discard)

    async def _broadcast(self) -> None:
        for group in self._groups:
            group.set()
            group.clear()  # waiters already woken stay woken
            await asyncio.sleep(0)  # let the woken group write, and anything queued run

    def stop(self) -> None:
        """End every stream (on the loop; the server's stop hook)."""
        self._stopping = True
        for group in self._groups:
            group.set()

    # -- WeightService behaviours (coroutines on the server's loop) --------------------
    async def watch_weights(self, request: pb.WatchWeightsRequest, context) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.stream_seconds
        last = request.after_version
        changed = self._groups[self._joined % WAKE_GROUPS]
        self._joined += 1
        self.subscribers += 1
        try:
            # The lifetime is checked after writes too: with a version newer than the
            # last one sent after every write, the stream would never wait and never end.
            while not self._stopping and loop.time() < end:
                latest = self._latest
                if latest is None or latest.number <= last:
                    try:
                        async with asyncio.timeout_at(end):
                            await changed.wait()
                    except TimeoutError:
                        return  # the stream's lifetime is over; the client renews
                    continue
                try:
                    # A write may stall for stall_seconds, but never past the lifetime
                    # plus the grace that still ends the stream before its client's
                    # own deadline (WRITE_GRACE_S).
                    stall = min(self.stall_seconds, end + WRITE_GRACE_S - loop.time())
                    async with asyncio.timeout(max(stall, 0.0)):
                        await context.write(latest.data)
                except TimeoutError:
                    self.stalled += 1
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"weights stream stalled: version {latest.number} not read in "
                        f"{stall:.3g} s; reconnect",
                    )
                except Exception:  # noqa: BLE001 - any failed write ends the stream
                    # The write failed: the client went away mid-write (cancelled, its
                    # deadline ran out, the connection dropped). The stream is over;
                    # there is nobody to answer.
                    self.gone += 1
                    return
                if last:
                    self.versions_skipped += latest.number - last - 1
                last = latest.number
                self.bytes_sent += len(latest.data)
                self.versions_sent += 1
        finally:
            self.subscribers -= 1

    async def get_weights(self, request: pb.GetWeightsRequest, context) -> bytes:
        latest = self._latest
        if latest is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no weights published yet")
        self.bytes_sent += len(latest.data)
        return latest.data

    def handler(self) -> grpc.GenericRpcHandler:
        """``dqn.v1.WeightService``; responses are the shared bytes (no serializer)."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "WatchWeights": grpc.unary_stream_rpc_method_handler(
                    self.watch_weights,
                    request_deserializer=pb.WatchWeightsRequest.FromString,
                    response_serializer=None,
                ),
                "GetWeights": grpc.unary_unary_rpc_method_handler(
                    self.get_weights,
                    request_deserializer=pb.GetWeightsRequest.FromString,
                    response_serializer=None,
                ),
            },
        )


class WeightServer:
    """The weight server: :class:`WeightPublisher` on an :class:`~dqn.rpc.AioServer`,
    with health checking. ``start()`` returns the port; ``publisher.publish(...)``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_mb: int = 64,
        security: Security | None = None,
        stream_seconds: float = STREAM_SECONDS,
        stall_seconds: float = STALL_SECONDS,
    ):
        self.host, self._port = host, port
        self._server = rpc.AioServer(
            max_message_mb,
            security,
            health_services=(SERVICE_NAME,),
            exempt_methods=(f"/{SERVICE_NAME}/GetWeights",),
            name="weight-server",
        )
        self.publisher = WeightPublisher(self._server.call, stream_seconds, stall_seconds)
        self._server.add_handlers(self.publisher.handler())
        self._server.on_stop(self.publisher.stop)
        self.port: int | None = None

    def start(self) -> int:
        self.port = self._server.start(self.host, self._port)
        return self.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def server(self) -> rpc.AioServer:
        return self._server

    def stop(self, grace: float = 1.0) -> None:
        """Health NOT_SERVING, every stream ended (OK), then the server stops."""
        self._server.stop(grace)


def weight_series(w: WeightPublisher) -> list[Series]:
    """The weight server's figures on the learner's ``/metrics``."""
    return [
        Series(
            "dqn_learner_weight_subscribers", "gauge", "open WatchWeights streams", w.subscribers
        ),
        Series(
            "dqn_learner_weights_bytes", "gauge", "bytes of one published version", w.message_bytes
        ),
        Series(
            "dqn_learner_weights_publish_bytes",
            "gauge",
            "bytes the latest version costs to broadcast (subscribers x size)",
            w.publish_bytes,
        ),
        Series(
            "dqn_learner_weights_sent_bytes_total", "counter", "weight bytes sent", w.bytes_sent
        ),
        Series(
            "dqn_learner_weights_skipped_total",
            "counter",
            "versions slow subscribers skipped (latest wins)",
            w.versions_skipped,
        ),
    ]
