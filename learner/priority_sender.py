"""Sends new priorities back to a prioritized replay server without stalling updates.

``add()`` collects each update's ``(index, key, |TD|)``; every ``flush_every`` updates
the TD errors are moved to the host in one copy (one device sync per flush, not per
update) and queued for a sender thread that calls ``UpdatePriorities``. When the
queue is full (the server is slow or down) the oldest update waits, the newest is
dropped and counted: a missed priority update only leaves an older priority in place.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading

import grpc
import numpy as np
import torch

from dqn import codec, rpc
from dqn.retry import Backoff, is_retryable, retry_delay
from dqn.security import Security
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc

log = logging.getLogger("learner.priority_sender")


def update_request(index: np.ndarray, key: np.ndarray, priority: np.ndarray):
    request = pb.UpdatePrioritiesRequest()
    codec.encode(np.asarray(index, np.int64), request.index)
    codec.encode(np.asarray(key, np.int64), request.key)
    codec.encode(np.asarray(priority, np.float32), request.priority)
    return request


class PrioritySender:
    def __init__(
        self,
        address: str,
        flush_every: int = 16,
        max_pending: int = 8,
        max_message_mb: int = 64,
        security: Security | None = None,
    ):
        self.flush_every = flush_every
        self._channel = rpc.channel(address, max_message_mb, security)
        self._stub = pb_grpc.ReplayServiceStub(self._channel)
        self._queue: queue.Queue[pb.UpdatePrioritiesRequest | None] = queue.Queue(max_pending)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.sent = self.stale = self.dropped = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="priority-sender", daemon=True)
        self._thread.start()

    def add(self, index: torch.Tensor, key: torch.Tensor, td_abs: torch.Tensor) -> None:
        """One update's rows: host ``index``/``key`` ``[B]`` and device ``td_abs`` ``[B]``."""
        self._pending.append((index, key, td_abs))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        index, key, td = (torch.cat(cols) for cols in zip(*self._pending, strict=True))
        self._pending = []
        request = update_request(index.numpy(), key.numpy(), td.float().cpu().numpy())
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            self.dropped += len(index)

    def _run(self) -> None:
        backoff = Backoff(cap=1.0)
        while True:
            request = self._queue.get()
            if request is None:
                return
            while not self._closed.is_set():
                try:
                    reply = self._stub.UpdatePriorities(request, timeout=5.0)
                    self.sent += reply.updated
                    self.stale += reply.stale
                    backoff.reset()
                    break
                except grpc.RpcError as exc:
                    if not is_retryable(exc):
                        log.error("UpdatePriorities refused: %s %s", exc.code(), exc.details())
                        break
                    self._closed.wait(retry_delay(exc, backoff))

    def close(self, timeout: float = 5.0) -> None:
        """Send what is pending, then stop (the counters are final afterwards)."""
        if self._closed.is_set():
            return
        self.flush()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._closed.set()  # stop retrying, if still at it
        self._thread.join(1.0)
        self._channel.close()
