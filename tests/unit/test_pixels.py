"""PixelCartPole-v1 (dqn.pixels) and the conv Q-network chosen for image observations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from actors.adder import TransitionAdder
from dqn import codec
from dqn.config import EnvConfig, NetworkConfig
from dqn.envs import env_spec, make_env, make_vector_env, wire_dtype
from dqn.networks import ConvQNetwork, QNetwork, build_q_network
from dqn.pixels import CROP_WIDTH, ENV_ID, FRAME_SHAPE, FRAMES, SCALE, crop_columns

pytestmark = pytest.mark.unit
OBS_SHAPE = (FRAMES, *FRAME_SHAPE)


def rollout(seed: int, actions) -> list[tuple]:
    env = make_env(EnvConfig(id=ENV_ID))
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0, False, False)]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append((obs, r, term, trunc))
        if term or trunc:
            break
    env.close()
    return out


def test_spec_shape_dtype_and_threshold():
    spec = env_spec(EnvConfig(id=ENV_ID))
    assert spec.obs_shape == OBS_SHAPE == (2, 40, 80)
    assert (spec.n_actions, spec.reward_threshold) == (2, 195.0)
    assert spec.obs_dtype == "uint8"
    assert env_spec(EnvConfig(id="CartPole-v1")).obs_dtype == "float32"
    assert gym.spec(ENV_ID).max_episode_steps == 500
    for obs, *_ in rollout(0, [0, 1, 1, 0]):
        assert obs.dtype == np.uint8 and obs.shape == OBS_SHAPE
        assert obs.max() > 100  # the cart and pole are bright on a dark background


def test_same_seed_same_frames_and_stack_shifts():
    actions = [0, 1, 1, 0, 1, 0, 0, 1]
    a, b = rollout(3, actions), rollout(3, actions)
    assert len(a) == len(b)
    for (oa, *ra), (ob, *rb) in zip(a, b, strict=True):
        assert np.array_equal(oa, ob) and ra == rb
    assert np.array_equal(a[0][0][0], a[0][0][1])  # reset repeats the first frame
    for (prev, *_), (obs, *_) in zip(a, a[1:], strict=False):
        assert np.array_equal(obs[0], prev[1])  # oldest first: the stack shifted by one
    assert not np.array_equal(a[-1][0][1], a[-2][0][1])  # and a new frame arrived
    assert not np.array_equal(rollout(4, actions)[0][0], a[0][0])


def test_rewards_and_episode_ends_are_cartpoles():
    """Always pushing left ends the episode exactly when CartPole-v1's does."""
    pixels = rollout(7, [0] * 600)
    plain = gym.make("CartPole-v1")
    plain.reset(seed=7)
    for _, r, term, trunc in pixels[1:]:
        _, r0, term0, trunc0, _ = plain.step(0)
        assert (r, term, trunc) == (r0, term0, trunc0)
    assert pixels[-1][2] and not pixels[-1][3]
    plain.close()


def cart_column(env, x: float, theta: float = 0.0) -> float:
    """Mean column of the cart's body in the processed frame with the cart at ``x``."""
    env.unwrapped.cartpole.state = np.array([x, 0.0, theta, 0.0])
    frame = env.unwrapped.frame().astype(np.float64)
    body = frame[36:38]  # screen rows 304..312: the cart's body below the track line
    return float((body * np.arange(frame.shape[1])).sum() / body.sum())


def test_crop_follows_the_cart_and_shows_it_off_centre_near_the_edges():
    env = make_env(EnvConfig(id=ENV_ID))
    env.reset(seed=0)
    centre = FRAME_SHAPE[1] / 2
    for x in (-1.1, 0.0, 0.5, 1.1):  # |x| < 1.12: the window is centred on the cart
        assert abs(cart_column(env, x) - centre) < 1.0, x
    # Near an edge the window stops at the screen border and the cart moves off centre.
    right = (2.0 * 125 + 300 - (600 - CROP_WIDTH)) / SCALE
    left = (-2.0 * 125 + 300) / SCALE
    assert abs(cart_column(env, 2.0) - right) < 1.0
    assert abs(cart_column(env, -2.0) - left) < 1.0
    assert crop_columns(0.0) == 300 - CROP_WIDTH // 2
    assert (crop_columns(-2.4), crop_columns(2.4)) == (0, 600 - CROP_WIDTH)
    # The pole's angle changes the frame; the same state renders the same frame.
    env.unwrapped.cartpole.state = np.array([0.0, 0.0, 0.15, 0.0])
    tilted = env.unwrapped.frame()
    env.unwrapped.cartpole.state = np.array([0.0, 0.0, -0.15, 0.0])
    assert not np.array_equal(tilted, env.unwrapped.frame())
    env.unwrapped.cartpole.state = np.array([0.0, 0.0, 0.15, 0.0])
    assert np.array_equal(tilted, env.unwrapped.frame())
    env.close()


