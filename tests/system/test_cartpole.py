"""CartPole-v1 solved end to end by `dqn train` with its defaults, then re-evaluated."""

from __future__ import annotations

import json

import pytest

from tests.integration._train import dqn, summary

pytestmark = pytest.mark.system


def test_cartpole_solved_with_defaults(tmp_path):
    run_dir = tmp_path / "cartpole"
    result = dqn("train", "--run-dir", str(run_dir), "--max-seconds", "400", timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    s = summary(run_dir)
    print(json.dumps(s, indent=2))
    assert s["solved"], s
    assert s["eval_mean"] >= 475.0
    assert s["seconds_to_solve"] <= 400
    # The exported policy, evaluated afresh on other seeds, is still far above random (~22).
    ev = dqn("evaluate", str(run_dir), "--episodes", "20", "--json", timeout=120)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["mean"] >= 400.0
