"""The learner's progress records: every run ends with one carrying its final figures,
however short the run (an in-process learner against a real replay server on loopback)."""

from __future__ import annotations

import json
import math
import re

import pytest

from tests.component._helpers import columns, make_batch, push, replay_stub

pytestmark = pytest.mark.component


def _run(replay_server_factory, run_dir, started=None, **run_fields):
    from dqn.config import build
    from learner.learner import Learner

    replay = replay_server_factory(obs_shape=(1,), n_actions=2)
    channel, stub = replay_stub(replay.address)
    with channel:
        cols = columns(0, 64, obs_shape=(1,))
        push(stub, make_batch(1, cols=cols, policy_version=1, actor_env_steps=64))
    config = build(
        {
            "env": {"id": "Probe4-v0", "obs_shape": (1,), "n_actions": 2},
            "network": {"hidden": (8,)},
            "learner": {"batch_size": 8, "batches_per_call": 2, "metrics_port": -1},
            "eval": {"final_wait_seconds": 0},  # no evaluator here
            "run": {"dir": str(run_dir), "stop_when_solved": False, **run_fields},
        }
    )
    learner = Learner(config, replay.address)
    if started is not None:
        started(learner)
    try:
        learner.start()
        summary = learner.run()
    finally:
        learner.close()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return summary, [r for r in records if r["kind"] == "progress"]


def test_a_run_shorter_than_one_progress_tick_still_reports_its_final_figures(
    replay_server_factory, tmp_path, capsys
):
    # No periodic tick can fire in an hour-long interval: the only progress record
    # is the final one.
    summary, progress = _run(
        replay_server_factory, tmp_path / "run", max_updates=5, progress_every_seconds=3600
    )
    assert summary["updates"] == 5
    assert len(progress) == 1, progress
    final = progress[0]
    assert final["final"] is True
    assert final["updates"] == summary["updates"]
    assert final["step"] == summary["env_steps"] == 64
    # Rates over the whole run (its only interval): finite and positive.
    assert math.isfinite(final["updates_per_s"]) and final["updates_per_s"] > 0
    assert math.isfinite(final["env_steps_per_s"]) and final["env_steps_per_s"] > 0
    assert math.isfinite(final["loss"])  # the latest update's loss, not missing
    assert final["replay_size"] == 64
    out = capsys.readouterr().out
    assert "updates        5 (" in out  # the progress line with the final count


def test_periodic_records_then_one_final_record_with_the_summary_count(
    replay_server_factory, tmp_path
):
    summary, progress = _run(
        replay_server_factory, tmp_path / "run", max_updates=60, progress_every_seconds=0.01
    )
    assert summary["updates"] == 60
    assert [r for r in progress if r.get("final")] == progress[-1:]
    assert progress[-1]["updates"] == summary["updates"]
    counts = [r["updates"] for r in progress]
    assert counts == sorted(counts)
    for r in progress:
        assert math.isfinite(r["updates_per_s"]) and r["updates_per_s"] >= 0, r


def test_metrics_hold_a_progress_lines_figures_once_it_is_printed(
    replay_server_factory, tmp_path, monkeypatch
):
    """Whoever reads a progress line (a person, a test) and then scrapes /metrics sees
    that line's figures, never the previous report's (or NaN before the first)."""
    import learner.reporter as reporter

    holder = {}
    checked = []

    def spy(line, **kwargs):
        if "| updates" in line:
            series = {s.name: s.value for s in holder["learner"].reporter.series()}
            per_s = re.search(r"updates +[\d,]+ \( *(\d+)/s\)", line)[1]
            loss = re.search(r"\| loss (\S+)", line)[1]
            assert f"{series['dqn_learner_updates_per_second']:.0f}" == per_s, line
            assert f"{series['dqn_learner_loss']:.4f}" == loss, line
            checked.append(line)

    monkeypatch.setattr(reporter, "print", spy, raising=False)
    summary, progress = _run(
        replay_server_factory,
        tmp_path / "run",
        started=lambda learner: holder.update(learner=learner),
        max_updates=60,
        progress_every_seconds=0.01,
    )
    assert summary["updates"] == 60
    assert len(checked) == len(progress) >= 1
