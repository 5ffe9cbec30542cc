"""A user's own env, as a user would bring it: a class, a factory with kwargs, a wrapper.

Used through ``--env.id tests.user_envs:make_target --env.kwargs '{"length": 5}'
--env.wrappers tests.user_envs:RewardScale`` (run from the repository root: the working
directory is on the path of every process that builds envs), and by gymnasium's
``tests.user_envs:UserTarget-v0``, which importing this module registers.

**Target** (:class:`TargetEnv`): each step shows ``n_actions`` numbers drawn uniformly
from [-1, 1] (a float32 Box) and pays 1.0 when the action is the index of the largest,
0.0 otherwise; an episode is ``length`` steps (then ``terminated``). The reward does not
depend on earlier actions, so greedy on the reward is optimal:

- optimal return: exactly ``length`` (ties have probability 0);
- uniformly random actions: ``length / n_actions`` expected (5/3 ~ 1.67 for the
  defaults);
- an untrained Q-network (``dqn.networks``, hidden 128,128, n_actions 3): over 300
  seeds it picks the largest on 34% of observations on average, 76% at most, so its
  greedy return is about 0.34 * ``length`` and was never above 0.76 * ``length``;
- a DQN learns it in a few hundred updates (a Q regression on batches of 64 picked the
  largest on 98% of observations after 250 updates).

With :class:`RewardScale` (x2 by default) the optimum is ``2 * length``. A solve
threshold of ``0.9 * 2 * length`` (9.0 for ``length=5``) is out of reach both of an
untrained policy and of any policy acting on an env the wrapper was not applied to
(at most ``length``), so reaching it shows the kwargs and the wrapper made it to
every process.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

REGISTERED_ID = "UserTarget-v0"


class TargetEnv(gym.Env):
    """Pick the index of the largest of ``n_actions`` uniform numbers, ``length`` times."""

    metadata = {"render_modes": []}

    def __init__(self, length: int = 5, n_actions: int = 3):
        if int(length) != length or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if int(n_actions) != n_actions or n_actions < 2:
            raise ValueError(f"n_actions must be an integer >= 2, got {n_actions!r}")
        self.length, self.n_actions = int(length), int(n_actions)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(self.n_actions,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.n_actions)
        self._t = 0
        self._obs = np.zeros(self.n_actions, dtype=np.float32)

    def _draw(self) -> np.ndarray:
        self._obs = self.np_random.uniform(-1.0, 1.0, self.n_actions).astype(np.float32)
        return self._obs.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action):
        action = int(action)
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action {action} out of range for {self.n_actions} actions")
        reward = 1.0 if action == int(np.argmax(self._obs)) else 0.0
        self._t += 1
        return self._draw(), reward, self._t >= self.length, False, {}


def make_target(**kwargs) -> TargetEnv:
    """The factory form: ``make_target(length=5, n_actions=3)``."""
    return TargetEnv(**kwargs)


class RewardScale(gym.RewardWrapper):
    """Rewards times ``scale`` (2.0 by default, so ``RewardScale(env)`` shows)."""

    def __init__(self, env: gym.Env, scale: float = 2.0):
        super().__init__(env)
        self.scale = float(scale)

    def reward(self, reward):
        return self.scale * reward


if REGISTERED_ID not in gym.registry:
    gym.register(
        REGISTERED_ID,
        entry_point=TargetEnv,
        kwargs={"length": 5, "n_actions": 3},
        reward_threshold=4.5,
    )
