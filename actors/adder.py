"""The adder: turns vector-env steps into n-step transitions and TransitionBatches.

Gymnasium traps handled here (vector env in NEXT_STEP autoreset mode):

* ``terminated`` alone is the bootstrap mask. A truncated episode (time limit) still
  bootstraps from its real final observation.
* The step that ends an episode returns the real final observation as ``next_obs``;
  the env resets on the *following* step, which only returns the first observation
  of the new episode (reward 0, action ignored). That reset-only step is not a
  transition and is never stored.

With ``n_step = n`` a transition is ``(o_t, a_t, sum_k gamma^k r_{t+k}, o_{t+m},
terminated, gamma^m)`` with ``m = n`` normally, or fewer steps when the episode ends
inside the window (``terminated`` then cuts the bootstrap; truncation keeps it).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from dqn import codec
from dqn.interfaces import TRANSITION_COLUMNS
from dqn.v1 import replay_pb2 as pb


class TransitionAdder:
    def __init__(
        self,
        num_envs: int,
        writer,
        actor_id: int,
        incarnation: int,
        gamma: float,
        n_step: int = 1,
        push_every: int = 64,
        policy_version: Callable[[], int] = lambda: 0,
        epsilon: Callable[[], float] = lambda: 0.0,
        priority_fn: Callable[..., np.ndarray] | None = None,
        obs_dtype=np.float32,
    ):
        """``priority_fn(obs, action, reward, next_obs, terminated, discount) -> [N]``, when
        given, fills each batch's ``priority`` column (prioritized replay)."""
        self.num_envs = num_envs
        self.writer = writer
        self.actor_id = actor_id
        self.incarnation = incarnation
        self.gamma = float(gamma)
        self.n_step = int(n_step)
        self.push_every = int(push_every)
        self.policy_version = policy_version
        self.epsilon = epsilon
        self.priority_fn = priority_fn
        self.obs_dtype = np.dtype(obs_dtype)  # on the wire: float32, or uint8 for images
        self.sequence = 0
        self.env_steps = 0
        self._obs: np.ndarray | None = None
        self._reset_next = np.zeros(num_envs, dtype=bool)
        self._windows = [collections.deque() for _ in range(num_envs)]  # (obs, action, reward)
        self._ep_return = np.zeros(num_envs, dtype=np.float64)
        self._ep_length = np.zeros(num_envs, dtype=np.int64)
        self._rows: list[tuple] = []
        self._episodes: list[pb.Episode] = []

    def observe_first(self, obs: np.ndarray) -> None:
        """The observations returned by ``env.reset()``, ``[E, *obs_shape]``."""
        self._obs = np.array(obs, copy=True)
        self._reset_next[:] = False

    def add(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """One vector step: the actions taken in ``self._obs`` and what the env returned."""
        if self._obs is None:
            raise RuntimeError("observe_first() must be called before add()")
        self.env_steps += self.num_envs
        for i in range(self.num_envs):
            if self._reset_next[i]:  # reset-only step: not a transition
                continue
            window = self._windows[i]
            window.append((self._obs[i], int(actions[i]), float(rewards[i])))
            self._ep_return[i] += rewards[i]
            self._ep_length[i] += 1
            done = bool(terminated[i] or truncated[i])
            if done:
                # Flush everything: each pending start gets the remaining rewards.
                while window:
                    self._emit(window, next_obs[i], bool(terminated[i]))
                    window.popleft()
                self._episodes.append(
                    pb.Episode(
                        actor_id=self.actor_id,
                        episode_return=float(self._ep_return[i]),
                        length=int(self._ep_length[i]),
                        truncated=bool(truncated[i]) and not terminated[i],
                    )
                )
                self._ep_return[i] = 0.0
                self._ep_length[i] = 0
            elif len(window) == self.n_step:
                self._emit(window, next_obs[i], False)
                window.popleft()
        self._reset_next = np.logical_or(terminated, truncated)
        self._obs = np.array(next_obs, copy=True)
        if len(self._rows) >= self.push_every:
            self.flush()

    def _emit(self, window, bootstrap_obs: np.ndarray, terminated: bool) -> None:
        if len(self._rows) >= self.push_every:  # no batch larger than push_every
            self.flush()
        ret, g = 0.0, 1.0
        for _, _, r in window:
            ret += g * r
            g *= self.gamma
        obs0, a0, _ = window[0]
        self._rows.append((obs0, a0, ret, bootstrap_obs, terminated, g))

    def flush(self) -> None:
        """Send what is pending as one TransitionBatch (no-op when empty)."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        obs, action, reward, next_obs, term, disc = zip(*rows, strict=True)
        self.sequence += 1
        batch = pb.TransitionBatch(
            actor_id=self.actor_id,
            sequence=self.sequence,
            incarnation=self.incarnation,
            policy_version=self.policy_version(),
            epsilon=self.epsilon(),
            actor_env_steps=self.env_steps,
            episodes=self._episodes,
        )
        self._episodes = []
        cols = (
            np.stack(obs).astype(self.obs_dtype, copy=False),
            np.asarray(action, dtype=np.int64),
            np.asarray(reward, dtype=np.float32),
            np.stack(next_obs).astype(self.obs_dtype, copy=False),
            np.asarray(term, dtype=np.bool_),
            np.asarray(disc, dtype=np.float32),
        )
        for name, array in zip(TRANSITION_COLUMNS, cols, strict=True):
            codec.encode(array, getattr(batch, name))
        if self.priority_fn is not None:
            codec.encode(np.asarray(self.priority_fn(*cols), np.float32), batch.priority)
        self.writer.write(batch)
