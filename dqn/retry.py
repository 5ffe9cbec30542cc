"""Exponential backoff with full jitter, and which gRPC failures are worth a retry."""

from __future__ import annotations

import random

import grpc

from dqn.rpc import retry_after

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def is_retryable(error: grpc.RpcError) -> bool:
    """Worth another try: a transient status, or any refusal that came with the
    server's ``retry-after-ms`` hint (a busy or rate-limited server says when)."""
    code = error.code() if hasattr(error, "code") else None
    return code in RETRYABLE or retry_after(error) is not None


def retry_delay(error: grpc.RpcError, backoff: Backoff) -> float:
    """How long to wait before retrying ``error``: the backoff's next sleep, but never
    less than the server's hint."""
    return max(backoff.next(), retry_after(error) or 0.0)


class Backoff:
    """``next()`` returns the next sleep: uniform in ``[0, min(cap, base * 2**k)]``."""

    def __init__(self, base: float = 0.05, cap: float = 2.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return self.rng.uniform(0, delay)

    def reset(self) -> None:
        self.attempt = 0
