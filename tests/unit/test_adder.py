"""actors.adder.TransitionAdder: n-step transitions, gymnasium autoreset traps, batching.

The fake writer only collects batches; the second half drives a real gymnasium
SyncVectorEnv in NEXT_STEP autoreset mode and checks the stored transitions against
what the env returned, step by step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from actors.adder import TransitionAdder
from dqn import codec
from dqn.config import EnvConfig
from dqn.envs import make_vector_env

pytestmark = pytest.mark.unit


class FakeWriter:
    def __init__(self):
        self.batches = []
        self.closed = False

    def write(self, batch):
        self.batches.append(batch)

    def close(self):
        self.closed = True

    def transitions(self) -> list[tuple]:
        """All stored transitions as (obs, action, reward, next_obs, terminated, discount)."""
        out = []
        for b in self.batches:
            cols = [
                codec.decode(getattr(b, name), name)
                for name in ("obs", "action", "reward", "next_obs", "terminated", "discount")
            ]
            n = len(cols[1])
            assert all(len(c) == n for c in cols)
            for i in range(n):
                out.append(
                    (
                        cols[0][i].tolist(),
                        int(cols[1][i]),
                        round(float(cols[2][i]), 6),
                        cols[3][i].tolist(),
                        bool(cols[4][i]),
                        round(float(cols[5][i]), 6),
                    )
                )
        return out

    def episodes(self):
        return [(e.episode_return, e.length, e.truncated) for b in self.batches for e in b.episodes]


def o(*values) -> np.ndarray:
    """A vector observation [E, 1]."""
    return np.array(values, dtype=np.float32).reshape(-1, 1)


def step(adder, actions, rewards, next_obs, terminated, truncated):
    adder.add(
        np.asarray(actions),
        np.asarray(rewards, dtype=np.float64),
        next_obs,
        np.asarray(terminated, dtype=bool),
        np.asarray(truncated, dtype=bool),
    )


def make(num_envs=1, n_step=1, gamma=0.5, push_every=1000, **kw):
    writer = FakeWriter()
    adder = TransitionAdder(
        num_envs,
        writer,
        actor_id=7,
        incarnation=99,
        gamma=gamma,
        n_step=n_step,
        push_every=push_every,
        **kw,
    )
    return adder, writer


# -- pure logic with a fake writer ------------------------------------------------
def test_add_before_observe_first_fails():
    adder, _ = make()
    with pytest.raises(RuntimeError, match="observe_first"):
        step(adder, [0], [1.0], o(1), [False], [False])


def test_one_step_transitions_and_batch_metadata():
    adder, writer = make(num_envs=2, gamma=0.9, policy_version=lambda: 12, epsilon=lambda: 0.25)
    adder.observe_first(o(0, 10))
    step(adder, [1, 0], [1.0, 2.0], o(1, 11), [False, False], [False, False])
    step(adder, [0, 1], [3.0, 4.0], o(2, 12), [False, False], [False, False])
    assert writer.batches == []  # below push_every, nothing sent yet
    adder.flush()
    assert len(writer.batches) == 1
    b = writer.batches[0]
    assert (b.actor_id, b.incarnation, b.sequence) == (7, 99, 1)
    assert b.policy_version == 12
    assert b.epsilon == pytest.approx(0.25)
    assert b.actor_env_steps == 4
    assert codec.decode(b.obs).dtype == np.float32
    assert codec.decode(b.action).dtype == np.int64
    assert codec.decode(b.reward).dtype == np.float32
    assert codec.decode(b.terminated).dtype == np.bool_
    assert codec.decode(b.discount).dtype == np.float32
    assert sorted(writer.transitions()) == sorted(
        [
            ([0.0], 1, 1.0, [1.0], False, 0.9),
            ([10.0], 0, 2.0, [11.0], False, 0.9),
            ([1.0], 0, 3.0, [2.0], False, 0.9),
            ([11.0], 1, 4.0, [12.0], False, 0.9),
        ]
    )
    adder.flush()  # nothing pending: no empty batch
    assert len(writer.batches) == 1


def test_push_every_and_increasing_sequence():
    adder, writer = make(num_envs=2, push_every=4)
    adder.observe_first(o(0, 0))
    for t in range(1, 7):
        step(adder, [0, 0], [1.0, 1.0], o(t, t), [False, False], [False, False])
    # rows after each step: 2, 4 -> send, 2, 4 -> send, 2, 4 -> send
    assert [b.sequence for b in writer.batches] == [1, 2, 3]
    assert [len(codec.decode(b.action)) for b in writer.batches] == [4, 4, 4]
    assert [b.actor_env_steps for b in writer.batches] == [4, 8, 12]
    assert {b.actor_id for b in writer.batches} == {7}


@pytest.mark.parametrize("num_envs, n_step, push_every", [(3, 1, 4), (8, 3, 64), (5, 2, 7)])
def test_batches_never_exceed_push_every(num_envs, n_step, push_every):
    """push_every is the largest insert the rate limiter's no-deadlock check allows for
    (Config and ReplayServer pass it as max_insert), so no batch may be larger."""
    adder, writer = make(num_envs=num_envs, n_step=n_step, push_every=push_every)
    rng = np.random.default_rng(0)
    adder.observe_first(np.zeros((num_envs, 1), np.float32))
    resetting = np.zeros(num_envs, bool)
    real_steps, finished = 0, []
    length = np.zeros(num_envs, int)
    for t in range(300):
        term = rng.random(num_envs) < 0.1
        trunc = ~term & (rng.random(num_envs) < 0.05)
        term[resetting], trunc[resetting] = False, False  # a reset-only step never ends
        step(
            adder,
            np.zeros(num_envs, np.int64),
            np.ones(num_envs),
            np.full((num_envs, 1), t + 1, np.float32),
            term,
            trunc,
        )
        real_steps += int((~resetting).sum())
        length[~resetting] += 1
        for i in np.flatnonzero(term | trunc):
            finished.append(int(length[i]))
            length[i] = 0
        resetting = term | trunc
    adder.flush()
    sizes = [len(codec.decode(b.action)) for b in writer.batches]
    assert max(sizes) <= push_every, sizes
    assert [b.sequence for b in writer.batches] == list(range(1, len(sizes) + 1))
    # nothing lost or repeated: one transition per real step, except open windows
    pending = sum(len(w) for w in adder._windows)
    assert pending < num_envs * n_step
    assert sum(sizes) + pending == real_steps
    # every finished episode reported exactly once
    assert sorted(length for _, length, _ in writer.episodes()) == sorted(finished)


def test_adder_batches_cannot_deadlock_an_accepted_rate_limiter():
    """End to end: the smallest tolerance Config accepts, the limiter the server builds
    from it, and the batch sizes the adder really sends; a learner that samples whenever
    the fleet is held back must always be able to."""
    from dqn.config import build
    from replay_server.rate_limiter import RateLimiter

    cfg = build(
        {
            "replay": {"samples_per_insert": 1.0, "spi_tolerance": 64, "min_size": 64},
            "learner": {"batch_size": 64, "batches_per_call": 1, "n_step": 3},
            "actors": {"push_every": 64, "envs_per_actor": 8},
        }
    )
    r, a, learner = cfg.replay, cfg.actors, cfg.learner
    limiter = RateLimiter(
        r.min_size,
        r.samples_per_insert,
        r.spi_tolerance,
        max_sample=learner.batch_size * learner.batches_per_call,
        max_insert=a.push_every,
    )  # as replay_server.server.ReplayServer
    adder, writer = make(
        num_envs=a.envs_per_actor,
        n_step=learner.n_step,
        push_every=a.push_every,
        gamma=learner.gamma,
    )
    rng = np.random.default_rng(0)
    e = a.envs_per_actor
    adder.observe_first(np.zeros((e, 1), np.float32))
    for t in range(1_000):
        step(
            adder,
            np.zeros(e, np.int64),
            np.ones(e),
            np.full((e, 1), t, np.float32),
            rng.random(e) < 0.05,
            np.zeros(e, bool),
        )
    size, call = 0, learner.batch_size * learner.batches_per_call
    for k, batch in enumerate(writer.batches):
        n = len(codec.decode(batch.action))
        while not limiter.can_insert(n):
            assert limiter.can_sample(size, call), (
                f"deadlock at batch {k} of {n} transitions (diff {limiter.diff:g}): "
                "neither the push nor a sample call fits the band"
            )
            limiter.record_sample(call)
        size += n
        limiter.record_insert(size, n)


def test_terminated_not_truncated_is_the_stored_mask():
    adder, writer = make(num_envs=2, gamma=0.9)
    adder.observe_first(o(0, 0))
    # env 0 is truncated by a time limit, env 1 truly terminates
    step(adder, [0, 1], [1.0, 1.0], o(5, 6), [False, True], [True, False])
    adder.flush()
    got = sorted(writer.transitions())
    assert got == [([0.0], 0, 1.0, [5.0], False, 0.9), ([0.0], 1, 1.0, [6.0], True, 0.9)]
    assert sorted(writer.episodes()) == [(1.0, 1, False), (1.0, 1, True)]


def test_reset_only_step_is_never_stored_and_next_episode_starts_from_reset_obs():
    adder, writer = make(num_envs=2, gamma=0.9)
    adder.observe_first(o(0, 0))
    step(adder, [0, 0], [1.0, 1.0], o(1, 1), [True, False], [False, False])  # env 0 ends
    step(adder, [1, 0], [0.0, 1.0], o(50, 2), [False, False], [False, False])  # env 0 resets
    step(adder, [1, 1], [2.0, 1.0], o(51, 3), [False, True], [False, False])  # env 1 ends
    step(adder, [0, 1], [3.0, 0.0], o(52, 60), [False, False], [False, False])  # env 1 resets
    adder.flush()
    got = writer.transitions()
    assert len(got) == 6  # 8 env steps, 2 of them reset-only
    assert sorted(got) == sorted(
        [
            ([0.0], 0, 1.0, [1.0], True, 0.9),  # env 0, episode 1
            ([50.0], 1, 2.0, [51.0], False, 0.9),  # env 0, episode 2 starts at the reset obs
            ([51.0], 0, 3.0, [52.0], False, 0.9),
            ([0.0], 0, 1.0, [1.0], False, 0.9),  # env 1
            ([1.0], 0, 1.0, [2.0], False, 0.9),
            ([2.0], 1, 1.0, [3.0], True, 0.9),
        ]
    )
    # a transition across the boundary would be final obs -> reset obs
    assert not any(t[0] == [1.0] and t[3] == [50.0] for t in got)
    assert not any(t[0] == [3.0] for t in got)
    assert sorted(writer.episodes()) == [(1.0, 1, False), (3.0, 3, False)]


REWARDS = [1.0, 2.0, 3.0, 4.0, 5.0]


def run_episode(adder, end: str):
    """Five steps from obs 0..4 with rewards 1..5; the fifth ends the episode."""
    adder.observe_first(o(0))
    for t, r in enumerate(REWARDS):
        last = t == len(REWARDS) - 1
        step(
            adder,
            [t % 2],
            [r],
            o(t + 1),
            [last and end == "terminated"],
            [last and end == "truncated"],
        )


def test_n_step_returns_mid_episode_and_at_termination():
    adder, writer = make(n_step=3, gamma=0.5)
    run_episode(adder, "terminated")
    adder.flush()
    assert writer.transitions() == [
        # full windows: r0 + .5 r1 + .25 r2, bootstrap from o_{t+3} with 0.5**3
        ([0.0], 0, 2.75, [3.0], False, 0.125),
        ([1.0], 1, 4.5, [4.0], False, 0.125),
        # episode terminated at step 5: no bootstrap, shorter windows flushed
        ([2.0], 0, 6.25, [5.0], True, 0.125),
        ([3.0], 1, 6.5, [5.0], True, 0.25),
        ([4.0], 0, 5.0, [5.0], True, 0.5),
    ]
    assert writer.episodes() == [(15.0, 5, False)]


def test_n_step_at_truncation_bootstraps_from_final_obs():
    adder, writer = make(n_step=3, gamma=0.5)
    run_episode(adder, "truncated")
    adder.flush()
    assert writer.transitions() == [
        ([0.0], 0, 2.75, [3.0], False, 0.125),
        ([1.0], 1, 4.5, [4.0], False, 0.125),
        # truncated: bootstrap (terminated False) from the final obs with gamma**m
        ([2.0], 0, 6.25, [5.0], False, 0.125),
        ([3.0], 1, 6.5, [5.0], False, 0.25),
        ([4.0], 0, 5.0, [5.0], False, 0.5),
    ]
    assert writer.episodes() == [(15.0, 5, True)]


def test_n_step_episode_shorter_than_n_and_next_episode():
    adder, writer = make(n_step=3, gamma=0.5)
    adder.observe_first(o(0))
    step(adder, [1], [2.0], o(1), [False], [False])
    step(adder, [0], [4.0], o(2), [True], [False])  # 2-step episode
    step(adder, [1], [0.0], o(10), [False], [False])  # reset-only
    step(adder, [1], [8.0], o(11), [True], [False])  # 1-step episode
    adder.flush()
    assert writer.transitions() == [
        ([0.0], 1, 4.0, [2.0], True, 0.25),  # 2 + .5 * 4
        ([1.0], 0, 4.0, [2.0], True, 0.5),
        ([10.0], 1, 8.0, [11.0], True, 0.5),
    ]
    assert writer.episodes() == [(6.0, 2, False), (8.0, 1, False)]


def test_n_step_windows_are_per_env():
    adder, writer = make(num_envs=2, n_step=2, gamma=0.5)
    adder.observe_first(o(0, 100))
    step(adder, [0, 1], [1.0, 10.0], o(1, 101), [False, False], [False, False])
    step(adder, [1, 0], [2.0, 20.0], o(2, 102), [False, True], [False, False])
    adder.flush()
    assert sorted(writer.transitions()) == sorted(
        [
            ([0.0], 0, 2.0, [2.0], False, 0.25),  # env 0: 1 + .5 * 2
            ([100.0], 1, 20.0, [102.0], True, 0.25),  # env 1: 10 + .5 * 20, terminated
            ([101.0], 0, 20.0, [102.0], True, 0.5),
        ]
    )


def test_episodes_travel_with_the_next_batch_only():
    adder, writer = make(push_every=1)
    adder.observe_first(o(0))
    step(adder, [0], [1.5], o(1), [True], [False])
    step(adder, [0], [0.0], o(2), [False], [False])  # reset-only: nothing to send
    step(adder, [0], [2.5], o(3), [False], [False])
    assert len(writer.batches) == 2
    assert [(e.actor_id, e.episode_return, e.length) for e in writer.batches[0].episodes] == [
        (7, 1.5, 1)
    ]
    assert len(writer.batches[1].episodes) == 0


# -- a real gymnasium SyncVectorEnv (NEXT_STEP autoreset) --------------------------
def cartpole_vector_env(num_envs: int, max_episode_steps: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv(
        [
            lambda: gym.make("CartPole-v1", max_episode_steps=max_episode_steps)
            for _ in range(num_envs)
        ],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )


def drive(env, adder, policy, steps: int, seed: int = 0):
    """Step env and adder together; return the env's real transitions per env, n=1."""
    obs, _ = env.reset(seed=seed)
    adder.observe_first(obs)
    num_envs = obs.shape[0]
    resetting = np.zeros(num_envs, dtype=bool)
    real, boundaries = [], []
    for t in range(steps):
        actions = policy(t, obs)
        next_obs, reward, term, trunc, _ = env.step(actions)
        adder.add(actions, reward, next_obs, term, trunc)
        for i in range(num_envs):
            if resetting[i]:
                boundaries.append((obs[i].tolist(), next_obs[i].tolist()))
            else:
                real.append(
                    (
                        obs[i].tolist(),
                        int(actions[i]),
                        float(reward[i]),
                        next_obs[i].tolist(),
                        bool(term[i]),
                        bool(trunc[i]),
                    )
                )
        resetting = term | trunc
        obs = next_obs
    adder.flush()
    return real, boundaries


