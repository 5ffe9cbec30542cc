"""Environment factory and probe environments for debugging learning code.

The probes isolate one piece of the learner at a time; with discount ``gamma``
their optimal Q-values are known exactly:

========== ======================================= ==============================
id         what it is                               Q* (per observation/action)
========== ======================================= ==============================
Probe1-v0  one obs, one action, one step, r=+1      Q(0)=1
Probe2-v0  obs +-1 at random, one step, r=obs       Q(-1)=-1, Q(+1)=+1
Probe3-v0  two steps (obs 0 then 1), r=+1 at end    Q(0)=gamma, Q(1)=1
Probe4-v0  one obs, two actions, r=-1/+1 by action  Q(0,a0)=-1, Q(0,a1)=+1
Probe5-v0  obs 0/1, two actions, r=+1 if a==obs    Q(o,a)=+1 if a==o else -1
========== ======================================= ==============================
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class _Probe(gym.Env):
    metadata = {"render_modes": []}
    n_actions = 1

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.n_actions)
        self._obs = 0.0
        self._t = 0

    def _draw(self) -> float:
        return 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._obs = self._draw()
        return np.array([self._obs], dtype=np.float32), {}

    def _reward(self, action: int) -> float:
        return 1.0

    def step(self, action):
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action} out of range for {type(self).__name__}")
        r = self._reward(action)
        return np.array([self._obs], dtype=np.float32), r, True, False, {}


class Probe1(_Probe):
    """One observation, one action, one step, reward +1: tests the value net alone."""


class Probe2(_Probe):
    """Observation +-1, one step, reward = observation: tests that Q depends on obs."""

    def _draw(self) -> float:
        return float(self.np_random.choice([-1.0, 1.0]))

    def _reward(self, action: int) -> float:
        return self._obs


class Probe3(_Probe):
    """Two steps, reward +1 only at the end: tests discounting and bootstrapping."""

    def step(self, action):
        if self._t == 0:
            self._t, self._obs = 1, 1.0
            return np.array([1.0], dtype=np.float32), 0.0, False, False, {}
        return np.array([self._obs], dtype=np.float32), 1.0, True, False, {}


class Probe4(_Probe):
    """Two actions, reward -1 for action 0 and +1 for action 1: tests the policy."""

    n_actions = 2

    def _reward(self, action: int) -> float:
        return 1.0 if action == 1 else -1.0


class Probe5(_Probe):
    """Observation 0/1, reward +1 when the action matches it: tests obs x action."""

    n_actions = 2

    def _draw(self) -> float:
        return float(self.np_random.integers(0, 2))

    def _reward(self, action: int) -> float:
        return 1.0 if action == int(self._obs) else -1.0


PROBES = {
    "Probe1-v0": (Probe1, 1.0),
    "Probe2-v0": (Probe2, None),
    "Probe3-v0": (Probe3, 1.0),
    "Probe4-v0": (Probe4, 1.0),
    "Probe5-v0": (Probe5, 1.0),
}


def register_probes() -> None:
    for env_id, (cls, threshold) in PROBES.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls, max_episode_steps=10, reward_threshold=threshold)


def register_envs() -> None:
    """Register this project's env ids: the probes and ``PixelCartPole-v1``."""
    from dqn.pixels import register_pixels  # imports gymnasium's classic-control CartPole

    register_probes()
    register_pixels()


def make_env(env_id: str, **kwargs) -> gym.Env:
    register_envs()
    return gym.make(env_id, **kwargs)


def make_vector_env(env_id: str, num_envs: int, seed: int | None = None) -> gym.vector.VectorEnv:
    """A SyncVectorEnv in gymnasium's NEXT_STEP autoreset mode (checked)."""
    register_envs()
    env = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    if seed is not None:
        env.action_space.seed(seed)
    return env


def wire_dtype(space: spaces.Space) -> np.dtype:
    """The dtype observations travel, are stored and are sampled in: uint8 for uint8
    observations (images: 4x smaller than float32), float32 for anything else."""
    return np.dtype(np.uint8) if space.dtype == np.uint8 else np.dtype(np.float32)


def env_obs_dtype(env_id: str) -> np.dtype:
    """:func:`wire_dtype` of ``env_id``'s observation space."""
    env = make_env(env_id)
    try:
        return wire_dtype(env.observation_space)
    finally:
        env.close()


def env_spec(env_id: str) -> tuple[tuple[int, ...], int, float | None]:
    """``(obs_shape, n_actions, reward_threshold)`` of a discrete-action env."""
    env = make_env(env_id)
    try:
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"env {env_id}: action space {env.action_space} is not Discrete")
        shape = tuple(int(d) for d in env.observation_space.shape)
        threshold = env.spec.reward_threshold if env.spec else None
        return shape, int(env.action_space.n), threshold
    finally:
        env.close()