def test_vector_env_and_adder_keep_uint8_on_the_wire():
    env = make_vector_env(EnvConfig(id=ENV_ID), 2, seed=0)
    assert wire_dtype(env.single_observation_space) == np.uint8

    class Writer:
        def __init__(self):
            self.batches = []

        def write(self, batch):
            self.batches.append(batch)

    writer = Writer()
    adder = TransitionAdder(2, writer, 0, 1, gamma=0.99, n_step=1, push_every=4, obs_dtype=np.uint8)
    obs, _ = env.reset(seed=0)
    adder.observe_first(obs)
    first = obs.copy()
    for _ in range(3):
        actions = np.array([0, 1])
        nxt, r, term, trunc, _ = env.step(actions)
        adder.add(actions, r, nxt, term, trunc)
    adder.flush()
    stored = codec.decode(writer.batches[0].obs, "obs")
    assert writer.batches[0].obs.dtype == codec.pb.DTYPE_UINT8
    assert stored.shape == (4, *OBS_SHAPE)  # push_every rows: 2 vector steps of 2 envs
    assert np.array_equal(stored[:2], first)  # bit-exact frames, env 0 then env 1
    env.close()


@pytest.mark.parametrize("dueling", [False, True])
def test_conv_network_is_chosen_for_images_and_scales_pixels(dueling):
    torch.manual_seed(0)
    cfg = NetworkConfig(hidden=(64,), dueling=dueling)
    net = build_q_network(OBS_SHAPE, 2, cfg)
    assert isinstance(net, ConvQNetwork)
    assert isinstance(build_q_network((4,), 2, cfg), QNetwork)
    frames = torch.randint(0, 256, (5, *OBS_SHAPE), dtype=torch.uint8)
    q = net(frames)
    assert q.shape == (5, 2) and q.dtype == torch.float32
    assert torch.allclose(q, net(frames.float()))  # uint8 or float pixel values alike
    if dueling:
        assert net.mlp.value is not None
    q.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_conv_network_exports_like_the_mlp(tmp_path):
    from dqn.config import Config
    from dqn.policy_file import load_policy
    from learner.policy_export import export_policy

    net = build_q_network(OBS_SHAPE, 2, NetworkConfig(hidden=(32,)))
    env = EnvConfig(id=ENV_ID, obs_shape=OBS_SHAPE, obs_dtype="uint8", n_actions=2)
    export_policy(
        net, tmp_path / "policy.safetensors", Config(env=env, network=NetworkConfig(hidden=(32,)))
    )
    policy = load_policy(tmp_path)
    assert policy.obs_dtype == "uint8" and policy.model.__class__ is ConvQNetwork
    frames = torch.randint(0, 256, (3, *OBS_SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        expected = net(frames).numpy()
    np.testing.assert_allclose(policy.q_values(frames.float()), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy.q_values(frames.numpy()), expected, rtol=1e-5, atol=1e-6)
    assert policy.predict(frames.numpy()).tolist() == expected.argmax(axis=1).tolist()


def test_frames_are_cartpoles_rgb_array_pixels():
    """The row-major read of CartPole's surface equals its own rgb_array frame."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    from dqn.pixels import render_rgb

    env = make_env(EnvConfig(id=ENV_ID))
    env.reset(seed=1)
    reference = CartPoleEnv(render_mode="rgb_array")
    reference.reset(seed=1)
    for state in ([0.3, 0.0, 0.1, 0.0], [-1.7, 0.5, -0.18, 0.2]):
        env.unwrapped.cartpole.state = reference.state = np.array(state)
        expected = reference.render()
        assert expected.shape == (400, 600, 3)
        assert np.array_equal(render_rgb(env.unwrapped.cartpole), expected)
    reference.close()
    env.close()
