"""actors.epsilon schedules and actors.policy.epsilon_greedy."""

from __future__ import annotations

import numpy as np
import pytest

from actors import epsilon
from actors.policy import epsilon_greedy

pytestmark = pytest.mark.unit


# -- linear ------------------------------------------------------------------------
def test_linear_endpoints_and_midpoint():
    assert epsilon.linear(0, 1.0, 0.1, 1000) == pytest.approx(1.0)
    assert epsilon.linear(500, 1.0, 0.1, 1000) == pytest.approx(0.55)
    assert epsilon.linear(250, 1.0, 0.0, 1000) == pytest.approx(0.75)
    assert epsilon.linear(1000, 1.0, 0.1, 1000) == pytest.approx(0.1)


def test_linear_clamps_outside_the_decay():
    assert epsilon.linear(10**9, 1.0, 0.02, 1000) == pytest.approx(0.02)
    assert epsilon.linear(-50, 1.0, 0.02, 1000) == pytest.approx(1.0)


def test_linear_is_monotone_non_increasing():
    values = [epsilon.linear(s, 1.0, 0.05, 100) for s in range(0, 200, 5)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


# -- apex --------------------------------------------------------------------------
def test_apex_single_actor_is_base():
    out = epsilon.apex(1, base=0.4, alpha=7.0)
    assert out.shape == (1,)
    assert out[0] == pytest.approx(0.4)


def test_apex_hand_computed_values():
    # eps_i = base ** (1 + alpha * i / (N - 1)), N=3, base=0.4, alpha=7
    out = epsilon.apex(3, base=0.4, alpha=7.0)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, [0.4, 0.4**4.5, 0.4**8.0], rtol=1e-12)
    np.testing.assert_allclose(out, [0.4, 0.016190861620062, 0.00065536], rtol=1e-9)


def test_apex_two_actors_and_alpha_zero():
    np.testing.assert_allclose(epsilon.apex(2, 0.5, 2.0), [0.5, 0.125])
    np.testing.assert_allclose(epsilon.apex(4, 0.3, 0.0), [0.3] * 4)


def test_apex_many_actors_decreasing_within_bounds():
    out = epsilon.apex(256, 0.4, 7.0)
    assert out[0] == pytest.approx(0.4) and out[-1] == pytest.approx(0.4**8)
    assert np.all(np.diff(out) < 0)


# -- epsilon_greedy ----------------------------------------------------------------
Q = np.array([[0.0, 3.0, 1.0], [5.0, -1.0, 2.0], [0.0, 0.0, 7.0], [-3.0, -2.0, -1.0]])


def test_eps_zero_is_argmax():
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = epsilon_greedy(Q, 0.0, rng)
        assert actions.dtype == np.int64
        assert actions.tolist() == [1, 0, 2, 2]


def test_eps_one_is_uniform_over_actions():
    rng = np.random.default_rng(123)
    q = np.tile([[0.0, 0.0, 10.0, 0.0]], (50_000, 1))  # argmax always 2
    actions = epsilon_greedy(q, 1.0, rng)
    counts = np.bincount(actions, minlength=4)
    # expected 12,500 each; sd ~97, so a 5 % band is > 6 sd wide
    assert np.all(np.abs(counts / len(actions) - 0.25) < 0.0125), counts


def test_intermediate_eps_mixes_greedy_and_random():
    rng = np.random.default_rng(7)
    q = np.tile([[0.0, 1.0]], (40_000, 1))
    actions = epsilon_greedy(q, 0.3, rng)
    # P(action 0) = eps / 2 = 0.15
    assert abs(np.mean(actions == 0) - 0.15) < 0.01


def test_per_env_epsilon_array():
    rng = np.random.default_rng(5)
    envs = 4
    q = np.tile([[0.0, 1.0, 0.0, 0.0]], (envs, 1))  # greedy action 1 everywhere
    eps = np.array([0.0, 1.0, 0.0, 1.0])
    picks = np.stack([epsilon_greedy(q, eps, rng) for _ in range(4_000)])
    assert np.all(picks[:, 0] == 1) and np.all(picks[:, 2] == 1)
    for col in (1, 3):
        freq = np.bincount(picks[:, col], minlength=4) / len(picks)
        assert np.all(np.abs(freq - 0.25) < 0.04), freq


def test_same_seed_same_actions():
    a = epsilon_greedy(Q, 0.5, np.random.default_rng(42))
    b = epsilon_greedy(Q, 0.5, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
