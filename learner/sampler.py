"""Prefetching ReplaySampler: a thread keeps Sample responses decoded and ready.

Each RPC fetches ``batches_per_call`` batches (a unary round trip costs ~0.7 ms, so
one batch per call would bound the learner). Responses are decoded with one
``frombuffer`` per column into (pinned, when the device is CUDA) host tensors and
moved to the device with non-blocking copies, one transfer per response.
"""

from __future__ import annotations

import logging
import queue
import threading

import grpc
import numpy as np
import torch

from dqn import codec, rpc
from dqn.interfaces import TRANSITION_COLUMNS
from dqn.retry import Backoff, is_retryable, retry_delay
from dqn.security import Security
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc

log = logging.getLogger("learner.sampler")
_TORCH_DTYPES = {
    np.dtype(k): v
    for k, v in (
        (np.float32, torch.float32),
        (np.float64, torch.float64),
        (np.int64, torch.int64),
        (np.int32, torch.int32),
        (np.uint8, torch.uint8),
        (np.bool_, torch.bool),
    )
}


# Prioritized replay: columns that stay on the host (they only go back to the server).
HOST_COLUMNS = ("index", "key")


def decode_sample(response: pb.SampleResponse, pin: bool = False) -> dict[str, torch.Tensor]:
    """Decode a SampleResponse into host tensors ``[K*B, ...]``.

    From a prioritized server also ``index`` and ``key`` (int64, for UpdatePriorities),
    ``probability`` and ``min_probability`` (float32, for importance weights).
    """
    arrays = {name: codec.decode(getattr(response, name), name) for name in TRANSITION_COLUMNS}
    if response.HasField("index"):
        prob = codec.decode(response.probability, "probability")
        arrays["probability"] = prob.astype(np.float32)
        arrays["min_probability"] = np.full(len(prob), response.min_probability, np.float32)
        for name in HOST_COLUMNS:
            arrays[name] = codec.decode(getattr(response, name), name)
    out = {}
    for name, arr in arrays.items():
        t = torch.empty(
            arr.shape, dtype=_TORCH_DTYPES[arr.dtype], pin_memory=pin and name not in HOST_COLUMNS
        )
        t.numpy()[...] = arr
        out[name] = t
    return out


class PrefetchingSampler:
    def __init__(
        self,
        address: str,
        batch_size: int,
        batches_per_call: int,
        depth: int,
        device: torch.device,
        max_message_mb: int = 64,
        learner_version=lambda: 0,
        security: Security | None = None,
    ):
        self.batch_size = batch_size
        self.batches_per_call = batches_per_call
        self.device = device
        self._pin = device.type == "cuda"
        self._channel = rpc.channel(address, max_message_mb, security)
        self._stub = pb_grpc.ReplayServiceStub(self._channel)
        self._queue: queue.Queue[dict[str, torch.Tensor] | BaseException] = queue.Queue(depth)
        self._learner_version = learner_version
        self._closed = threading.Event()
        self._current: dict[str, torch.Tensor] | None = None
        self._index = 0
        self.waiting_reason = ""
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = Backoff(cap=1.0)
        request = pb.SampleRequest(
            batch_size=self.batch_size, num_batches=self.batches_per_call, timeout_ms=500
        )
        while not self._closed.is_set():
            request.learner_version = self._learner_version()
            try:
                response = self._stub.Sample(request, timeout=10.0)
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    return
                if not is_retryable(exc):
                    self._queue.put(exc)
                    return
                self.waiting_reason = f"replay server: {exc.code().name}"
                self._closed.wait(retry_delay(exc, backoff))
                continue
            backoff.reset()
            if response.num_batches == 0:
                self.waiting_reason = response.reason
                continue
            self.waiting_reason = ""
            chunk = decode_sample(response, self._pin)
            while not self._closed.is_set():
                try:
                    self._queue.put(chunk, timeout=0.5)
                    break
                except queue.Full:
                    pass

    def next(self, timeout: float | None = None) -> dict[str, torch.Tensor] | None:
        """The next batch on the device, or None if none arrived within ``timeout``."""
        if self._current is None or self._index >= self.batches_per_call:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if isinstance(item, BaseException):
                raise item
            self._current = {
                k: v if k in HOST_COLUMNS else v.to(self.device, non_blocking=True)
                for k, v in item.items()
            }
            self._index = 0
        b, k = self.batch_size, self._index
        self._index += 1
        return {name: t[k * b : (k + 1) * b] for name, t in self._current.items()}

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)
        self._channel.close()
