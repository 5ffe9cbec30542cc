"""replay_server.rate_limiter.RateLimiter: min size and samples-per-insert band."""

from __future__ import annotations

import numpy as np
import pytest

from replay_server.rate_limiter import RateLimiter, RateLimiterError

pytestmark = pytest.mark.unit


def test_min_size_gates_sampling_only():
    rl = RateLimiter(min_size=10)
    assert not rl.can_sample(0, 1)
    assert not rl.can_sample(9, 1)
    assert "min_size 10" in rl.why_not_sample(9, 1)
    assert "9" in rl.why_not_sample(9, 1)
    assert rl.can_sample(10, 1)
    assert rl.can_sample(10, 1_000)  # batch bigger than the buffer is fine: sampling is uniform
    assert rl.can_insert(1_000)


def test_spi_zero_means_no_band():
    rl = RateLimiter(min_size=2, samples_per_insert=0.0, tolerance=0.0)
    rl.record_insert(2, 2)
    for _ in range(100):
        assert rl.can_sample(2, 10_000)
        rl.record_sample(10_000)
    for size in range(3, 100):
        assert rl.can_insert(1_000)
        rl.record_insert(size, 1_000)
    assert rl.can_sample(2, 10_000)


def started_limiter() -> RateLimiter:
    """spi 1, tolerance 10, already past min_size (diff == 0)."""
    rl = RateLimiter(min_size=5, samples_per_insert=1.0, tolerance=10, max_sample=10, max_insert=10)
    assert not rl.can_sample(4, 1)
    rl.record_insert(5, 5)  # reaches min_size: the band starts counting from here
    assert rl.diff == 0
    return rl


def test_band_blocks_sampling_when_learner_runs_ahead():
    rl = started_limiter()
    assert rl.can_sample(5, 10)  # diff 0 -> -10: at the edge, allowed
    rl.record_sample(10)
    assert rl.diff == -10
    assert not rl.can_sample(5, 1)  # one more would leave the band
    reason = rl.why_not_sample(5, 1)
    assert "samples-per-insert" in reason and "10 sampled" in reason
    assert rl.can_insert(10)  # the fleet may catch up
    rl.record_insert(15, 3)
    assert rl.can_sample(15, 3)
    assert not rl.can_sample(15, 4)


def test_band_blocks_inserts_when_fleet_runs_ahead():
    rl = started_limiter()
    assert rl.can_insert(10)  # 0 -> +10: at the edge, allowed
    rl.record_insert(15, 10)
    assert rl.diff == 10
    assert not rl.can_insert(1)
    assert rl.can_sample(15, 10)  # the learner may catch up
    rl.record_sample(4)
    assert rl.can_insert(4)
    assert not rl.can_insert(5)


def test_band_scales_with_samples_per_insert():
    rl = RateLimiter(min_size=1, samples_per_insert=4.0, tolerance=40, max_sample=8, max_insert=10)
    rl.record_insert(1, 1)
    rl.record_insert(11, 10)  # diff = 40
    assert rl.diff == 40
    assert not rl.can_insert(1)
    rl.record_sample(8)
    assert rl.can_insert(2)  # 32 + 8 <= 40
    assert not rl.can_insert(3)  # 32 + 12 > 40


def test_inserts_before_min_size_are_never_blocked():
    rl = RateLimiter(
        min_size=100, samples_per_insert=1.0, tolerance=10, max_sample=10, max_insert=10
    )
    for size in range(10, 100, 10):
        assert rl.can_insert(10)
        rl.record_insert(size, 10)
    assert not rl.can_sample(90, 1)


@pytest.mark.parametrize(
    "kwargs, need",
    [
        (dict(samples_per_insert=1.0, tolerance=127, max_sample=128, max_insert=64), "128"),
        (dict(samples_per_insert=4.0, tolerance=255, max_sample=128, max_insert=64), "256"),
        (dict(samples_per_insert=0.5, tolerance=0, max_sample=1, max_insert=1), "1"),
    ],
)
def test_refuses_band_narrower_than_one_call(kwargs, need):
    with pytest.raises(RateLimiterError) as err:
        RateLimiter(min_size=1, **kwargs)
    msg = str(err.value)
    assert msg.startswith("tolerance:")
    assert "deadlock" in msg and need in msg


def test_accepts_band_exactly_one_call_wide():
    RateLimiter(min_size=1, samples_per_insert=1.0, tolerance=128, max_sample=128, max_insert=64)
    RateLimiter(min_size=1, samples_per_insert=4.0, tolerance=256, max_sample=128, max_insert=64)
    RateLimiter(min_size=1, samples_per_insert=0.0, tolerance=0.0, max_sample=10**6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(min_size=0), "min_size:"),
        (dict(min_size=1, samples_per_insert=-1.0), "samples_per_insert:"),
    ],
)
def test_refuses_bad_arguments_naming_them(kwargs, field):
    with pytest.raises(RateLimiterError, match=f"^{field}"):
        RateLimiter(**kwargs)


@pytest.mark.parametrize("spi", [0.25, 1.0, 3.0])
def test_accepted_settings_never_deadlock(spi):
    """From every reachable state a full sample call or a full insert can proceed."""
    max_sample, max_insert = 32, 16
    tol = max(max_sample, spi * max_insert)
    rl = RateLimiter(
        min_size=8,
        samples_per_insert=spi,
        tolerance=tol,
        max_sample=max_sample,
        max_insert=max_insert,
    )
    rng = np.random.default_rng(1)
    size = 0
    for _ in range(2_000):
        n_ins = int(rng.integers(1, max_insert + 1))
        n_smp = int(rng.integers(1, max_sample + 1))
        ins, smp = rl.can_insert(n_ins), rl.can_sample(size, n_smp)
        assert ins or smp, (rl.diff, n_ins, n_smp)
        if ins and (not smp or rng.random() < 0.5):
            size += n_ins
            rl.record_insert(size, n_ins)
        else:
            rl.record_sample(n_smp)
        if size >= 8:
            assert -tol <= rl.diff <= tol
