"""The evaluator's schedule: every K versions, every N seconds, or continuously, and a
version the learner asks about (its final weights) whatever the schedule."""

from __future__ import annotations

import pytest

from actors.evaluator import EvalSchedule
from dqn.config import build

pytestmark = pytest.mark.unit


def schedule(**fields) -> EvalSchedule:
    return EvalSchedule(build({"eval": fields}).eval)


def test_every_k_versions_counts_from_the_last_one_evaluated():
    s = schedule(schedule="versions", every_versions=5)
    assert not s.due(0, 0.0)  # nothing published yet
    assert s.due(1, 0.0)  # the first version seen is played at once
    s.started(1, 0.0)
    assert [v for v in range(1, 12) if s.due(v, 1.0)] == [6, 7, 8, 9, 10, 11]
    s.started(8, 1.0)  # the evaluator was busy: it played the newest, 8
    assert not s.due(12, 2.0) and s.due(13, 2.0)


def test_every_n_seconds_needs_a_new_version_too():
    s = schedule(schedule="seconds", every_seconds=2.0)
    s.started(1, 10.0)
    assert not s.due(5, 11.9)
    assert s.due(5, 12.0)
    assert not s.due(1, 99.0)  # nothing new to play


def test_continuous_plays_every_new_version():
    s = schedule(schedule="continuous")
    s.started(3, 0.0)
    assert not s.due(3, 1.0) and s.due(4, 0.0)


def test_a_requested_version_is_due_whatever_the_schedule():
    s = schedule(schedule="versions", every_versions=1000)
    s.started(1, 0.0)
    assert not s.due(2, 0.0)
    assert s.due(2, 0.0, requested=True)
    s.started(2, 0.0)
    assert not s.due(2, 0.0, requested=True)  # never the same version twice


def test_bad_schedule_settings_name_the_field():
    from dqn.config import ConfigError

    for fields, name in (
        ({"schedule": "sometimes"}, "eval.schedule"),
        ({"every_versions": 0}, "eval.every_versions"),
        ({"every_seconds": 0}, "eval.every_seconds"),
        ({"final_wait_seconds": -1}, "eval.final_wait_seconds"),
    ):
        with pytest.raises(ConfigError, match=name):
            build({"eval": fields})
