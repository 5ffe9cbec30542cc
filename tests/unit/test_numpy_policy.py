"""actors.policy: the numpy forward pass is dqn.networks.QNetwork's, the actor's MLP
path keeps torch out of its process, and the block-drawn epsilon-greedy is the rule."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from actors.policy import EpsilonGreedy, NumpyQNetwork, TorchPolicy, build_policy
from actors.priority import td_priorities
from actors.weight_client import decode_weights, load_numpy_state
from dqn import weights as weights_codec
from dqn.config import NetworkConfig
from dqn.networks import ConvQNetwork, QNetwork

pytestmark = pytest.mark.unit


def numpy_state(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(
    "obs_dim, n_actions, hidden, dueling",
    [
        (4, 2, (128, 128), False),
        (4, 2, (128, 128), True),
        (6, 3, (64,), False),
        (2, 5, (32, 16, 8), True),
    ],
)
@pytest.mark.parametrize("batch", [1, 8, 300])
def test_numpy_forward_equals_torch_qnetwork(obs_dim, n_actions, hidden, dueling, batch):
    torch.manual_seed(batch)
    net = QNetwork(obs_dim, n_actions, hidden, dueling).eval()
    policy = NumpyQNetwork(obs_dim, n_actions, hidden, dueling)
    policy.load_state_dict(numpy_state(net))
    obs = np.random.default_rng(batch).standard_normal((batch, obs_dim)).astype(np.float32) * 3
    with torch.no_grad():
        want = net(torch.from_numpy(obs)).numpy()
    got = policy(obs)
    assert got.dtype == np.float32 and got.shape == (batch, n_actions)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the actions agree wherever the best two Q-values are not a float tie
    top2 = np.sort(want, axis=1)[:, -2:] if n_actions > 1 else None
    clear = (top2[:, 1] - top2[:, 0] > 1e-4) if top2 is not None else np.ones(batch, bool)
    np.testing.assert_array_equal(got.argmax(1)[clear], want.argmax(1)[clear])


@pytest.mark.parametrize("dueling", [False, True])
def test_each_call_returns_its_own_array_whatever_the_batch_sizes(dueling):
    """Hidden activations are reused per batch size; what a call returns is not."""
    net = NumpyQNetwork(4, 3, (16, 8), dueling).init(np.random.default_rng(1))
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
    qa = net(a)
    kept = qa.copy()
    for size in (8, 64, 1, 5, 8, 3, 7, 9, 11, 13, 8):  # more sizes than it keeps buffers for
        net(rng.normal(size=(size, 4)))
    qb = net(b)
    np.testing.assert_array_equal(qa, kept)
    assert not np.shares_memory(qa, qb)
    np.testing.assert_array_equal(net(a), kept)


def test_numpy_network_takes_exactly_qnetworks_keys_and_shapes():
    net = QNetwork(4, 2, (16, 16), dueling=True)
    policy = NumpyQNetwork(4, 2, (16, 16), dueling=True)
    assert set(policy.shapes) == set(net.state_dict())
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == policy.shapes
    state = numpy_state(net)
    with pytest.raises(ValueError, match=r"missing keys \['value.bias'\]"):
        policy.load_state_dict({k: v for k, v in state.items() if k != "value.bias"})
    with pytest.raises(ValueError, match=r"state_dict\[body.3.weight\]: shape \[16, 8\]"):
        policy.load_state_dict({**state, "body.3.weight": np.zeros((16, 8), np.float32)})
    plain = NumpyQNetwork(4, 2, (16, 16))
    with pytest.raises(ValueError, match=r"unexpected keys \['value.bias', 'value.weight'\]"):
        plain.load_state_dict(state)


def test_init_is_torch_linear_scale_and_round_trips_to_torch():
    policy = NumpyQNetwork(4, 2, (128, 128)).init(np.random.default_rng(0))
    w = policy.state_dict()["body.3.weight"]
    assert np.abs(w).max() <= 1 / np.sqrt(128) and np.abs(w).max() > 0.9 / np.sqrt(128)
    net = QNetwork(4, 2, (128, 128)).eval()
    load_numpy_state(net, policy.state_dict())
    obs = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(
            policy(obs), net(torch.from_numpy(obs)).numpy(), rtol=1e-5, atol=1e-6
        )


def test_weights_decoded_without_torch_equal_from_proto_and_load_into_both():
    torch.manual_seed(3)
    net = QNetwork(4, 2, (32, 32), dueling=True)
    msg = weights_codec.to_proto(net.state_dict(), version=7)
    state = decode_weights(msg)
    ref = weights_codec.from_proto(msg)
    assert set(state) == set(ref)
    for k, v in state.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, ref[k].numpy())
    policy = NumpyQNetwork(4, 2, (32, 32), dueling=True)
    load_numpy_state(policy, state)
    other = QNetwork(4, 2, (32, 32), dueling=True).eval()
    load_numpy_state(other, state)
    obs = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(
            policy(obs), other(torch.from_numpy(obs)).numpy(), rtol=1e-5, atol=1e-6
        )


def test_torch_policy_for_images_matches_the_conv_net():
    torch.manual_seed(0)
    cfg = NetworkConfig(hidden=(32,), dueling=False)
    policy = build_policy((2, 40, 80), 2, cfg, np.random.default_rng(0))
    assert isinstance(policy, TorchPolicy) and isinstance(policy.net, ConvQNetwork)
    obs = np.random.default_rng(0).integers(0, 256, (8, 2, 40, 80), dtype=np.uint8)
    with torch.no_grad():
        want = policy.net(torch.from_numpy(obs)).numpy()
    np.testing.assert_array_equal(policy(obs), want)
    state = {k: v * 0 + 0.01 for k, v in policy.state_dict().items()}
    policy.load_state_dict(state)
    assert all(torch.all(p == 0.01) for p in policy.net.parameters())


def test_td_priorities_numpy_policy_equals_torch_net():
    torch.manual_seed(4)
    net = QNetwork(4, 2, (32,)).eval()
    policy = NumpyQNetwork(4, 2, (32,))
    policy.load_state_dict(numpy_state(net))
    rng = np.random.default_rng(0)
    cols = (
        rng.standard_normal((16, 4)).astype(np.float32),
        rng.integers(0, 2, 16),
        rng.standard_normal(16).astype(np.float32),
        rng.standard_normal((16, 4)).astype(np.float32),
        rng.random(16) < 0.3,
        np.full(16, 0.97, np.float32),
    )
    got, want = td_priorities(policy, *cols), td_priorities(net, *cols)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_block_epsilon_greedy_rates_and_argmax():
    explore = EpsilonGreedy(4, 3, np.random.default_rng(0), block=64)
    q = np.tile([[0.0, 5.0, 1.0]], (4, 1))
    assert [explore(q, 0.0).tolist() for _ in range(100)] == [[1, 1, 1, 1]] * 100
    picks = np.stack([explore(q, np.array([0.0, 1.0, 0.5, 1.0])) for _ in range(6_000)])
    assert picks.dtype == np.int64
    assert np.all(picks[:, 0] == 1)
    for col in (1, 3):  # uniform over 3 actions: 1/3 each, sd ~0.006
        freq = np.bincount(picks[:, col], minlength=3) / len(picks)
        assert np.all(np.abs(freq - 1 / 3) < 0.03), freq
    # eps 0.5: greedy half the time plus a third of the random half
    assert abs(np.mean(picks[:, 2] == 1) - (0.5 + 0.5 / 3)) < 0.03


def test_mlp_actor_acts_without_importing_torch():
    code = """
import sys, threading
from actors.actor import Actor
from dqn.config import build

class Writer:
    n = 0
    def write(self, batch): Writer.n += 1
    def close(self): pass

class Weights:
    version = 0
    env_steps = 0
    def wait_first(self, timeout): return False
    def update(self, net): return False
    def close(self): pass

cfg = build({"env": {"id": "CartPole-v1"}, "actors": {"envs_per_actor": 4, "push_every": 16}})
import actors.actor as a
a.FIRST_WEIGHTS_TIMEOUT_S = 0.0
actor = Actor(cfg, 0, Writer(), Weights())
steps = actor.run(threading.Event(), max_steps=200)
assert steps == 800 and Writer.n > 10, (steps, Writer.n)
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not bad, bad[:5]
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
