"""learner.reporter: one table of figures, written to the line, JSONL, TensorBoard and
/metrics alike; the replay ratio of each interval derived from the server's counts."""

from __future__ import annotations

import math

import pytest

from learner.metrics import TB_TAGS
from learner.reporter import FIGURES, Reporter, progress_line

pytestmark = pytest.mark.unit


class _Sink:
    """Stands in for learner.metrics.Metrics: records what it is given."""

    def __init__(self):
        self.logged, self.tb = [], []

    def log(self, kind, step, **values):
        self.logged.append((kind, step, values))

    def scalars(self, step, values):
        self.tb.append((step, values))


def _figures(inserted, sampled, **extra):
    return {
        "env_steps": inserted,
        "updates": sampled // 128,
        "env_steps_per_s": 100.0,
        "updates_per_s": 10.0,
        "epsilon": 0.5,
        "replay_size": inserted,
        "policy_lag": 1.0,
        "samples_per_insert": sampled / inserted,
        "replay_counts": (inserted, sampled),
        **extra,
    }


def test_every_tb_tag_is_documented_and_every_metric_named_once():
    assert {f.tb for f in FIGURES if f.tb} <= set(TB_TAGS)
    metrics = [f.metric for f in FIGURES if f.metric]
    assert len(metrics) == len(set(metrics))


def test_the_recent_replay_ratio_is_that_of_the_interval(capsys):
    sink = _Sink()
    reporter = Reporter(sink, lambda: {}, lambda: [])
    first = reporter.report(_figures(1_000, 1_000), 1.0)
    assert "spi 1.0" in first  # the first interval: since the start
    assert "spi" not in reporter.report(_figures(1_000, 1_500), 1.5)  # nothing inserted
    line = reporter.report(_figures(2_000, 9_000), 2.0)  # +1,000 inserted, +8,000 sampled
    assert "lag 1.0 spi 8.0" in line
    kind, step, record = sink.logged[-1]
    assert (kind, step) == ("progress", 2_000)
    assert record["spi_recent"] == 8.0 and record["samples_per_insert"] == 4.5
    assert "replay_counts" not in record
    assert sink.tb[-1][1]["replay/samples_per_insert_recent"] == 8.0
    series = {s.name: s.value for s in reporter.series()}
    assert series["dqn_learner_samples_per_insert_recent"] == 8.0
    # a restarted replay server (counts went down): counted from its start again
    reporter.report(_figures(10, 30), 3.0)
    assert {s.name: s.value for s in reporter.series()}[
        "dqn_learner_samples_per_insert_recent"
    ] == 3.0  # fmt: skip
    reporter.report({**_figures(10, 30), "replay_counts": None}, 4.0)  # no Info yet
    assert math.isnan({s.name: s.value for s in reporter.series()}[
        "dqn_learner_samples_per_insert_recent"
    ])  # fmt: skip
    assert "spi 8.0" in capsys.readouterr().out


def test_unknown_figures_show_a_dash_and_stay_out_of_the_record():
    line = progress_line({"env_steps": 0, "updates": 0, "loss": None}, 0.5)
    assert line.startswith("[   0.5s] steps         0") and "loss -" in line
    assert "replay" not in line and "waiting" not in line


def test_the_progress_line_shows_the_share_of_the_budget_spent():
    from learner.reporter import progress_line

    line = progress_line({"env_steps": 10, "budget_spent": 0.25}, 3.0)
    assert line.endswith("| budget 25%"), line
    assert progress_line({"env_steps": 10}, 3.0).endswith("| budget -")  # not known yet


def test_budget_spent_is_the_nearest_budget(monkeypatch):
    import time

    from dqn.config import build
    from learner.schedule import Schedule

    config = build({"run": {"max_seconds": 100, "max_env_steps": 1000, "max_updates": 50}})
    schedule = Schedule(config, start_time=time.time() - 10)
    assert abs(schedule.budget_spent(0, 0) - 0.1) < 0.05  # 10 s of 100
    assert schedule.budget_spent(500, 0) == 0.5  # env steps nearer their end
    assert schedule.budget_spent(0, 40) == 0.8  # updates nearer still
    assert schedule.budget_spent(5000, 0) == 1.0  # never above all of it
