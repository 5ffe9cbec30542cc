"""The vectorized TransitionAdder against the per-env reference algorithm it replaced.

The reference is the earlier implementation, kept here verbatim (a deque per env, one
Python iteration per env per step). Both are driven with the same random streams
(episode ends, truncations, odd ends on reset-only steps, several E / n / push_every)
and must send the same batches: same sizes, order, sequence numbers, metadata,
episode records and column bytes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import pytest

from actors.adder import TransitionAdder
from dqn import codec
from dqn.interfaces import TRANSITION_COLUMNS
from dqn.v1 import replay_pb2 as pb

pytestmark = pytest.mark.unit


class ReferenceAdder:
    """The per-env adder this project shipped before the vectorized one (kept verbatim)."""

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


class Writer:
    def __init__(self):
        self.batches = []

    def write(self, batch):
        self.batches.append(batch)


def drive(
    cls,
    num_envs,
    n_step,
    push_every,
    gamma,
    steps,
    seed,
    obs_shape=(3,),
    dtype=np.float32,
    exact_rewards=True,
    restarts=False,
):
    """Both adders fed the same random stream. The policy version is the number of
    steps taken so far, as an actor's would be read at each step; ``restarts`` calls
    ``observe_first`` again now and then (new observations mid-stream)."""
    rng = np.random.default_rng(seed)
    writer = Writer()
    clock = {"t": 0}

    adder = cls(
        num_envs,
        writer,
        actor_id=3,
        incarnation=11,
        gamma=gamma,
        n_step=n_step,
        push_every=push_every,
        policy_version=lambda: clock["t"],
        epsilon=lambda: 0.125,
        priority_fn=lambda obs, a, r, nxt, term, disc: r * 2.0 + disc,
        obs_dtype=dtype,
    )
    obs = rng.integers(0, 200, (num_envs, *obs_shape)).astype(dtype)
    adder.observe_first(obs)
    for _ in range(steps):
        clock["t"] += 1
        term = rng.random(num_envs) < 0.08
        trunc = rng.random(num_envs) < 0.04
        if exact_rewards:
            rewards = rng.integers(-8, 9, num_envs) / 4.0  # exact in binary: sums are too
        else:
            rewards = rng.normal(0.0, 3.0, num_envs)  # sums depend on their order
        adder.add(
            rng.integers(0, 4, num_envs),
            rewards,
            rng.integers(0, 200, (num_envs, *obs_shape)).astype(dtype),
            term,
            trunc,
        )
        if rng.random() < 0.01:
            adder.flush()  # an early flush shifts every later batch boundary
        if restarts and rng.random() < 0.02:
            adder.observe_first(rng.integers(0, 200, (num_envs, *obs_shape)).astype(dtype))
    adder.flush()
    return writer.batches


@pytest.mark.parametrize(
    "num_envs, n_step, push_every",
    [(1, 1, 1), (1, 3, 4), (3, 1, 4), (8, 3, 64), (5, 2, 7), (4, 5, 3), (16, 3, 64), (2, 8, 100)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_vectorized_adder_sends_what_the_per_env_reference_sends(
    num_envs, n_step, push_every, seed
):
    got = drive(TransitionAdder, num_envs, n_step, push_every, 0.5, 400, seed)
    want = drive(ReferenceAdder, num_envs, n_step, push_every, 0.5, 400, seed)
    assert len(want) > 3
    assert [len(codec.decode(b.action)) for b in got] == [len(codec.decode(b.action)) for b in want]
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True), (
            f"batch {k} differs"
        )


@pytest.mark.parametrize(
    "num_envs, n_step, push_every",
    [(1, 1, 1), (1, 8, 1), (3, 4, 2), (7, 1, 3), (8, 3, 64), (16, 1, 5), (2, 2, 1)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inexact_rewards_and_restarts_mid_stream(num_envs, n_step, push_every, seed):
    """Episode returns summed in the reference's order, to the last bit; episodes
    counted afresh after an ``observe_first`` that follows an episode's end."""
    kw = dict(exact_rewards=False, restarts=True)
    got = drive(TransitionAdder, num_envs, n_step, push_every, 0.99, 300, seed, **kw)
    want = drive(ReferenceAdder, num_envs, n_step, push_every, 0.99, 300, seed, **kw)
    assert len(want) > 3
    episodes = 0
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert list(a.episodes) == list(b.episodes), f"batch {k}"
        episodes += len(b.episodes)
        assert (a.sequence, a.actor_env_steps, a.policy_version) == (
            b.sequence,
            b.actor_env_steps,
            b.policy_version,
        )
        for name in TRANSITION_COLUMNS:
            x, y = codec.decode(getattr(a, name)), codec.decode(getattr(b, name))
            if name == "reward":  # n-step sums: gamma powers in another order
                np.testing.assert_allclose(x, y, rtol=1e-6)
            else:
                np.testing.assert_array_equal(x, y)
    assert len(got) == len(want) and episodes > 3


def test_uint8_observations_and_an_inexact_gamma():
    got = drive(TransitionAdder, 4, 3, 16, 0.99, 300, 5, obs_shape=(2, 3, 4), dtype=np.uint8)
    want = drive(ReferenceAdder, 4, 3, 16, 0.99, 300, 5, obs_shape=(2, 3, 4), dtype=np.uint8)
    assert len(got) == len(want) > 3
    for a, b in zip(got, want, strict=True):
        for name in TRANSITION_COLUMNS:
            x, y = codec.decode(getattr(a, name)), codec.decode(getattr(b, name))
            assert x.dtype == y.dtype and x.shape == y.shape
            if name in ("reward", "discount"):  # float64 sums in another order
                np.testing.assert_allclose(x, y, rtol=1e-6)
            else:
                np.testing.assert_array_equal(x, y)
        assert list(a.episodes) == list(b.episodes)
        assert (a.sequence, a.actor_env_steps, a.policy_version) == (
            b.sequence,
            b.actor_env_steps,
            b.policy_version,
        )
