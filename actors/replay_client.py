"""The actor's ReplayWriter over gRPC: a bounded queue drained by a sender thread.

``write()`` returns at once unless the queue is full, which is how replay-server
backpressure (rate limiter) reaches the acting loop. Failed pushes are retried with
backoff; the server drops any batch it already has, keyed by (actor, incarnation, sequence).

What it sends, and when (profile and figures in docs/actors.md):

* **One message per call.** Everything drained goes as *one* ``PushRequest`` (its
  ``batches``), up to ``max_per_call`` batches and half the message size limit. A
  push costs per message far more than per byte, on both sides: at 64-row batches
  one message per batch cost the actor ~100 us of CPU per vector step of 8 CartPole
  envs, and the server ~70.
* **Serialized once, in the sender thread.** Each batch is serialized by protobuf's C
  code and framed as one ``batches`` entry; the message is the concatenation of those
  frames (protobuf concatenation appends repeated fields), sent as bytes with no
  serializer. No ``PushRequest(batch=b)`` copies.
* **Woken rarely.** The sender sleeps until the queue is half full or ``linger_s`` has
  passed, never on every ``write()``: a sender woken per batch takes the GIL from the
  acting loop each time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import grpc

from dqn import rpc
from dqn.retry import Backoff, is_retryable, retry_delay
from dqn.security import Security
from dqn.v1 import replay_pb2 as pb

log = logging.getLogger("actors.replay_client")

_PUSH = "/{}/Push".format(pb.DESCRIPTOR.services_by_name["ReplayService"].full_name)
_BATCHES_TAG = bytes([(pb.PushRequest.BATCHES_FIELD_NUMBER << 3) | 2])  # length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(batch: pb.TransitionBatch) -> bytes:
    """``batch`` as one ``PushRequest.batches`` entry on the wire: frames joined are a
    ``PushRequest`` holding those batches in order."""
    data = batch.SerializeToString()
    return _BATCHES_TAG + _varint(len(data)) + data


class ReplayWriterError(RuntimeError):
    pass


class GrpcReplayWriter:
    def __init__(
        self,
        address: str,
        max_pending: int = 32,
        max_per_call: int = 64,
        deadline_s: float = 30.0,
        max_message_mb: int = 64,
        security: Security | None = None,
        linger_s: float = 0.05,
        stop: threading.Event | None = None,
    ):
        self._channel = rpc.channel(address, max_message_mb, security)
        # ReplayService.Push with requests as bytes (frames joined; no serializer)
        self._push = self._channel.unary_unary(
            _PUSH, request_serializer=None, response_deserializer=pb.PushResponse.FromString
        )
        self._queue: queue.Queue[pb.TransitionBatch | None] = queue.Queue(maxsize=max_pending)
        self._wake_at = max(1, max_pending // 2)
        self._wake = threading.Event()
        self._max_per_call = max_per_call
        self._max_bytes = max_message_mb * rpc.MiB // 2
        self._linger = linger_s
        self._deadline = deadline_s
        self._error: Exception | None = None
        self._closed = threading.Event()
        self._stop = stop or threading.Event()  # the actor's: set, a full queue drops
        self.dropped_at_stop = 0
        self.pushed_batches = 0
        self.pushed_transitions = 0
        self._thread = threading.Thread(target=self._run, name="replay-writer", daemon=True)
        self._thread.start()

    def write(self, batch: pb.TransitionBatch) -> None:
        if self._error is not None:
            raise ReplayWriterError(str(self._error)) from self._error
        while not self._closed.is_set():
            try:
                self._queue.put(batch, timeout=0.5 if not self._stop.is_set() else 0.0)
                if self._queue.qsize() >= self._wake_at:
                    self._wake.set()
                return
            except queue.Full:
                if self._error is not None:
                    raise ReplayWriterError(str(self._error)) from self._error
                if self._stop.is_set():
                    # Stopping while the server holds pushes back (its rate limiter
                    # after the learner stopped sampling): the batch is not waited for.
                    self.dropped_at_stop += 1
                    return

    def _run(self) -> None:
        carry: bytes | None = None  # a frame drained that did not fit the last message
        draining = False  # close() queued its marker: send what is left, then end
        while not self._closed.is_set():
            frames, size = ([carry], len(carry)) if carry else ([], 0)
            carry = None
            while len(frames) < self._max_per_call:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    draining = True
                    break
                data = frame(item)
                if frames and size + len(data) > self._max_bytes:
                    carry = data
                    break
                frames.append(data)
                size += len(data)
            if not frames:
                if draining:
                    return
                # Poll, never block on the queue: a sender waiting in get() is woken by
                # every write(), and each wake-up takes the GIL from the acting loop.
                # write() wakes it once the queue is half full.
                self._wake.wait(self._linger)
                self._wake.clear()
                continue
            if not self._push_until_done(b"".join(frames)):
                # close() ran out of time, or the server refused for good
                self.dropped_at_stop += len(frames) if self._error is None else 0
                return
            if draining and carry is None:
                return

    def _push_until_done(self, message: bytes) -> bool:
        """Send one message, retrying what is retryable (also while draining at close),
        until it is acknowledged (True), refused for good or ``close()`` gives up (False)."""
        backoff = Backoff()
        while True:
            try:
                reply = self._push(message, timeout=self._deadline)
                self.pushed_batches += reply.accepted_batches
                self.pushed_transitions += reply.accepted_transitions
                return True
            except ValueError:  # "Cannot invoke RPC on closed channel": close() won
                if self._closed.is_set():
                    return False
                raise
            except grpc.RpcError as exc:
                if self._closed.is_set():  # cancelled by close(): not the server's word
                    return False
                if not is_retryable(exc):
                    self._error = exc
                    log.error("replay server refused a batch: %s %s", exc.code(), exc.details())
                    return False
                delay = retry_delay(exc, backoff)
                log.debug("push failed (%s), retrying in %.2fs", exc.code(), delay)
                self._closed.wait(delay)

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued, within ``timeout`` in all. A queue still full when the
        actor is stopping means the server holds pushes back (nothing drains it), so
        then only a moment is given: stopping a fleet must not wait on backpressure."""
        if self._stop.is_set() and self._queue.full():
            timeout = min(timeout, 4 * self._linger)
        deadline = time.monotonic() + timeout
        try:  # behind everything still queued, so close() flushes it
            self._queue.put(None, timeout=timeout)
            self._wake.set()
        except queue.Full:
            self._closed.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._closed.set()
        self._channel.close()  # cancels a push still blocked on the server
        self._thread.join(1.0)  # the sender counts what it was still trying to send
        if self.dropped_at_stop:
            log.info(
                "%d batches not sent: the server held them back or could not be reached "
                "before close() gave up",
                self.dropped_at_stop,
            )
