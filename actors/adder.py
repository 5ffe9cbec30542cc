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
    """Vectorized: a vector step is five whole-array writes into a ring of recent steps
    (actions, rewards, next observations, terminated, truncated) and nothing else. Every
    ``ceil(push_every / E)`` steps (and on ``flush()``) the steps since the last cut are
    read back, all envs and steps at once: which steps were reset-only, each window's
    length, the transitions each step completed, the episodes that ended, and the
    rows. The batches, their order, sizes, stamps and episode records are those of the
    simple per-env algorithm described above: rows in (step, env) order, oldest window
    start first; every batch exactly ``push_every`` rows except the one ``flush()``
    sends; a batch is stamped with the env steps and the policy version of the step
    that completed it. It is sent at the cut after that step, at most
    ``ceil(push_every / E)`` steps later.
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
        self._every = -(-self.push_every // e)  # steps between cuts
        # Ring of the last H steps: the steps not cut yet (at most _every), the n - 1
        # before them that open windows start in, the newest observation, and a spare.
        self._ring = self._every + n + 2  # H
        h = self._ring
        self._obs_h: np.ndarray | None = None  # [H, E, *obs_shape]: obs at step t
        self._act_h = np.zeros((h, e), np.int64)
        self._rew_h = np.zeros((h, e), np.float64)
        self._term_h = np.zeros((h, e), bool)
        self._trunc_h = np.zeros((h, e), bool)
        self._version_h = [0] * h  # policy_version() when step t was taken
        self._t = 0  # next step index
        self._cut = 0  # first step not cut into rows yet
        # State at step _cut, for every env:
        self._reset = np.zeros(e, dtype=bool)  # step _cut is a reset-only step
        self._win_start = np.zeros(e, dtype=np.int64)  # first step of the open window's run
        self._ep_start = np.zeros(e, dtype=np.int64)  # first step of the episode
        self._ep_return = np.zeros(e, dtype=np.float64)  # its return so far
        self._counted = 0  # rows completed so far (cut)
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
        else:
            self._cut_rows()  # what the steps so far completed, sent when due
            # The next step is a transition for every env; an env whose episode just
            # ended starts its window and its next episode there.
            self._win_start[self._reset] = self._t
            self._ep_start[self._reset] = self._t
        self._obs_h[self._t % self._ring] = obs
        self._reset[:] = False

    def add(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """One vector step: the actions taken in the last observations and what the
        env returned. Five array writes and the policy version; the rest happens once
        per cut."""
        if self._obs_h is None:
            raise RuntimeError("observe_first() must be called before add()")
        t, h = self._t, self._ring
        s = t % h
        self._act_h[s] = actions
        self._rew_h[s] = rewards
        self._term_h[s] = terminated
        self._trunc_h[s] = truncated
        self._version_h[s] = self.policy_version()
        self._obs_h[(t + 1) % h] = next_obs
        self._t = t + 1
        self.env_steps += self.num_envs
        if self._t - self._cut >= self._every:
            self._cut_rows()

    def _cut_rows(self) -> None:
        """Read back steps ``[_cut, _t)``, all envs at once: their rows go to
        ``_pending``, their finished episodes to ``_episodes``; then send every batch
        those rows completed, each stamped as of the step that completed it."""
        e, h, n = self.num_envs, self._ring, self.n_step
        if self._t == self._cut:
            return
        steps = np.arange(self._cut, self._t)
        idx = steps % h
        term, trunc = self._term_h[idx], self._trunc_h[idx]
        ended = term | trunc  # [K, E]
        # step k is reset-only where step k - 1 reported an end (even a reset-only one)
        reset = np.empty_like(ended)
        reset[0] = self._reset
        reset[1:] = ended[:-1]
        valid = ~reset
        # a reset-only step k starts the next episode (and window) at k + 1
        mark = np.where(reset, steps[:, None] + 1, -1)
        runs = np.maximum.accumulate(mark, axis=0)
        win_start = np.maximum(runs, self._win_start)
        ep_start = np.maximum(runs, self._ep_start)
        length = np.where(valid, np.minimum(steps[:, None] - win_start + 1, n), 0)
        done = ended & valid
        count = np.where(done, length, length == n)  # rows each (step, env) completed
        flat = count.ravel()
        cum = np.cumsum(flat)  # rows up to and including each (step, env), step-major
        counted0 = self._counted
        total = int(cum[-1])
        self._counted = counted0 + total
        # Episode returns, summed one step at a time in step order as the per-env
        # algorithm does: the running sum from the open episodes' returns so far, and
        # for an episode that starts inside this cut a sum of its own from 0.
        rewards = np.where(valid, self._rew_h[idx], 0.0)
        rewards[0] += self._ep_return
        running = np.cumsum(rewards, axis=0)
        local = steps - steps[0]
        last_end = np.maximum.accumulate(np.where(done, local[:, None], -1), axis=0)
        if done.any():
            prev = np.vstack([np.full((1, e), -1), last_end[:-1]])  # strictly before
            ends = np.flatnonzero(done.ravel())
            k, env = np.divmod(ends, e)
            returns = running[k, env]
            for j in np.flatnonzero(prev[k, env] >= 0).tolist():
                a, b, i = int(prev[k[j], env[j]]) + 1, int(k[j]) + 1, int(env[j])
                returns[j] = np.cumsum(rewards[a:b, i])[-1]
            self._episodes.extend(
                zip(
                    (counted0 + cum[ends]).tolist(),
                    returns.tolist(),
                    (steps[k] + 1 - ep_start[k, env]).tolist(),
                    (trunc[k, env] & ~term[k, env]).tolist(),
                    strict=True,
                )
            )
            tail = running[-1].copy()
            for i in np.flatnonzero(last_end[-1] >= 0).tolist():
                a = int(last_end[-1, i]) + 1
                tail[i] = np.cumsum(rewards[a:, i])[-1] if a < len(steps) else 0.0
            self._ep_return = tail
        else:
            self._ep_return = running[-1].copy()
        # carried to the next cut: whether its first step is reset-only, and the starts
        self._reset = ended[-1].copy()
        self._win_start = win_start[-1].copy()
        self._ep_start = ep_start[-1].copy()
        self._cut = self._t
        if total:
            self._cut_columns(steps, idx, length, done, term, count, total)
        # send every batch completed, stamped as of the step of its last row: the env
        # steps then and the policy version that step was taken with
        while self._counted - self._sent >= self.push_every:
            row = self._sent + self.push_every  # 1-based position of its last row
            at = int(np.searchsorted(cum, row - counted0))  # its (step, env), step-major
            step = int(steps[at // e])
            self._send(self.push_every, (step + 1) * e, self._version_h[step % h])

    def _cut_columns(self, steps, idx, lengths, dones, term, count, total) -> None:
        """The rows the (step, env) pairs completed, as columns, oldest start first."""
        e, h, n = self.num_envs, self._ring, self.n_step
        flat = count.ravel()
        group = np.repeat(np.arange(flat.size), flat)
        env = group % e
        t = steps[group // e]
        first = np.cumsum(flat) - flat
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
            done & term.ravel()[group],
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

    def _send(self, size: int, env_steps: int, version: int) -> None:
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
            policy_version=version,
            epsilon=self.epsilon(),
            actor_env_steps=env_steps,
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
            last = self._version_h[(self._t - 1) % self._ring] if self._t else 0
            self._send(self._pending_rows, self.env_steps, last)

    @property
    def _windows(self) -> list[list[tuple[np.ndarray, int, float]]]:
        """Per env, the open window: ``(obs, action, reward)`` of the steps whose
        transitions are not complete yet, oldest first (for tests and debugging; cuts
        first, so batches due are sent)."""
        self._cut_rows()
        h, n = self._ring, self.n_step
        out = []
        for i in range(self.num_envs):
            length = 0 if self._reset[i] else min(self._t - int(self._win_start[i]), n - 1)
            steps = range(self._t - max(length, 0), self._t)
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
