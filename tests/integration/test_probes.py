"""`dqn train` on every probe env through the whole stack (Ray actors, gRPC replay
server, learner), checking the exported policy's Q-values against their analytic
values. A learner with a wrong target, a wrong bootstrap mask or a broken transport
cannot land within the tolerance."""

from __future__ import annotations

import pytest

from dqn.policy_file import load_policy
from tests.integration._train import dqn, processes_mentioning, ray_daemons_of, summary

pytestmark = pytest.mark.integration

GAMMA = 0.9
TOL = 0.05

# (env id, {observation: expected Q-values per action})
CASES = [
    ("Probe1-v0", {0.0: [1.0]}),
    ("Probe2-v0", {-1.0: [-1.0], 1.0: [1.0]}),
    ("Probe3-v0", {0.0: [GAMMA], 1.0: [1.0]}),
    ("Probe4-v0", {0.0: [-1.0, 1.0]}),
    ("Probe5-v0", {0.0: [1.0, -1.0], 1.0: [-1.0, 1.0]}),
]

PROBE_ARGS = [
    "--num-actors",
    "1",
    "--actors.envs-per-actor",
    "4",
    "--actors.push-every",
    "32",
    # Uniform exploration: every action's value must be learned, not only the greedy one.
    "--actors.eps-start",
    "1.0",
    "--actors.eps-end",
    "1.0",
    "--replay.capacity",
    "5000",
    "--replay.min-size",
    "200",
    "--network.hidden",
    "32,32",
    "--learner.gamma",
    str(GAMMA),
    "--learner.lr",
    "2e-3",
    "--learner.batch-size",
    "64",
    "--max-updates",
    "2000",
    "--eval.every-versions",
    "100",  # 1,000 updates at the default publish_every 10
    "--run.stop-when-solved",
    "false",
    # Runs end by --max-updates; this bounds a hung one, with room for a machine 3x
    # slower than the dev box (where Ray alone once took 50 s to start).
    "--max-seconds",
    "480",
]
RUN_TIMEOUT = 560  # seconds: under pytest's 600 s per test


@pytest.mark.parametrize(("env_id", "expected"), CASES, ids=[c[0] for c in CASES])
def test_probe_q_values(tmp_path, env_id, expected):
    run_dir = tmp_path / env_id
    result = dqn(
        "train", "--env", env_id, "--run-dir", str(run_dir), *PROBE_ARGS, timeout=RUN_TIMEOUT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    s = summary(run_dir)
    assert s["updates"] >= 2000 and s["stop_reason"] == "max_updates"
    assert s["env_steps"] > 0
    policy = load_policy(run_dir)  # its policy.safetensors
    assert policy.kind == "final" and policy.updates == s["updates"]
    for obs, q_expected in expected.items():
        q = policy.q_values([obs]).tolist()
        assert q == pytest.approx(q_expected, abs=TOL), f"{env_id} obs {obs}: Q {q}"
    # Nothing left running: no part of this run, no Ray daemon it started.
    assert processes_mentioning(str(run_dir)) == []
    assert ray_daemons_of(result.pid) == []


def test_probe_without_ray(tmp_path):
    """`--actors.runner process`: the same run with plain actor processes and no Ray
    (what a machine without Ray, like the lent GPU box, runs)."""
    run_dir = tmp_path / "Probe5-v0"
    result = dqn(
        "train",
        "--env",
        "Probe5-v0",
        "--run-dir",
        str(run_dir),
        *PROBE_ARGS,
        "--actors.runner",
        "process",
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 actor processes" in result.stdout and "Ray actors" not in result.stdout
    policy = load_policy(run_dir)
    for obs, q_expected in CASES[4][1].items():
        q = policy.q_values([obs]).tolist()
        assert q == pytest.approx(q_expected, abs=TOL), f"obs {obs}: Q {q}"
    assert ray_daemons_of(result.pid) == []
    assert processes_mentioning(str(run_dir)) == []