def as_stored(real, gamma):
    """What a correct n=1 adder stores for each real env step."""
    return [(o_, a, round(r, 6), n, term, round(gamma, 6)) for o_, a, r, n, term, _ in real]


def test_real_env_truncation_stores_terminated_false():
    env = cartpole_vector_env(2, max_episode_steps=5)
    adder, writer = make(num_envs=2, gamma=0.99)
    try:
        # alternate pushes: the pole cannot fall within 5 steps
        real, boundaries = drive(env, adder, lambda t, obs: np.array([t % 2, (t + 1) % 2]), 12)
    finally:
        env.close()
    truncations = [r for r in real if r[5]]
    assert len(truncations) == 4  # steps 5 and 11 in both envs
    assert not any(r[4] for r in real), "the pole fell: the test needs a truncation"
    stored = writer.transitions()
    # every stored transition, the truncated ones included, keeps the bootstrap
    assert [t[4] for t in stored] == [False] * len(stored)
    truncated_final = {tuple(r[3]) for r in truncations}
    ends = [t for t in stored if tuple(t[3]) in truncated_final]
    assert len(ends) == 4
    assert all(t[5] == 0.99 for t in ends)
    assert writer.episodes() == [(5.0, 5, True)] * 4


def test_real_env_end_of_episode_uses_true_final_obs_and_skips_reset_step():
    env = cartpole_vector_env(2, max_episode_steps=5)
    adder, writer = make(num_envs=2, gamma=0.99)
    try:
        real, boundaries = drive(env, adder, lambda t, obs: np.array([t % 2, (t + 1) % 2]), 12)
    finally:
        env.close()
    stored = writer.transitions()
    # (c) the reset-only steps (2 per env) are not stored: one transition per real step
    assert len(real) == 20 and len(boundaries) == 4
    assert len(stored) == len(real)
    # (b) exact per-step agreement, including the final observations at episode ends
    assert sorted(stored, key=repr) == sorted(as_stored(real, 0.99), key=repr)
    for k, (final_obs, reset_obs) in enumerate(boundaries):
        assert final_obs != reset_obs  # the checks below would be vacuous otherwise
        assert not any(t[0] == final_obs for t in stored), "reset-only step stored"
        assert any(t[3] == final_obs for t in stored), "final obs lost"
        assert not any(t[3] == reset_obs for t in stored), "bootstrapped from the reset obs"
        if k < 2:  # boundaries at step 6 (the ones at step 12 end the run)
            assert any(t[0] == reset_obs for t in stored), "new episode lost its first obs"


