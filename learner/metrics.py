"""Run metrics: JSONL, TensorBoard events and the learning-curve plot."""

from __future__ import annotations

import collections
import itertools
import json
import time
from pathlib import Path

import numpy as np

EPISODES_KEPT = 100_000


class Metrics:
    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = run_dir
        self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"))
        # (env_steps, return) of the most recent episodes, for the curve and the progress
        # line; bounded, since one-step probe envs finish thousands of episodes a second.
        self.episodes: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=EPISODES_KEPT
        )
        self.episodes_total = 0
        self.evals: list[tuple[int, float, float]] = []  # (env_steps, mean, std)

    def log(self, kind: str, step: int, **values) -> None:
        record = {"kind": kind, "time": time.time(), "step": step, **values}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def episodes_finished(self, env_steps: int, returns: list[float], lengths: list[int]) -> None:
        """Record episodes reported since the last call: one aggregated metrics record."""
        if not returns:
            return
        self.episodes.extend((env_steps, r) for r in returns)
        self.episodes_total += len(returns)
        self.log(
            "episodes",
            env_steps,
            count=len(returns),
            return_mean=float(np.mean(returns)),
            return_min=float(np.min(returns)),
            return_max=float(np.max(returns)),
            length_mean=float(np.mean(lengths)),
        )

    def evaluation(self, env_steps: int, returns: np.ndarray, updates: int) -> None:
        mean, std = float(returns.mean()), float(returns.std())
        self.evals.append((env_steps, mean, std))
        self.log("eval", env_steps, mean=mean, std=std, updates=updates)

    def recent_return(self, n: int = 20) -> float | None:
        if not self.episodes:
            return None
        return float(np.mean([r for _, r in itertools.islice(reversed(self.episodes), n)]))

    def plot(self, path: Path, title: str, threshold: float | None = None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        if self.episodes:
            steps = np.array([s for s, _ in self.episodes])
            rets = np.array([r for _, r in self.episodes])
            ax.plot(steps, rets, ".", ms=2, alpha=0.35, color="tab:blue", label="episode return")
            window = min(100, len(rets))
            kernel = np.ones(window) / window
            avg = np.convolve(rets, kernel, mode="valid")
            ax.plot(
                steps[window - 1 :],
                avg,
                color="tab:blue",
                lw=2,
                label=f"{window}-episode moving average",
            )
        if self.evals:
            e = np.array(self.evals)
            ax.errorbar(
                e[:, 0],
                e[:, 1],
                yerr=e[:, 2],
                fmt="o-",
                color="tab:red",
                ms=4,
                capsize=2,
                label="greedy evaluation (mean ± std)",
            )
        if threshold is not None:
            ax.axhline(threshold, ls="--", color="gray", lw=1, label=f"threshold {threshold:g}")
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
