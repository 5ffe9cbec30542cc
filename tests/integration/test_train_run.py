"""What `dqn train` leaves behind, resume, Ctrl-C, and bad configuration."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import psutil
import pytest
import torch

from tests.integration._train import dqn, processes_mentioning, ray_daemons_of, start_dqn, summary

pytestmark = pytest.mark.integration

FAST = [
    "--env",
    "Probe4-v0",
    "--num-actors",
    "2",
    "--actors.envs-per-actor",
    "2",
    "--replay.capacity",
    "2000",
    "--replay.min-size",
    "100",
    "--network.hidden",
    "16",
    "--learner.batch-size",
    "32",
    "--eval.every-versions",
    "20",  # 200 updates at the default publish_every 10
    "--run.stop-when-solved",
    "false",
    "--max-seconds",
    "300",  # runs end by --max-updates; this only bounds a hung one
    "--run.checkpoint-every-seconds",
    "1",
    # Probe4 runs thousands of env steps a second: a fast machine must not reach the
    # default 2M (a run that ends by itself) while a test still waits on it.
    "--max-env-steps",
    "1000000000",
]


@pytest.mark.timeout(900)  # two runs of up to 400 s; 152 s on the loaded dev box
def test_run_directory_contents_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    first = dqn("train", "--run-dir", str(run_dir), "--max-updates", "400", *FAST, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for name in (
        "config.json",
        "metrics.jsonl",
        "learning_curve.png",
        "policy.safetensors",
        "best_policy.safetensors",
        "summary.json",
        "checkpoints/learner.pt",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert not list(run_dir.glob(".*.ready")), "ready files are removed at exit"
    s = summary(run_dir)
    for key in (
        "solved",
        "seconds_to_solve",
        "env_steps_to_solve",
        "updates_to_solve",
        "eval_mean",
        "eval_std",
        "env_steps",
        "updates",
        "wall_seconds",
        "actors",
        "device",
        "peak_rss_mb",
    ):
        assert key in s, key
    assert s["actors"] == 2 and s["device"] == "cpu" and s["updates"] >= 400
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert {"eval", "episodes", "progress"} <= {r["kind"] for r in records}
    # However short the run, its last progress record holds the final figures.
    final = [r for r in records if r["kind"] == "progress"][-1]
    assert final.get("final") and final["updates"] == s["updates"], final
    assert "steps" in first.stdout and "updates" in first.stdout  # progress lines
    # A per-run token guards every RPC; it is kept out of logs and of every other file.
    token_file = run_dir / ".token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert token not in first.stdout + first.stderr
    for path in run_dir.rglob("*"):
        if path.is_file() and path != token_file:
            assert token.encode() not in path.read_bytes(), path
    ckpt = torch.load(run_dir / "checkpoints/learner.pt", weights_only=True)
    updates_before, evals_before = ckpt["progress"]["updates"], len(ckpt["progress"]["evals"])

    second = dqn(
        "train", "--run-dir", str(run_dir), "--resume", "--max-updates", "800", *FAST, timeout=400
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stderr
    s2 = summary(run_dir)
    assert s2["updates"] >= 800
    ckpt2 = torch.load(run_dir / "checkpoints/learner.pt", weights_only=True)
    assert ckpt2["progress"]["updates"] >= updates_before + 400 - 1
    assert len(ckpt2["progress"]["evals"]) > evals_before  # history kept and extended
    # The resumed learner starts from the trained network: its first evaluation on
    # Probe4 is already the optimal return (+1), not a random policy's.
    first_eval_after_resume = ckpt2["progress"]["evals"][evals_before]
    assert first_eval_after_resume["mean"] == pytest.approx(1.0)


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _assert_not_exposed(launcher_pid: int) -> None:
    """Every process of the run (ours and Ray's) listens on loopback only; the Ray
    dashboard runs without its web frontend and nothing listens on its port."""
    tree = [psutil.Process(launcher_pid), *psutil.Process(launcher_pid).children(True)]
    ours = [p for p in tree if "replay-server" in p.cmdline() or "learner" in p.cmdline()]
    assert len(ours) == 2
    for p in ours:
        assert [c for c in p.net_connections("inet") if c.status == "LISTEN"]
    for p in tree:
        # A short-lived Ray worker may exit (or be a zombie) while we look at it.
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            cmdline = " ".join(p.cmdline())
            listening = [c.laddr for c in p.net_connections("inet") if c.status == "LISTEN"]
            assert all(addr.ip in LOOPBACK for addr in listening), (cmdline[:200], listening)
            assert all(addr.port != 8265 for addr in listening), cmdline[:200]
            if "dashboard/dashboard.py" in cmdline:
                assert "--disable-frontend" in cmdline


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_stops_everything(tmp_path, how):
    """Ctrl-C (SIGINT to the process group) and SIGTERM to the launcher alone (what a
    supervisor sends) both stop every part cleanly. ray.init installs its own SIGTERM
    handler, which once killed the launcher at once and left the replay server up."""
    run_dir = tmp_path / "run"
    proc = start_dqn(
        "train",
        "--run-dir",
        str(run_dir),
        *FAST,
        "--max-seconds",
        "300",
        stderr=subprocess.STDOUT,
    )
    lines = []
    deadline = time.monotonic() + 240  # Ray alone took 50 s to start on a loaded machine
    try:
        # Wait until it has solved (Probe4 takes a few hundred updates): with
        # stop-when-solved off it trains on, and Ctrl-C must still read "stopped".
        for line in proc.stdout:
            lines.append(line)
            if "-> solved" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        else:
            raise AssertionError("".join(lines))
        _assert_not_exposed(proc.pid)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    rest = proc.stdout.read()
    assert proc.returncode == 130, "".join(lines) + rest
    assert (run_dir / "summary.json").is_file()  # the learner still wrote its outputs
    s = summary(run_dir)
    assert s["stop_reason"] == "stopped" and s["solved"], s
    assert processes_mentioning(str(run_dir)) == []
    assert ray_daemons_of(proc.pid) == []


def test_bad_config_names_the_field(tmp_path):
    result = dqn("train", "--run-dir", str(tmp_path / "r"), "--learner.lr", "-1", timeout=60)
    assert result.returncode == 2
    assert "learner.lr" in result.stderr and "must be > 0" in result.stderr
    result = dqn(
        "train", "--run-dir", str(tmp_path / "r"), "--actors.epsilon", "greedy", timeout=60
    )
    assert result.returncode == 2 and "actors.epsilon" in result.stderr


def test_every_subcommand_has_help():
    for command in ("train", "replay-server", "learner", "actors", "evaluate"):
        result = dqn(command, "--help", timeout=60)
        assert result.returncode == 0, result.stderr
        assert "usage: dqn" in result.stdout
    result = dqn("train", "--help", timeout=60)
    assert "--learner.lr" in result.stdout and "Adam learning rate" in result.stdout