def test_real_env_termination_uses_final_obs_and_cuts_bootstrap():
    env = cartpole_vector_env(1, max_episode_steps=500)
    adder, writer = make(num_envs=1, gamma=0.99)
    try:
        real, boundaries = drive(env, adder, lambda t, obs: np.zeros(1, np.int64), 40)
    finally:
        env.close()
    terminations = [r for r in real if r[4]]
    assert len(terminations) >= 2  # always pushing left falls in ~10 steps
    stored = writer.transitions()
    assert len(stored) == len(real) == 40 - len(boundaries)
    assert sorted(stored, key=repr) == sorted(as_stored(real, 0.99), key=repr)
    terminal = [t for t in stored if t[4]]
    assert len(terminal) == len(terminations)
    for t in terminal:
        # the real final obs is past a termination limit (x or pole angle); a reset obs is not
        x, theta = t[3][0], t[3][2]
        assert abs(theta) > 0.2095 or abs(x) > 2.4
    lengths = [length for _, length, _ in writer.episodes()]
    assert [ret for ret, _, _ in writer.episodes()] == [float(n) for n in lengths]
    last_end = max(k for k, r in enumerate(real) if r[4])
    assert sum(lengths) == last_end + 1  # every real step up to the last end is in an episode
    assert all(trunc is False for _, _, trunc in writer.episodes())
    assert len(writer.episodes()) == len(terminations)


