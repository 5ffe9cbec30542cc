"""What users watch during `dqn train`: both /metrics endpoints, a learning curve that
is redrawn before the run ends, and every documented TensorBoard tag."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from learner.metrics import TB_TAGS
from tests.integration._train import start_dqn
from tests.integration.test_train_run import FAST

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_curve_and_tensorboard_during_a_run(tmp_path):
    run_dir = tmp_path / "run"
    curve = run_dir / "learning_curve.png"
    proc = start_dqn(
        "train", "--run-dir", str(run_dir), *FAST, "--max-seconds", "300",
        "--run.plot-every-seconds", "0.5", "--run.progress-every-seconds", "0.5",
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []
    deadline = time.monotonic() + 240  # Ray alone took 50 s to start on a loaded machine
    try:
        # Wait for the launcher's watch line and for a progress line after learning
        # started (a loss and episode returns); they come from two processes, in any order.
        watch = learning = False
        for line in proc.stdout:
            lines.append(line)
            watch = watch or ("watch: tensorboard --logdir" in line and "/metrics" in line)
            # figures not known yet show "-": a number after both means learning is on
            learning = learning or bool(
                re.search(r"return\(20\) -?\d", line) and re.search(r"\| loss \d", line)
            )
            if watch and learning:
                break
            assert time.monotonic() < deadline, "".join(lines[-30:])
        else:
            raise AssertionError("".join(lines[-30:]))
        ports = {
            name: json.loads((run_dir / f".{name}.ready").read_text())["metrics_port"]
            for name in ("replay", "learner")
        }
        replay, learner = scrape(ports["replay"]), scrape(ports["learner"])
        assert replay["dqn_replay_inserted_total"] > 0 and replay["dqn_replay_actors"] >= 1
        assert replay["dqn_replay_size"] > 0 and replay["dqn_replay_sampled_total"] > 0
        assert learner["dqn_learner_updates_total"] > 0
        assert learner["dqn_learner_env_steps_total"] > 0
        assert learner["dqn_learner_loss"] == learner["dqn_learner_loss"]  # not NaN
        for name in ("dqn_learner_policy_lag", "dqn_learner_epsilon", "dqn_learner_eval_return"):
            assert name in learner, name
        # The curve is on disk and redrawn while the run goes on.
        while not curve.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        first = curve.stat().st_mtime_ns, curve.read_bytes()
        while (curve.stat().st_mtime_ns, curve.read_bytes()) == first:
            assert time.monotonic() < deadline and proc.poll() is None, "curve not redrawn"
            time.sleep(0.1)
        assert not (run_dir / "summary.json").exists()  # the run has not ended
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    proc.stdout.read()
    assert (run_dir / "summary.json").is_file()
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == set(TB_TAGS), set(TB_TAGS) ^ tags
    assert max(e.value for e in events.Scalars("replay/size")) > 0
    assert max(e.value for e in events.Scalars("speed/updates_per_s")) > 0
    assert all(0 <= e.value <= 1 for e in events.Scalars("actors/epsilon"))
