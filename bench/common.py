"""What every benchmark shares: a replay server subprocess, tables, medians, JSON output."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OBS_SHAPE = (4,)  # CartPole-shaped transitions
N_ACTIONS = 2


def median(values) -> float:
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def write_json(name: str, result: dict, out_dir: Path | None = None) -> Path:
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Right-aligned columns; floats with thousands separators and one decimal."""

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            if v != v:
                return "-"
            return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    text = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(header)]
    print()
    print(title)
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for r in text:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))
    print(flush=True)


def random_columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` valid CartPole-shaped transitions."""
    obs = rng.standard_normal((n + 1, *OBS_SHAPE)).astype(np.float32)
    return {
        "obs": obs[:-1],
        "action": rng.integers(0, N_ACTIONS, n).astype(np.int64),
        "reward": np.ones(n, np.float32),
        "next_obs": obs[1:],
        "terminated": rng.random(n) < 0.05,
        "discount": np.full(n, 0.99**3, np.float32),
    }


class ReplayServerProcess:
    """``dqn replay-server`` as a child process on 127.0.0.1, port 0 (stopped by PID)."""

    def __init__(self, tmp: Path, *flags: str, name: str = "replay", ready_timeout: float = 60.0):
        self.ready = tmp / f"{name}.ready"
        self.log = tmp / f"{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "deploy.cli",
            "replay-server",
            "--log-level",
            "WARNING",
            "--replay.host",
            "127.0.0.1",
            "--replay.port",
            "0",
            "--ready-file",
            str(self.ready),
            # throughput benches push with nobody sampling: no replay ratio unless asked
            "--replay.samples-per-insert",
            "0",
            *flags,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DQN_")}  # hermetic
        with open(self.log, "wb") as log_file:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file
            )
        try:
            self.address = self._wait_ready(ready_timeout)
        except BaseException:  # the caller never gets this object: stop the child here
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"replay server exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay server not ready after {timeout:.0f}s")
            time.sleep(0.05)
        return json.loads(self.ready.read_text())["address"]

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass
