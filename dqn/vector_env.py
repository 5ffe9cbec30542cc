"""The vector env actors and evaluators step: gymnasium's ``SyncVectorEnv`` semantics in
NEXT_STEP autoreset mode, without its per-step bookkeeping.

Per vector step ``SyncVectorEnv`` also merges every sub-env's ``info`` into one dict
(a Python call per env per key), deep-copies the observations it has just stacked and
copies rewards and flags once more. Nobody here reads those infos, and at 8 CartPole
envs that bookkeeping cost 20-25% of the vector step (docs/actors.md). This class
steps the same envs in the same order with the same actions (the numpy scalars
``SyncVectorEnv`` passes), resets them the same way (``seed + i`` on a seeded reset;
an env that ended is reset on its next step, which returns reward 0 and no end), and
returns fresh arrays of the same dtypes each step. ``infos`` is always ``{}``.
``tests/unit/test_vector_env.py`` steps both side by side and compares every array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space


class LeanVectorEnv(gym.vector.VectorEnv):
    """Sub-envs stepped one after the other in this process; observations of a Box space."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]):
        self.envs = [fn() for fn in env_fns]
        if not self.envs:
            raise ValueError("LeanVectorEnv: needs at least one env")
        first = self.envs[0]
        self.num_envs = len(self.envs)
        self.metadata = {**first.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.render_mode = first.render_mode
        self.spec = first.spec
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        for i, env in enumerate(self.envs[1:], 1):
            if (
                env.observation_space != self.single_observation_space
                or env.action_space != self.single_action_space
            ):
                raise ValueError(
                    f"LeanVectorEnv: env {i} has spaces {env.observation_space}, "
                    f"{env.action_space}; env 0 has {self.single_observation_space}, "
                    f"{self.single_action_space}"
                )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs_shape = (self.num_envs, *self.single_observation_space.shape)
        self._obs_dtype = self.single_observation_space.dtype
        self._autoreset = [False] * self.num_envs

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options=None):
        """Reset every env (``seed + i`` for an int seed). ``options`` goes to each env;
        SyncVectorEnv's partial reset (``options["reset_mask"]``) is not supported."""
        if options and "reset_mask" in options:
            raise ValueError("reset: options['reset_mask'] (a partial reset) is not supported")
        if seed is None:
            seeds: Sequence[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
        obs = np.empty(self._obs_shape, self._obs_dtype)
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            obs[i], _ = env.reset(seed=s, options=options)
        self._autoreset = [False] * self.num_envs
        return obs, {}

    def step(self, actions):
        n = self.num_envs
        obs = np.empty(self._obs_shape, self._obs_dtype)
        rewards = np.zeros(n, np.float64)
        terminated = np.zeros(n, np.bool_)
        truncated = np.zeros(n, np.bool_)
        autoreset = self._autoreset
        if len(actions) != n:
            raise ValueError(f"step: {len(actions)} actions for {n} envs")
        for i, action in enumerate(actions):
            if autoreset[i]:
                obs[i], _ = self.envs[i].reset()
            else:
                obs[i], rewards[i], terminated[i], truncated[i], _ = self.envs[i].step(action)
        self._autoreset = np.logical_or(terminated, truncated).tolist()
        return obs, rewards, terminated, truncated, {}

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()
