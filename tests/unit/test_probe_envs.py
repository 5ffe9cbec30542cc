"""dqn.envs probe environments behave as documented."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dqn.config import EnvConfig
from dqn.envs import PROBES, env_spec, make_env, make_vector_env

pytestmark = pytest.mark.unit


def step(env, action):
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs.dtype == np.float32 and obs.shape == (1,)
    assert env.observation_space.contains(obs)
    return obs, reward, terminated, truncated


def test_spec_of_every_probe():
    expected_actions = {
        "Probe1-v0": 1,
        "Probe2-v0": 1,
        "Probe3-v0": 1,
        "Probe4-v0": 2,
        "Probe5-v0": 2,
    }
    for env_id in PROBES:
        spec = env_spec(EnvConfig(id=env_id))
        assert spec.obs_shape == (1,) and spec.obs_dtype == "float32"
        assert spec.n_actions == expected_actions[env_id], env_id
        assert spec.reward_threshold == PROBES[env_id][1], env_id


def test_probe1_one_step_reward_one():
    env = make_env(EnvConfig(id="Probe1-v0"))
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(obs, [0.0])
        obs, r, term, trunc = step(env, 0)
        assert (r, term, trunc) == (1.0, True, False)
        np.testing.assert_array_equal(obs, [0.0])


def test_probe2_reward_equals_observation_both_signs_seen():
    env = make_env(EnvConfig(id="Probe2-v0"))
    seen = set()
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        assert obs[0] in (-1.0, 1.0)
        seen.add(float(obs[0]))
        _, r, term, trunc = step(env, 0)
        assert r == obs[0]
        assert (term, trunc) == (True, False)
    assert seen == {-1.0, 1.0}


def test_probe2_is_reproducible_with_seed():
    a, b = make_env(EnvConfig(id="Probe2-v0")), make_env(EnvConfig(id="Probe2-v0"))
    assert [a.reset(seed=s)[0][0] for s in range(10)] == [b.reset(seed=s)[0][0] for s in range(10)]


def test_probe3_two_steps_reward_at_end():
    env = make_env(EnvConfig(id="Probe3-v0"))
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(obs, [0.0])
        obs, r, term, trunc = step(env, 0)
        np.testing.assert_array_equal(obs, [1.0])
        assert (r, term, trunc) == (0.0, False, False)
        obs, r, term, trunc = step(env, 0)
        assert (r, term, trunc) == (1.0, True, False)


@pytest.mark.parametrize("action, reward", [(0, -1.0), (1, 1.0)])
def test_probe4_reward_by_action(action, reward):
    env = make_env(EnvConfig(id="Probe4-v0"))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0])
    _, r, term, trunc = step(env, action)
    assert (r, term, trunc) == (reward, True, False)


def test_probe5_reward_when_action_matches_obs():
    env = make_env(EnvConfig(id="Probe5-v0"))
    seen = set()
    for seed in range(40):
        for action in (0, 1):
            obs, _ = env.reset(seed=seed)
            o = int(obs[0])
            assert o in (0, 1) and obs[0] == o
            seen.add(o)
            _, r, term, trunc = step(env, action)
            assert r == (1.0 if action == o else -1.0)
            assert (term, trunc) == (True, False)
    assert seen == {0, 1}


@pytest.mark.parametrize("env_id", ["Probe4-v0", "Probe5-v0"])
def test_probe_rejects_out_of_range_action(env_id):
    env = make_env(EnvConfig(id=env_id))
    env.reset(seed=0)
    with pytest.raises((ValueError, AssertionError)):
        env.step(2)


def test_probes_registered_with_time_limit_and_threshold():
    make_env(EnvConfig(id="Probe1-v0"))
    for env_id, (_, threshold) in PROBES.items():
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 10
        assert spec.reward_threshold == threshold


def test_vector_env_is_next_step_autoreset():
    env = make_vector_env(EnvConfig(id="Probe3-v0"), 2, seed=0)
    try:
        assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
        obs, _ = env.reset(seed=0)
        np.testing.assert_array_equal(obs, [[0.0], [0.0]])
        obs, r, term, trunc, _ = env.step(np.array([0, 0]))
        np.testing.assert_array_equal(obs, [[1.0], [1.0]])
        obs, r, term, trunc, _ = env.step(np.array([0, 0]))
        assert term.all() and r.tolist() == [1.0, 1.0]
        np.testing.assert_array_equal(obs, [[1.0], [1.0]])  # real final obs
        obs, r, term, trunc, _ = env.step(np.array([0, 0]))  # reset-only step
        np.testing.assert_array_equal(obs, [[0.0], [0.0]])
        assert r.tolist() == [0.0, 0.0] and not term.any() and not trunc.any()
    finally:
        env.close()
