"""The actor's WeightClient: a thread watches ``WatchWeights``; ``update()`` never blocks.

Weights are decoded in the watching thread into numpy arrays that are views over the
message's bytes (no copy, no torch): the acting loop only swaps them in.
"""

from __future__ import annotations

import logging
import threading

import grpc
import numpy as np

from dqn import codec, rpc
from dqn.retry import Backoff, retry_delay
from dqn.security import Security
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc

log = logging.getLogger("actors.weight_client")
STREAM_DEADLINE_S = 60.0


class GrpcWeightClient:
    """Latest-wins holder of the learner's weights."""

    def __init__(self, address: str, max_message_mb: int = 64, security: Security | None = None):
        self._channel = rpc.channel(address, max_message_mb, security)
        self._stub = pb_grpc.WeightServiceStub(self._channel)
        self._lock = threading.Lock()
        self._latest: tuple[pb.Weights, dict[str, np.ndarray]] | None = None
        self._closed = threading.Event()
        self._first = threading.Event()
        self._call = None
        self.version = 0  # version loaded into the caller's network
        self.env_steps = 0  # fleet env steps the learner had seen at that version
        self.updates = 0  # learner updates at that version
        self.evaluate = False  # the learner asked evaluators to play that version
        self._thread = threading.Thread(target=self._run, name="weight-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = Backoff(cap=1.0)
        seen = 0
        while not self._closed.is_set():
            try:
                # Every call has a deadline: the stream is renewed each minute, which
                # also replaces a connection that died silently.
                self._call = self._stub.WatchWeights(
                    pb.WatchWeightsRequest(after_version=seen), timeout=STREAM_DEADLINE_S
                )
                for msg in self._call:
                    state = decode_weights(msg)
                    with self._lock:
                        self._latest = (msg, state)
                    self._first.set()
                    seen = msg.version
                    backoff.reset()
                delay = backoff.next()
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    return
                log.debug("weight stream ended (%s); reconnecting", exc.code())
                delay = retry_delay(exc, backoff)  # a busy server's hint, at least
            self._closed.wait(delay)

    def wait_first(self, timeout: float) -> bool:
        """Wait until the first weights arrived (True) or ``timeout`` passed (False)."""
        return self._first.wait(timeout)

    def update(self, net) -> bool:
        """Load the newest weights into ``net`` if newer than what it has. Never blocks.

        ``net`` is a policy from :mod:`actors.policy` (takes numpy arrays) or a torch
        module (the arrays become tensors first)."""
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is None or latest[0].version <= self.version:
            return False
        msg, state = latest
        self.version, self.env_steps, self.updates = msg.version, msg.env_steps, msg.updates
        self.evaluate = msg.evaluate
        load_numpy_state(net, state)
        return True

    def close(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        self._channel.close()
        self._thread.join(2.0)


def decode_weights(msg: pb.Weights) -> dict[str, np.ndarray]:
    """``dqn.weights.from_proto`` without torch: read-only float32 views over the bytes."""
    return {p.name: codec.decode(p.tensor, f"params[{p.name}]") for p in msg.params}


def load_numpy_state(net, state: dict[str, np.ndarray]) -> None:
    """``net.load_state_dict`` from numpy arrays, for a policy or a torch module."""
    if hasattr(net, "named_parameters"):  # a torch module: tensors it may keep
        import torch

        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    else:
        net.load_state_dict(state)
