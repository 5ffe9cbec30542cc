"""Each benchmark command runs end to end in its --quick form and writes its JSON.

Only shapes and signs are checked here: speed figures belong to the benchmarks.
"""

from __future__ import annotations

import json
import math

import pytest


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.mark.component
def test_replay_bench_quick_compares_real_and_null_servers(tmp_path):
    from bench import replay

    assert replay.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "replay.json").read_text())
    assert [(r["pushers"], r["transitions_per_message"]) for r in result["push"]] == [
        (1, 32),
        (2, 32),
    ]
    assert [(r["batch_size"], r["batches_per_call"]) for r in result["sample"]] == [
        (128, 1),
        (128, 16),
    ]
    for row in result["push"] + result["sample"]:
        for server in ("null", "real"):
            assert _positive(row[server]["rate_median"]), row
        assert _positive(row["ratio"])


@pytest.mark.component
def test_learner_bench_quick_measures_cpu_random_and_live(tmp_path):
    from bench import learner

    assert learner.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "learner.json").read_text())
    cpu = {(r["mode"], r["source"]) for r in result["rows"] if r["device"] == "cpu"}
    assert cpu == {("eager", "random"), ("eager", "live")}
    assert all(_positive(r["updates_per_s_median"]) for r in result["rows"])
    assert result["cuda"] == ("targets" in result)


@pytest.mark.integration
def test_fleet_bench_quick_reports_steps_and_ingest(tmp_path):
    from bench import fleet

    assert (
        fleet.main(
            ["--counts", "1", "--runners", "process", "--seconds", "1", "--out", str(tmp_path)]
        )
        == 0
    )
    result = json.loads((tmp_path / "fleet.json").read_text())
    (row,) = result["rows"]
    assert (row["runner"], row["actors"]) == ("process", 1)
    assert _positive(row["env_steps_per_s"]) and _positive(row["transitions_per_s"])
    # the raw vector env of the same run, the ratios, and the actor's memory
    assert _positive(row["raw_env_steps_per_s"]) and _positive(row["vs_raw"])
    assert _positive(row["vs_raw_per_cpu"])
    mem = row["memory"]
    assert mem["measured_processes"] == 1
    assert 0 < mem["uss_mib"] <= mem["pss_mib"] <= mem["rss_mib"]


@pytest.mark.unit
def test_solve_median_counts_unsolved_runs_as_slowest():
    from bench.solve import _median

    solved = {"solved": True, "seconds_to_solve": 10.0}
    unsolved = {"solved": False, "seconds_to_solve": None}
    assert (
        _median([solved, {**solved, "seconds_to_solve": 30.0}, unsolved], "seconds_to_solve")
        == 30.0
    )
    assert _median([solved, unsolved, unsolved], "seconds_to_solve") is None


@pytest.mark.component
def test_sb3_side_writes_a_summary(tmp_path):
    pytest.importorskip("stable_baselines3")
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "sb3.json"
    subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "sb3_solve.py"),
            "--seed",
            "1",
            "--out",
            str(out),
            "--max-env-steps",
            "1100",
            "--eval-every",
            "1024",
            "--eval-episodes",
            "2",
        ],
        check=True,
        timeout=120,
    )
    s = json.loads(out.read_text())
    assert s["env_steps"] >= 1024 and s["stop_reason"] in ("solved", "max_env_steps")
    assert s["solved"] == (s["stop_reason"] == "solved")
