"""Which failures the clients retry, and how long they wait: the server's hint wins."""

from __future__ import annotations

import random

import grpc
import pytest

from dqn.retry import Backoff, is_retryable, retry_delay


class Refusal(grpc.RpcError):
    def __init__(self, code, trailing=()):
        self._code, self._trailing = code, trailing

    def code(self):
        return self._code

    def trailing_metadata(self):
        return self._trailing


HINT = (("retry-after-ms", "1500"),)


@pytest.mark.parametrize(
    "error, retryable",
    [
        (Refusal(grpc.StatusCode.UNAVAILABLE), True),
        (Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED), False),  # e.g. a batch too large
        (Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, HINT), True),  # a busy server
        (Refusal(grpc.StatusCode.INVALID_ARGUMENT), False),
    ],
)
def test_retryable_statuses_and_hinted_refusals(error, retryable):
    assert is_retryable(error) is retryable


def test_delay_is_never_below_the_hint():
    backoff = Backoff(base=0.01, cap=0.05, rng=random.Random(0))
    hinted = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, HINT)
    assert [retry_delay(hinted, backoff) for _ in range(5)] == [1.5] * 5
    plain = Refusal(grpc.StatusCode.UNAVAILABLE)
    assert all(0 <= retry_delay(plain, backoff) <= 0.05 for _ in range(20))
