"""Faults injected into a real `dqn train` on CartPole: an actor and then the learner
are killed with SIGKILL. Ray restarts the actor and training goes on; the learner is
resumed from its checkpoint and continues where it was, not from random play."""

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

from replay_server import checkpoint
from tests.integration._train import dqn, processes_mentioning, ray_daemons_of, start_dqn, summary

pytestmark = pytest.mark.integration

ARGS = [
    "--seed",
    "3",
    "--num-actors",
    "2",
    "--run.stop-when-solved",
    "false",
    "--run.checkpoint-every-seconds",
    "1",
    "--replay.checkpoint-every-seconds",
    "1",
    "--run.progress-every-seconds",
    "0.5",
    # Budgets far beyond the test's own waits: a fast machine must not reach the default
    # 2M env steps (a run that ends by itself) before the learner is killed.
    "--max-env-steps",
    "1000000000",
]


def _progress(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            records.append(json.loads(line))
    return records


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _descendants(pid: int, needle: str) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if needle in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def _stamp(path) -> tuple[int, int] | None:
    """(inode, mtime) of a file that is replaced atomically: a new write, a new inode."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _env_steps(run_dir) -> int:
    steps = [r["step"] for r in _progress(run_dir) if r["kind"] == "progress"]
    return max(steps, default=0)


@pytest.mark.timeout(1500)  # 145 s on the loaded 2-core dev machine; CI may be 3x slower
def test_actor_and_learner_killed(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_dqn(
        "train",
        "--run-dir",
        str(run_dir),
        "--max-seconds",
        "1800",  # the test kills it; this only bounds a hung run
        *ARGS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Learning is under way: an evaluation well above a random policy (~20).
        _wait_for(
            lambda: any(r["kind"] == "eval" and r["mean"] >= 100 for r in _progress(run_dir)),
            300,
            "an evaluation >= 100",
        )

        # 1. kill -9 one actor: Ray starts a new process, which pushes again.
        actors = _wait_for(lambda: _descendants(proc.pid, "ray::_RayActor"), 60, "actors")
        victim = actors[0]
        victim.kill()
        _wait_for(
            lambda: any(
                p.pid not in {a.pid for a in actors}
                for p in _descendants(proc.pid, "ray::_RayActor")
            ),
            180,
            "a restarted actor process",
        )
        steps_after_kill = _env_steps(run_dir)
        _wait_for(
            lambda: _env_steps(run_dir) > steps_after_kill + 5_000,
            180,
            "env steps rising after the actor kill",
        )

        # 2. kill -9 the replay server: the launcher restarts it on the same port from
        # its checkpoint, the learner and actors reconnect, and training goes on.
        replay_ckpt = run_dir / "checkpoints" / "replay.npz"
        _wait_for(replay_ckpt.exists, 60, "a replay checkpoint")
        checkpointed = checkpoint.load(replay_ckpt).size
        old_replay = _descendants(proc.pid, "replay-server")
        assert len(old_replay) == 1
        old_replay[0].kill()
        killed_at = time.time()
        _wait_for(
            lambda: any(
                p.pid != old_replay[0].pid for p in _descendants(proc.pid, "replay-server")
            ),
            180,
            "a restarted replay server",
        )
        after_restart = lambda: [  # noqa: E731
            r for r in _progress(run_dir) if r["kind"] == "progress" and r["time"] > killed_at + 1
        ]
        # The learner trains on: wait for its update count to rise after the restart
        # (reconnecting can take a while on a slow machine).
        recent = _wait_for(
            lambda: len(r := after_restart()) >= 4 and r[-1]["updates"] > r[0]["updates"] and r,
            180,
            "updates rising after the restart",
        )
        assert min(r["replay_size"] for r in recent[1:]) >= checkpointed

        # 3. kill -9 the learner after a checkpoint; the launcher shuts the rest down.
        learner_ckpt = run_dir / "checkpoints" / "learner.pt"
        seen = _stamp(learner_ckpt)
        _wait_for(
            lambda: _stamp(learner_ckpt) not in (None, seen),
            60,
            "a learner checkpoint written after the restart",
        )
        learner = _descendants(proc.pid, "--replay-address")
        assert len(learner) == 1
        learner[0].kill()
        assert proc.wait(120) == 1  # the learner died: a failed run, everything stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert processes_mentioning(str(run_dir)) == []
    assert ray_daemons_of(proc.pid) == []

    ckpt = torch.load(run_dir / "checkpoints/learner.pt", weights_only=True)["progress"]
    evals_before = len(ckpt["evals"])
    last_eval_before = ckpt["evals"][-1]["mean"]
    records_before = len(_progress(run_dir))

    # 4. resume: counters, networks, optimizer, eval history and exploration go on.
    resumed = dqn(
        "train",
        "--run-dir",
        str(run_dir),
        "--resume",
        "--max-seconds",
        "300",
        "--max-updates",
        str(ckpt["updates"] + 1_000),
        *ARGS,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    s = summary(run_dir)
    assert s["updates"] >= ckpt["updates"] + 1_000
    after = torch.load(run_dir / "checkpoints/learner.pt", weights_only=True)["progress"]
    assert after["evals"][:evals_before] == ckpt["evals"]  # history kept
    first_eval_after = after["evals"][evals_before]
    # counters continued: the resumed learner's first version carries the restored count
    assert first_eval_after["updates"] >= ckpt["updates"] > 0
    assert first_eval_after["mean"] >= min(100.0, 0.5 * last_eval_before), (
        first_eval_after,
        last_eval_before,
    )
    new_progress = [r for r in _progress(run_dir)[records_before:] if r["kind"] == "progress"]
    assert new_progress and new_progress[0]["step"] >= ckpt["env_steps"]
    # The actors pick up the exploration position with the weights: no epsilon = 1.
    assert max(r["epsilon"] for r in new_progress) <= 0.1, [r["epsilon"] for r in new_progress]
