"""`dqn train --preset rainbow-lite` (dueling + n-step + prioritized replay + Double +
Polyak) on a probe env through the whole stack: the IS-weighted update must still
land on the analytic Q-values, and priorities must flow back to the replay server."""

from __future__ import annotations

import pytest

from dqn.policy_file import load_policy
from tests.integration._train import dqn, processes_mentioning, summary
from tests.integration.test_probes import GAMMA, PROBE_ARGS, RUN_TIMEOUT, TOL

pytestmark = pytest.mark.integration


def test_rainbow_lite_learns_probe3_q_values(tmp_path):
    run_dir = tmp_path / "per"
    result = dqn(
        "train",
        "--preset",
        "rainbow-lite",
        "--env",
        "Probe3-v0",
        "--run-dir",
        str(run_dir),
        *PROBE_ARGS,
        "--learner.n-step",
        "1",  # Probe3's value at obs 0 is the one-step bootstrap gamma * 1
        "--learner.priority-beta-steps",
        "1000",
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    s = summary(run_dir)
    assert s["stop_reason"] == "max_updates"
    per = s["priority_updates"]
    # Every update's rows go back (the last flush included), minus stale/dropped ones.
    assert per["sent"] + per["stale"] + per["dropped"] >= 0.9 * 2000 * 64
    assert per["sent"] > 0.5 * 2000 * 64
    policy = load_policy(run_dir)
    for obs, expected in ((0.0, GAMMA), (1.0, 1.0)):
        q = float(policy.q_values([obs])[0])
        assert q == pytest.approx(expected, abs=TOL), f"obs {obs}: Q {q}"
    assert processes_mentioning(str(run_dir)) == []
