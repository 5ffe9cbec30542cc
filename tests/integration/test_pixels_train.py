"""`dqn train` on PixelCartPole-v1: frames flow as uint8 through every part, the run
finishes within its budget and exports a conv policy that `dqn evaluate` can run."""

from __future__ import annotations

import json

import pytest
import torch

from dqn.policy_file import load_policy
from tests.integration._train import dqn, summary

pytestmark = pytest.mark.integration
OBS_SHAPE = (2, 40, 80)
CAPACITY = 2_000


@pytest.mark.timeout(900)  # the run (up to 480 s) and `dqn evaluate` (up to 240 s)
def test_pixel_cartpole_trains_briefly_and_exports_a_conv_policy(tmp_path):
    run_dir = tmp_path / "run"
    result = dqn(
        "train",
        "--env",
        "PixelCartPole-v1",
        "--run-dir",
        str(run_dir),
        "--num-actors",
        "1",
        "--actors.envs-per-actor",
        "4",
        "--replay.capacity",
        str(CAPACITY),
        "--replay.min-size",
        "100",
        "--network.hidden",
        "32",
        "--learner.batch-size",
        "16",
        "--learner.batches-per-call",
        "4",
        "--eval.episodes",
        "2",
        "--eval.every-versions",
        "10",
        "--max-updates",
        "150",
        "--max-seconds",
        "400",  # it ends by --max-updates; room for a machine 3x slower than the dev box
        timeout=480,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    s = summary(run_dir)
    assert s["env_id"] == "PixelCartPole-v1" and s["threshold"] == 195.0
    assert s["stop_reason"] in ("max_updates", "solved") and s["updates"] >= 100
    assert s["env_steps"] > 100
    # uint8 storage, bounded by capacity and reported in bytes (obs + next_obs + scalars).
    per_row = 2 * 2 * 40 * 80 + 8 + 4 + 1 + 4
    assert s["replay_bytes"] == CAPACITY * per_row
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert any(r.get("replay_bytes") == CAPACITY * per_row for r in records)
    assert any(r["kind"] == "eval" for r in records)
    policy = load_policy(run_dir)
    assert policy.obs_shape == OBS_SHAPE and policy.obs_dtype == "uint8"
    frames = torch.randint(0, 256, (3, *OBS_SHAPE), dtype=torch.uint8)
    assert policy.q_values(frames).shape == (3, 2) and policy.predict(frames[0]) in (0, 1)
    evaluated = dqn("evaluate", str(run_dir), "--episodes", "2", "--json", timeout=240)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    assert report["env_id"] == "PixelCartPole-v1" and len(report["returns"]) == 2
    assert all(r >= 8 for r in report["returns"])  # CartPole lasts at least 8 steps
