"""The learning curve places each episode at its own env step (Episode.env_steps, the
replay server's stamp), not at the step of the poll that collected it; and the fleet
env-step total the server stamps with stays the sum over every actor life."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dqn.v1 import replay_pb2 as pb
from learner.metrics import Metrics
from replay_server.bookkeeping import ActorBook

pytestmark = pytest.mark.unit


def test_curve_points_carry_each_episodes_own_env_steps(tmp_path):
    metrics = Metrics(tmp_path, tensorboard=False)
    metrics.episodes_finished(500, [1.0, 2.0, 3.0], [10, 20, 30], [100, 300, 300])
    metrics.episodes_finished(900, [4.0], [40], [820])
    assert list(metrics.episodes) == [(100, 1.0), (300, 2.0), (300, 3.0), (820, 4.0)]
    assert metrics.episodes_total == 4
    metrics._jsonl.flush()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    episodes = [r for r in map(json.loads, lines) if r["kind"] == "episodes"]
    # the aggregated record stays at the poll's env steps
    assert [(r["step"], r["count"]) for r in episodes] == [(500, 3), (900, 1)]


def test_without_stamps_episodes_sit_at_the_polls_env_steps(tmp_path):
    metrics = Metrics(tmp_path, tensorboard=False)
    metrics.episodes_finished(500, [1.0, 2.0], [10, 20])  # the old call still works
    metrics.episodes_finished(700, [3.0, 4.0], [30, 40], [0, 650])  # 0: an old server
    assert list(metrics.episodes) == [(500, 1.0), (500, 2.0), (700, 3.0), (650, 4.0)]
    with pytest.raises(ValueError, match="episode_env_steps: 1 values for 2 episodes"):
        metrics.episodes_finished(800, [5.0, 6.0], [50, 60], [790])


def test_the_running_env_step_total_equals_the_sum_through_expiries_and_restores():
    rng = np.random.default_rng(0)
    book = ActorBook(actors_kept=5, lives_kept=2)  # small: lives and actors expire
    steps: dict[tuple[int, int], int] = {}
    for sequence in range(1, 2_000):
        actor, life = int(rng.integers(0, 9)), int(rng.integers(0, 4))
        steps[actor, life] = steps.get((actor, life), 0) + int(rng.integers(0, 50))
        batch = pb.TransitionBatch(
            actor_id=actor, incarnation=life, sequence=sequence, actor_env_steps=steps[actor, life]
        )
        if not book.is_duplicate(batch):
            book.record(batch)
        assert book.env_steps() == book._sum_env_steps()
    assert book.actors_expired > 0 and book.incarnations_expired > 0
    again = ActorBook(actors_kept=5, lives_kept=2)
    again.load_state(book.state())
    assert again.env_steps() == book.env_steps()
