"""dqn.td: the one TD target gives the same numbers on numpy arrays (the actors'
priorities) and on torch tensors (the learner's update)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from dqn.td import action_values, td_targets

pytestmark = pytest.mark.unit


def random_batch(seed: int, batch: int = 257, actions: int = 5):
    rng = np.random.default_rng(seed)
    gamma, n = 0.99, rng.integers(1, 6, size=batch)  # n-step: a different m per row
    return {
        "reward": rng.normal(size=batch).astype(np.float32),
        "terminated": rng.random(batch) < 0.3,
        "discount": (gamma**n).astype(np.float32),
        "next_q_online": rng.normal(size=(batch, actions)).astype(np.float32),
        "next_q_target": rng.normal(size=(batch, actions)).astype(np.float32),
    }


@pytest.mark.parametrize("double", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_and_torch_give_the_same_targets(seed, double):
    cols = random_batch(seed)
    y_np = td_targets(**cols, double=double)
    y_torch = td_targets(**{k: torch.as_tensor(v) for k, v in cols.items()}, double=double)
    assert isinstance(y_np, np.ndarray) and isinstance(y_torch, torch.Tensor)
    assert y_np.dtype == np.float32 and y_torch.dtype == torch.float32
    assert y_np.shape == y_torch.shape == (257,)
    np.testing.assert_allclose(y_np, y_torch.numpy(), rtol=1e-6, atol=1e-6)
    # and both equal the formula written out row by row
    best = (cols["next_q_online"] if double else cols["next_q_target"]).argmax(axis=1)
    for i in range(len(y_np)):
        bootstrap = 0.0 if cols["terminated"][i] else cols["next_q_target"][i, best[i]]
        want = cols["reward"][i] + cols["discount"][i] * bootstrap
        assert y_np[i] == pytest.approx(want, rel=1e-6, abs=1e-6)


def test_double_and_plain_differ_on_random_data():
    """The Double-DQN switch is not a no-op (so the test above checks two things)."""
    cols = random_batch(3)
    assert not np.allclose(td_targets(**cols, double=True), td_targets(**cols, double=False))


def test_terminal_rows_are_the_reward_even_if_the_bootstrap_is_not_finite():
    cols = random_batch(4, batch=6)
    cols["terminated"][:] = [True, False, True, False, True, False]
    cols["next_q_target"][0] = np.inf
    for xs in (cols, {k: torch.as_tensor(v) for k, v in cols.items()}):
        y = np.asarray(td_targets(**xs))
        np.testing.assert_array_equal(y[::2], cols["reward"][::2])
        assert np.isfinite(y).all()


def test_action_values_pick_the_taken_action_in_both():
    q = np.arange(12, dtype=np.float32).reshape(4, 3)
    action = np.array([2, 0, 1, 2])
    np.testing.assert_array_equal(action_values(q, action), [2.0, 3.0, 7.0, 11.0])
    got = action_values(torch.as_tensor(q), torch.as_tensor(action))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), [2.0, 3.0, 7.0, 11.0])


def test_the_numpy_path_does_not_import_torch():
    """Actors keep torch out of their process; the shared target must not pull it in."""
    code = (
        "import sys, numpy as np; from dqn.td import td_targets;"
        "td_targets(np.zeros(2, np.float32), np.zeros(2, bool), np.ones(2, np.float32),"
        " np.ones((2, 3), np.float32), np.ones((2, 3), np.float32));"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
