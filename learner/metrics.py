"""Run metrics: JSONL, TensorBoard events and the learning-curve plot.

TensorBoard tags (x axis: fleet env steps) are listed in ``TB_TAGS``; ``metrics.jsonl``
holds the same figures as records of kind ``progress``, ``episodes`` and ``eval``.
``learning_curve.png`` is redrawn by a background thread while training
(:meth:`Metrics.refresh_plot`) and once more at the end, always via temp file + rename.

Memory stays flat in runs of any length: episodes are a bounded deque
(``EPISODES_KEPT``), the evaluation history is thinned evenly over the run once it holds
``EVALS_KEPT`` entries (:func:`thin_history`), and every drawing frees its
figure before the next one starts (see :func:`plot_curve`).
"""

from __future__ import annotations

import collections
import gc
import itertools
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dqn.files import atomic_write_with

EPISODES_KEPT = 100_000
# Evaluations kept for the curve and the checkpoint. An eval every 250 updates is
# several a second on a fast learner (~7,000 an hour), so the history is thinned
# evenly once it holds more than this; the first and the latest are always kept.
EVALS_KEPT = 2_000
log = logging.getLogger("learner.metrics")

# tag -> what it is; every series the learner writes to TensorBoard.
TB_TAGS = {
    "loss/td": "Huber TD loss of the latest update",
    "q/mean": "mean Q(s, a) of the latest batch",
    "actors/epsilon": "exploration epsilon, mean over actors",
    "speed/env_steps_per_s": "fleet env steps per second",
    "speed/updates_per_s": "learner updates per second",
    "episode/return": "mean return of the episodes finished since the previous poll",
    "episode/length": "mean length of those episodes",
    "episode/return_recent": "mean return of the last 20 episodes",
    "policy/lag": "learner weights version minus the actors' acting version (mean)",
    "replay/size": "transitions in the replay buffer",
    "replay/samples_per_insert": "sampled / inserted transitions over the run",
    "replay/samples_per_insert_recent": "sampled / inserted since the previous progress line",
    "eval/return_mean": "greedy evaluation: mean return",
    "eval/return_std": "greedy evaluation: return std",
}


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

        self._plotter: _CurvePlotter | None = None

    def log(self, kind: str, step: int, **values) -> None:
        """One JSON record in metrics.jsonl."""
        record = {"kind": kind, "time": time.time(), "step": step, **values}
        self._jsonl.write(json.dumps(record) + "\n")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars at ``step`` env steps; tags must be in ``TB_TAGS``."""
        if self._tb is None:
            return
        for tag, value in values.items():
            if tag not in TB_TAGS:
                raise KeyError(f"TensorBoard tag {tag!r} is not documented in TB_TAGS")
            self._tb.add_scalar(tag, float(value), step)

    def episodes_finished(
        self,
        env_steps: int,
        returns: list[float],
        lengths: list[int],
        episode_env_steps: Sequence[int] | None = None,
    ) -> None:
        """Record episodes reported since the last call: one aggregated metrics record
        at ``env_steps``. On the curve each episode sits at its own env step
        (``episode_env_steps``, the replay server's stamp ``Episode.env_steps``), or
        at ``env_steps`` when none is given or a stamp is 0 (a server that predates it)."""
        if not returns:
            return
        if episode_env_steps is None:
            episode_env_steps = [0] * len(returns)
        elif len(episode_env_steps) != len(returns):
            raise ValueError(
                f"episode_env_steps: {len(episode_env_steps)} values for {len(returns)} episodes"
            )
        self.episodes.extend(
            (int(s) if s else env_steps, r) for s, r in zip(episode_env_steps, returns, strict=True)
        )
        self.episodes_total += len(returns)
        mean_return, mean_length = float(np.mean(returns)), float(np.mean(lengths))
        self.log(
            "episodes",
            env_steps,
            count=len(returns),
            return_mean=mean_return,
            return_min=float(np.min(returns)),
            return_max=float(np.max(returns)),
            length_mean=mean_length,
        )
        self.scalars(env_steps, {"episode/return": mean_return, "episode/length": mean_length})

    def evaluation(self, record) -> None:
        """An ``eval`` record and its scalars (``record``: a learner.records.EvalRecord)."""
        r = record
        self.log(
            "eval",
            r.env_steps,
            mean=r.mean,
            std=r.std,
            updates=r.updates,
            version=r.version,
            episodes=r.episodes,
            seconds=r.seconds,
            wall_seconds=r.wall_seconds,
            evaluator=r.evaluator,
        )
        self.scalars(r.env_steps, {"eval/return_mean": r.mean, "eval/return_std": r.std})

    def recent_return(self, n: int = 20) -> float | None:
        if not self.episodes:
            return None
        return float(np.mean([r for _, r in itertools.islice(reversed(self.episodes), n)]))

    def plot(
        self, path: Path, title: str, threshold: float | None = None, evals: list = ()
    ) -> None:
        """Draw the curve now (waits for a refresh in progress, then stops refreshing);
        ``evals``: the learner's evaluation records."""
        if self._plotter is not None:
            self._plotter.close()
            self._plotter = None
        plot_curve(path, list(self.episodes), _eval_points(evals), title, threshold)

    def refresh_plot(
        self, path: Path, title: str, threshold: float | None = None, evals: list = ()
    ) -> None:
        """Redraw the curve in the background from a copy of the data taken now; a
        request made while a drawing is still in progress replaces any pending one."""
        if self._plotter is None:
            self._plotter = _CurvePlotter()
        self._plotter.request(path, list(self.episodes), _eval_points(evals), title, threshold)

    def close(self) -> None:
        if self._plotter is not None:
            self._plotter.close()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _eval_points(evals: list) -> list[tuple[int, float, float]]:
    return [(e.env_steps, e.mean, e.std) for e in evals]


def _stride(last: int, kept: int) -> int:
    """The smallest power of two ``s`` with at most ``kept - 1`` multiples of ``s`` in
    ``[0, last]``."""
    s = 1
    while last // s + 1 > kept - 1:
        s *= 2
    return s


def thin_history(history: list, total: int, kept: int = EVALS_KEPT) -> None:
    """Bound a history in place, right after its newest entry was appended: ``total``
    entries were ever appended, ``history`` holds the ones kept.

    Entry ``i`` (0-based) stays while ``i`` is a multiple of a stride that doubles
    (1, 2, 4, ...) as needed to keep at most ``kept`` entries; the newest one stays in
    any case. The kept entries are thus spread evenly over the whole run, the first and
    the latest among them, so a curve drawn from them still spans the run and ends at
    the newest figure.
    """
    if kept < 2:
        raise ValueError(f"kept must be >= 2, got {kept}")
    if total <= kept:
        return
    s_before, s = _stride(total - 3, kept), _stride(total - 2, kept)
    if len(history) == (total - 3) // s_before + 3:  # the layout this function keeps
        grid, before, newest = history[:-2], history[-2], history[-1]
        if s != s_before:
            grid = grid[::2]
        history[:] = [*grid, *([before] if (total - 2) % s == 0 else []), newest]
        return
    # Another layout (e.g. restored from before histories were thinned): take it as
    # evenly spread over entries 0..total-2 and pick the nearest to each multiple of s.
    older = history[:-1]
    picks = range(0, total - 1, s)
    if len(older) > len(picks):
        scale = (len(older) - 1) / max(1, total - 2)
        history[:] = [*(older[round(i * scale)] for i in picks), history[-1]]


class _CurvePlotter:
    """One daemon thread that draws the latest requested curve, off the learner's loop."""

    def __init__(self):
        self._cond = threading.Condition()
        self._pending: tuple | None = None
        self._closed = False
        self.drawn = 0
        self._thread = threading.Thread(target=self._run, name="curve-plotter", daemon=True)
        self._thread.start()

    def request(self, *args) -> None:
        with self._cond:
            self._pending = args
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                args, self._pending = self._pending, None
            try:
                plot_curve(*args)
                self.drawn += 1
            except Exception:  # noqa: BLE001 - a failed refresh must not stop training
                log.exception("refreshing the learning curve failed")

    def close(self) -> None:
        """Finish the drawing in progress, drop a pending one, stop the thread."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        self._thread.join(30)


def plot_curve(
    path: Path,
    episodes: list[tuple[int, float]],
    evals: list[tuple[int, float, float]],
    title: str,
    threshold: float | None = None,
) -> None:
    """Episode returns, their moving average and evaluations against env steps, written
    atomically to ``path`` (PNG). Uses matplotlib's object API only (no pyplot global
    state), so it is safe to call from a background thread."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    if episodes:
        steps = np.array([s for s, _ in episodes])
        rets = np.array([r for _, r in episodes])
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
    if evals:
        e = np.array(evals)
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
    if ax.get_legend_handles_labels()[0]:  # an empty run has nothing to label
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_with(path, fig.savefig, suffix=".png")
    # A Figure is a web of reference cycles (artists <-> axes <-> transforms), so only a
    # full (generation 2) collection frees it, and in the learner's heap (~400k objects)
    # that ran only every ~20 drawings: with 30k episodes on the curve ~7 MiB each stayed
    # alive between collections and the allocator kept the high-water mark, which rose
    # as the curve grew (issue 11, item 7). Collect now: ~50 ms of CPU per drawing.
    del fig, ax
    gc.collect()
