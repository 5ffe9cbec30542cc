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

from collections.abc import Callable

import numpy as np

from dqn import codec
from dqn.interfaces import TRANSITION_COLUMNS
from dqn.v1 import replay_pb2 as pb

_WIRE_DTYPES = {
    np.dtype(d): pb.DType.Value(codec.proto_dtype_name(d))
    for d in (np.float32, np.int64, np.uint8, np.bool_)
}


def _encode(array: np.ndarray, tensor: pb.Tensor) -> None:
    """``codec.encode`` for the adder's own columns (contiguous, native, known dtypes):
    one copy, into the message's bytes."""
    code = _WIRE_DTYPES.get(array.dtype)
    if code is None or not array.flags.c_contiguous:
        codec.encode(array, tensor)
        return
    tensor.dtype = code
    tensor.shape.extend(array.shape)
    tensor.data = array.tobytes()


class TransitionAdder:
    """Vectorized: a vector step is a few whole-array writes into a ring of recent steps
    (no per-env Python loop); the transitions are cut out of the ring, all envs and
    steps at once, when ``push_every`` of them are ready (or the ring is about to
    wrap). Batches, their order, sizes and episode records are those of the simple
    per-env algorithm described above: rows in (step, env) order, oldest window start
    first; every batch exactly ``push_every`` rows except the one ``flush()`` sends.
    """

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
        e, n = num_envs, self.n_step
        # gamma ** k by repeated multiplication, k = 0..n (as a running product would)
        g, powers = 1.0, []
        for _ in range(n + 1):
            powers.append(g)
            g *= self.gamma
        self._gpow = np.array(powers, dtype=np.float64)
        self._gpow32 = self._gpow.astype(np.float32)
        self._k = np.arange(n)
        # Ring of the last H steps: steps not cut yet (at most K) and the n-1 before
        # them that open windows start in, plus the newest observation.
        self._chunk = 2 * (-(-self.push_every // e)) + 2  # K
        self._ring = self._chunk + n + 1  # H
        h = self._ring
        self._obs_h: np.ndarray | None = None  # [H, E, *obs_shape]: obs at step t
        self._act_h = np.zeros((h, e), np.int64)
        self._rew_h = np.zeros((h, e), np.float64)
        self._len_h = np.zeros((h, e), np.int64)  # window length including step t
        self._done_h = np.zeros((h, e), bool)  # step t ended the episode
        self._term_h = np.zeros((h, e), bool)
        self._t = 0  # next step index
        self._cut = 0  # first step not cut into rows yet
        self._len = np.zeros(e, np.int64)  # open window length per env (< n)
        self._reset_next = np.zeros(e, dtype=bool)
        self._any_reset = False
        self._ep_return = np.zeros(e, dtype=np.float64)
        self._ep_start = np.zeros(e, dtype=np.int64)  # first step of the episode
        self._counted = 0  # rows completed so far (cut or not)
        self._sent = 0  # rows sent so far
        self._pending: list[tuple[np.ndarray, ...]] = []  # cut, unsent column chunks
        self._pending_rows = 0
        # (row position, return, length, truncated) of finished episodes not sent yet
        self._episodes: list[tuple[int, float, int, bool]] = []

    def observe_first(self, obs: np.ndarray) -> None:
        """The observations returned by ``env.reset()``, ``[E, *obs_shape]``."""
        obs = np.asarray(obs)
        if self._obs_h is None:
            self._obs_h = np.zeros((self._ring, *obs.shape), self.obs_dtype)
        self._obs_h[self._t % self._ring] = obs
        self._reset_next[:] = False
        self._any_reset = False

    def add(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """One vector step: the actions taken in the last observations and what the
        env returned. Whole-array operations only, except per finished episode."""
        if self._obs_h is None:
            raise RuntimeError("observe_first() must be called before add()")
        t, h, n = self._t, self._ring, self.n_step
        s = t % h
        ended = np.logical_or(terminated, truncated)
        if self._any_reset:  # reset-only steps: not transitions, windows stay empty
            reset = self._reset_next
            valid = ~reset
            length = self._len + valid  # open windows are empty (0) where resetting
            done = ended & valid
            any_done = bool(done.any())
            np.add(self._ep_return, rewards, out=self._ep_return, where=valid)
            self._ep_start[reset] = t + 1
        else:
            length = self._len + 1
            done = ended
            any_done = bool(ended.any())
            self._ep_return += rewards
        self._act_h[s] = actions
        self._rew_h[s] = rewards
        self._len_h[s] = length
        self._obs_h[(t + 1) % h] = next_obs
        # transitions completed by this step: the whole window where an episode ended,
        # else one where the window is full
        if any_done:
            rows = np.where(done, length, length == n)
            self._done_h[s] = done
            self._term_h[s] = terminated
            self._end_episodes(t, done, rows, terminated, truncated)
            self._counted += int(rows.sum())
            self._len = np.where(done, 0, np.minimum(length, n - 1))
        else:
            self._done_h[s] = False
            self._counted += np.count_nonzero(length == n)
            self._len = np.minimum(length, n - 1, out=length)
        self._reset_next = ended
        # (an env that reports an end on its reset-only step is reset again)
        self._any_reset = any_done or (self._any_reset and bool(ended.any()))
        self._t = t + 1
        self.env_steps += self.num_envs
        if self._counted - self._sent >= self.push_every or self._t - self._cut >= self._chunk:
            self._cut_rows()
            while self._pending_rows >= self.push_every:
                self._send(self.push_every)

    def _end_episodes(self, t, done, rows, terminated, truncated) -> None:
        ended = np.flatnonzero(done)
        position = (self._counted + np.cumsum(rows))[ended]  # rows up to env i's, inclusive
        self._episodes.extend(
            zip(
                position.tolist(),
                self._ep_return[ended].tolist(),
                (t + 1 - self._ep_start[ended]).tolist(),
                (truncated[ended] & ~terminated[ended]).tolist(),
                strict=True,
            )
        )
        self._ep_return[ended] = 0.0

    def _cut_rows(self) -> None:
        """Cut the rows of steps ``[_cut, _t)`` out of the ring, all at once."""
        e, h, n = self.num_envs, self._ring, self.n_step
        steps = np.arange(self._cut, self._t)
        self._cut = self._t
        idx = steps % h
        lengths, dones = self._len_h[idx], self._done_h[idx]
        # transitions each (step, env) completed, step-major: as counted in add()
        count = np.where(dones, lengths, lengths == n).ravel()
        total = int(count.sum())
        if total == 0:
            return
        group = np.repeat(np.arange(count.size), count)
        env = group % e
        t = steps[group // e]
        first = np.cumsum(count) - count
        offset = np.arange(total) - first[group]  # 0 = oldest start of the window
        done = dones.ravel()[group]
        m = np.where(done, lengths.ravel()[group] - offset, n)  # steps summed
        start = t - m + 1
        start_slot = start % h
        reward_idx = (start[:, None] + self._k) % h
        r = np.where(self._k < m[:, None], self._rew_h[reward_idx, env[:, None]], 0.0)
        cols = (
            self._obs_h[start_slot, env],
            self._act_h[start_slot, env],
            (r @ self._gpow[:n]).astype(np.float32),
            self._obs_h[(t + 1) % h, env],
            done & self._term_h[idx].ravel()[group],
            self._gpow32[m],
        )
        self._pending.append(cols)
        self._pending_rows += total

    def _take(self, size: int) -> tuple[np.ndarray, ...]:
        """The first ``size`` pending rows as contiguous columns."""
        if len(self._pending) > 1:
            self._pending = [tuple(np.concatenate(c) for c in zip(*self._pending, strict=True))]
        cols = self._pending[0]
        if len(cols[1]) == size:
            self._pending = []
        else:
            self._pending = [tuple(c[size:] for c in cols)]
            cols = tuple(c[:size] for c in cols)
        self._pending_rows -= size
        return cols

    def _send(self, size: int) -> None:
        cols = self._take(size)
        self._sent += size
        self.sequence += 1
        cut = 0
        while cut < len(self._episodes) and self._episodes[cut][0] <= self._sent:
            cut += 1
        episodes = self._episodes[:cut]
        del self._episodes[:cut]
        batch = pb.TransitionBatch(
            actor_id=self.actor_id,
            sequence=self.sequence,
            incarnation=self.incarnation,
            policy_version=self.policy_version(),
            epsilon=self.epsilon(),
            actor_env_steps=self.env_steps,
        )
        for _, ret, length, truncated in episodes:
            batch.episodes.add(
                actor_id=self.actor_id, episode_return=ret, length=length, truncated=truncated
            )
        for name, array in zip(TRANSITION_COLUMNS, cols, strict=True):
            _encode(array, getattr(batch, name))
        if self.priority_fn is not None:
            codec.encode(np.asarray(self.priority_fn(*cols), np.float32), batch.priority)
        self.writer.write(batch)

    def flush(self) -> None:
        """Send what is pending as one TransitionBatch (no-op when empty)."""
        self._cut_rows()
        if self._pending_rows:
            self._send(self._pending_rows)

    @property
    def _windows(self) -> list[list[tuple[np.ndarray, int, float]]]:
        """Per env, the open window: ``(obs, action, reward)`` of the steps whose
        transitions are not complete yet, oldest first (for tests and debugging)."""
        h = self._ring
        out = []
        for i, length in enumerate(self._len.tolist()):
            steps = range(self._t - length, self._t)
            out.append(
                [
                    (
                        self._obs_h[k % h, i],
                        int(self._act_h[k % h, i]),
                        float(self._rew_h[k % h, i]),
                    )
                    for k in steps
                ]
            )
        return out
