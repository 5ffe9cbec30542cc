"""Helpers to run the real `dqn` CLI as a subprocess and inspect what it leaves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def start_dqn(
    *args: str, env: dict | None = None, stdout=subprocess.PIPE, stderr=subprocess.PIPE
) -> subprocess.Popen:
    """Start ``python -m deploy.cli ARGS`` in a session of its own, so that a test can end
    it and everything it started as one process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def dqn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m deploy.cli ARGS``; the result also carries the process's ``pid``."""
    with start_dqn(*args) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(
                f"dqn {' '.join(args)} timed out:\n{out[-3000:]}\n{err[-3000:]}"
            ) from None
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    result.pid = proc.pid
    return result


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in (p.info["cmdline"] or [])):
                found.append(p)
        except psutil.Error:
            pass
    return found


def ray_daemons_of(driver_pid: int) -> list[psutil.Process]:
    """Ray daemons (gcs_server, raylet) of the Ray session a driver process started.

    A local session is named ``session_<date>_<time>_<driver pid>``.
    """
    pattern = re.compile(rf"session_[0-9_-]+_{driver_pid}(/|$)")
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if p.info["name"] in ("gcs_server", "raylet") and any(
                pattern.search(arg) for arg in p.info["cmdline"] or []
            ):
                found.append(p)
        except psutil.Error:
            pass
    return found
