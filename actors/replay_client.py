"""The actor's ReplayWriter over gRPC: a bounded queue drained by a sender thread.

``write()`` returns at once unless the queue is full, which is how replay-server
backpressure (rate limiter) reaches the acting loop. Failed pushes are retried with
backoff; the server drops any batch it already has, keyed by (actor, incarnation, sequence).

The sender polls the queue every ``linger_s`` and sends what it finds (up to
``max_per_call`` batches per Push) rather than waiting in ``get()``: a waiting sender
is woken by every ``write()`` and takes the GIL from the acting loop each time, and
each call costs it Python time under that GIL (profile in docs/actors.md). With
50 ms and up to 32 batches a call, an actor's gRPC work fell from ~90 to ~30-40 us of
CPU per vector step (8 CartPole envs, 64-row batches, measured under load).
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
from dqn.v1 import replay_pb2_grpc as pb_grpc

log = logging.getLogger("actors.replay_client")


class ReplayWriterError(RuntimeError):
    pass


class GrpcReplayWriter:
    def __init__(
        self,
        address: str,
        max_pending: int = 32,
        max_per_call: int = 32,
        deadline_s: float = 30.0,
        max_message_mb: int = 64,
        security: Security | None = None,
        linger_s: float = 0.05,
        stop: threading.Event | None = None,
    ):
        self._channel = rpc.channel(address, max_message_mb, security)
        self._stub = pb_grpc.ReplayServiceStub(self._channel)
        self._queue: queue.Queue[pb.TransitionBatch | None] = queue.Queue(maxsize=max_pending)
        self._max_per_call = max_per_call
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
        backoff = Backoff()
        while not self._closed.is_set():
            # Poll, never block on the queue: a sender waiting in get() is woken by every
            # write(), and each wake-up takes the GIL from the acting loop (under load the
            # loop then waits to be scheduled again). Polling wakes 1/linger times a second.
            pending = []
            while len(pending) < self._max_per_call:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._closed.set()
                    break
                pending.append(item)
            if not pending:
                self._closed.wait(self._linger)
                continue
            while True:
                try:
                    reply = self._stub.Push(
                        iter([pb.PushRequest(batch=b) for b in pending]), timeout=self._deadline
                    )
                    self.pushed_batches += reply.accepted_batches
                    self.pushed_transitions += reply.accepted_transitions
                    backoff.reset()
                    break
                except ValueError:  # "Cannot invoke RPC on closed channel": close() won
                    if self._closed.is_set():
                        return
                    raise
                except grpc.RpcError as exc:
                    if self._closed.is_set():  # cancelled by close(): not the server's word
                        return
                    if not is_retryable(exc):
                        self._error = exc
                        log.error("replay server refused a batch: %s %s", exc.code(), exc.details())
                        return
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
        except queue.Full:
            self._closed.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._closed.set()
        self._channel.close()  # cancels a push still blocked on the server
        if self.dropped_at_stop:
            log.info("%d batches not sent: the server held them back at stop", self.dropped_at_stop)
