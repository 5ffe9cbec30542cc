"""dqn.vector_env.LeanVectorEnv steps exactly what gymnasium's SyncVectorEnv steps
(NEXT_STEP autoreset): same observations, rewards, ends and dtypes, step after step,
through many episode ends, for the ids the service trains and a probe."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dqn.config import EnvConfig
from dqn.envs import make_vector_env
from dqn.vector_env import LeanVectorEnv


@pytest.mark.parametrize(
    "env_id, steps",
    [
        ("CartPole-v1", 3000),
        ("Acrobot-v1", 1500),
        ("MountainCar-v0", 1500),
        ("Probe3-v0", 200),
        ("PixelCartPole-v1", 60),
    ],
)
def test_lean_vector_env_steps_what_sync_vector_env_steps(env_id, steps):
    cfg = EnvConfig(id=env_id)
    n = 2 if env_id == "PixelCartPole-v1" else 5
    lean = make_vector_env(cfg, n, seed=3)
    ref = make_vector_env(cfg, n, seed=3, sync=True)
    assert isinstance(lean, LeanVectorEnv) and isinstance(ref, gym.vector.SyncVectorEnv)
    assert lean.single_observation_space == ref.single_observation_space
    assert lean.observation_space == ref.observation_space
    assert lean.action_space == ref.action_space
    assert lean.metadata["autoreset_mode"] == ref.metadata["autoreset_mode"]
    (o1, info), (o2, _) = lean.reset(seed=11), ref.reset(seed=11)
    assert info == {}
    np.testing.assert_array_equal(o1, o2)
    assert o1.dtype == o2.dtype and o1.shape == o2.shape
    # a policy that mixes greedy runs and noise, so episodes of many lengths end
    rng = np.random.default_rng(0)
    actions = rng.integers(0, int(lean.single_action_space.n), (steps, n))
    ends = 0
    for t in range(steps):
        got, want = lean.step(actions[t]), ref.step(actions[t])
        for a, b in zip(got[:4], want[:4], strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape, t
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        assert got[4] == {}
        ends += int((got[2] | got[3]).sum())
    assert ends >= n, f"only {ends} episode ends in {steps} steps: the autoreset went untested"
    # a fresh array each step: what a caller kept is not overwritten by the next step
    kept = lean.step(actions[0])[0]
    copy = kept.copy()
    lean.step(actions[1])
    np.testing.assert_array_equal(kept, copy)
    lean.close()
    ref.close()


def test_lean_vector_env_refuses_a_wrong_number_of_actions_and_seeds():
    env = make_vector_env(EnvConfig(id="CartPole-v1"), 3, seed=0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="2 actions for 3 envs"):
        env.step(np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="2 seeds for 3 envs"):
        env.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.array([True, False, True])})
    obs, _ = env.reset(seed=[1, None, 3])
    assert obs.shape == (3, 4)
    env.close()
    assert env.closed


def test_lean_vector_env_refuses_envs_of_different_spaces():
    with pytest.raises(ValueError, match="env 1 has spaces"):
        LeanVectorEnv([lambda: gym.make("CartPole-v1"), lambda: gym.make("Acrobot-v1")])