def test_real_probe_env_n_step():
    """Probe3 via dqn.envs.make_vector_env: 2-step episodes, reward 1 at the end."""
    env = make_vector_env(EnvConfig(id="Probe3-v0"), 3, seed=0)
    adder, writer = make(num_envs=3, n_step=3, gamma=0.5)
    try:
        real, boundaries = drive(env, adder, lambda t, obs: np.zeros(3, np.int64), 9)
    finally:
        env.close()
    # per env: real, real (end), reset-only, ... -> 3 episodes in 9 steps
    assert len(real) == 18 and len(boundaries) == 9
    stored = writer.transitions()
    assert len(stored) == 18
    assert sorted(stored) == sorted(
        [([0.0], 0, 0.5, [1.0], True, 0.25)] * 9 + [([1.0], 0, 1.0, [1.0], True, 0.5)] * 9
    )
    assert writer.episodes() == [(1.0, 2, False)] * 9


# -- prioritized replay: initial priorities in the batch ---------------------------------
def test_priority_fn_fills_the_priority_column_of_each_batch():
    seen = []

    def priority_fn(obs, action, reward, next_obs, terminated, discount):
        seen.append((obs.shape, action.tolist(), terminated.tolist(), discount.tolist()))
        return reward * 10.0  # any per-row function of the columns

    adder, writer = make(n_step=2, gamma=0.5, push_every=2, priority_fn=priority_fn)
    adder.observe_first(o(0.0))
    step(adder, [1], [1.0], o(1.0), [False], [False])
    step(adder, [0], [2.0], o(2.0), [False], [False])
    step(adder, [1], [4.0], o(3.0), [True], [False])
    adder.flush()
    prios = [codec.decode(b.priority, "priority").tolist() for b in writer.batches]
    # 2-step rows: 1 + .5*2 = 2 (boot), 2 + .5*4 = 4 (term), 4 (term, 1 step)
    assert prios == [[20.0, 40.0], [40.0]]
    assert seen[0] == ((2, 1), [1, 0], [False, True], [0.25, 0.25])


def test_no_priority_column_without_priority_fn():
    adder, writer = make()
    adder.observe_first(o(0.0))
    step(adder, [1], [1.0], o(1.0), [True], [False])
    adder.flush()
    assert not writer.batches[0].HasField("priority")
