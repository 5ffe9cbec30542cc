"""What the learner reports, from one table (:data:`FIGURES`): the progress line, the
``progress`` records of metrics.jsonl, TensorBoard scalars and the ``/metrics`` series.

Each :class:`Figure` names one figure once and says where it goes. A progress report
(:meth:`Reporter.report`) takes a snapshot of the figures (``{key: value}``, None where
not known yet) and writes it to the line, the JSONL record and TensorBoard; ``/metrics``
(:meth:`Reporter.series`) reads counters live at scrape time and everything else from
the latest report, so it shows the line's figures by the time anyone can read the line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from dqn.telemetry import Series


@dataclass(frozen=True)
class Figure:
    key: str
    line: str | None = None  # progress-line segment, a format with {v}
    joined: bool = False  # the segment follows the previous one after a space, not " | "
    jsonl: bool = False  # in the ``progress`` record (omitted while unknown)
    tb: str | None = None  # TensorBoard tag (see learner.metrics.TB_TAGS)
    metric: str | None = None  # Prometheus series name
    kind: str = "gauge"
    help: str = ""
    live: bool = False  # /metrics reads it at scrape time, not from the latest report


FIGURES: tuple[Figure, ...] = (
    Figure("env_steps", "steps {v:>9,}", metric="dqn_learner_env_steps_total",
           kind="counter", help="fleet env steps seen", live=True),
    Figure("env_steps_per_s", "({v:6.0f}/s)", True, True, "speed/env_steps_per_s",
           "dqn_learner_env_steps_per_second", help="fleet env steps per second"),
    Figure("updates", "updates {v:>8,}", jsonl=True, metric="dqn_learner_updates_total",
           kind="counter", help="gradient updates", live=True),
    Figure("updates_per_s", "({v:5.0f}/s)", True, True, "speed/updates_per_s",
           "dqn_learner_updates_per_second", help="learner updates per second"),
    Figure("epsilon", "eps {v:.3f}", False, True, "actors/epsilon", "dqn_learner_epsilon",
           help="actors' mean epsilon", live=True),
    Figure("recent_return", "return(20) {v:.1f}", False, True, "episode/return_recent",
           "dqn_learner_episode_return", help="mean return of the last 20 training episodes"),
    Figure("eval_return", "eval {v:.1f}", metric="dqn_learner_eval_return",
           help="mean return of the latest greedy evaluation", live=True),
    Figure("loss", "loss {v:.4f}", False, True, "loss/td", "dqn_learner_loss",
           help="Huber TD loss"),
    Figure("q_mean", None, False, True, "q/mean", "dqn_learner_q_mean",
           help="mean Q(s, a) of a batch"),
    Figure("replay_size", "replay {v:,}", False, True, "replay/size", "dqn_learner_replay_size",
           help="replay transitions (latest Info)"),
    Figure("policy_lag", "lag {v:.1f}", True, True, "policy/lag", "dqn_learner_policy_lag",
           help="learner version minus the actors' acting version (mean over actors)"),
    Figure("spi_recent", "spi {v:.1f}", True, True, "replay/samples_per_insert_recent",
           "dqn_learner_samples_per_insert_recent",
           help="replay ratio since the previous progress report: sampled / inserted"),
    Figure("budget_spent", "budget {v:.0%}", False, True, metric="dqn_learner_budget_spent",
           help="share of the run's budget spent (the nearest of seconds, env steps, "
           "updates)"),
    Figure("replay_bytes", jsonl=True),
    Figure("samples_per_insert", None, False, True, "replay/samples_per_insert",
           "dqn_learner_samples_per_insert",
           help="replay sampled / inserted over the run (latest Info)"),
    Figure("waiting", "waiting: {v}"),
    Figure("weights_version", metric="dqn_learner_weights_version",
           help="version of the newest published weights", live=True),
    Figure("episodes_total", metric="dqn_learner_episodes_total", kind="counter",
           help="finished training episodes seen", live=True),
    Figure("evaluations_total", metric="dqn_learner_evaluations_total", kind="counter",
           help="greedy evaluations reported", live=True),
    Figure("evaluator_cpu_share", metric="dqn_learner_evaluator_cpu_share",
           help="CPU the evaluator actor used / its wall time (latest report)", live=True),
    Figure("solved", metric="dqn_learner_solved",
           help="1 once a greedy evaluation reached the threshold", live=True),
)  # fmt: skip


def progress_line(figures: dict, elapsed: float) -> str:
    """``[  12.3s] steps 1,234 (  617/s) | updates ...``; unknown figures show '-'."""
    parts: list[str] = []
    for f in FIGURES:
        if f.line is None:
            continue
        value = figures.get(f.key)
        if f.key == "waiting" and not value:
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if f.key in ("replay_size", "policy_lag", "spi_recent"):
                continue  # no replay Info yet
            text = f.line.split("{")[0] + "-"
        else:
            text = f.line.format(v=value)
        if f.joined and parts:
            parts[-1] += " " + text
        else:
            parts.append(text)
    return f"[{elapsed:6.1f}s] " + " | ".join(parts)


class Reporter:
    """Writes a snapshot of :data:`FIGURES` everywhere it goes; serves ``/metrics``."""

    def __init__(self, metrics, live: Callable[[], dict], extra: Callable[[], list[Series]]):
        self.metrics = metrics  # learner.metrics.Metrics: JSONL and TensorBoard
        self._live = live  # the live figures (counters), read at scrape time
        self._extra = extra  # series from outside the table (the weight server's)
        self.latest: dict = {}
        self._counts: tuple[int, int] | None = None  # replay (inserted, sampled) last time

    def _recent_ratio(self, figures: dict) -> float | None:
        """Sampled / inserted since the previous report that saw inserts, or since the
        start (``replay_counts``: the replay server's (inserted, sampled)); None while
        nothing was inserted since."""
        counts = figures.pop("replay_counts", None)
        if counts is None:
            return None
        before = self._counts or (0, 0)
        if counts[0] < before[0] or counts[1] < before[1]:  # a restarted server
            before = (0, 0)
        inserted, sampled = counts[0] - before[0], counts[1] - before[1]
        if inserted <= 0:
            return None  # keep the mark: the next report spans this interval too
        self._counts = counts
        return sampled / inserted

    def report(self, figures: dict, elapsed: float, final: bool = False) -> str:
        figures = {**figures, "spi_recent": self._recent_ratio(dict(figures))}
        figures.pop("replay_counts", None)
        self.latest = dict(figures)
        line = progress_line(figures, elapsed)
        print(line, flush=True)
        known = {k: v for k, v in figures.items() if v is not None}
        step = int(figures["env_steps"])
        record = {f.key: known[f.key] for f in FIGURES if f.jsonl and f.key in known}
        self.metrics.log("progress", step, **record, **({"final": True} if final else {}))
        self.metrics.scalars(step, {f.tb: known[f.key] for f in FIGURES if f.tb and f.key in known})
        return line

    def series(self) -> list[Series]:
        live, latest = self._live(), self.latest
        out = []
        for f in FIGURES:
            if f.metric is None:
                continue
            value = (live if f.live else latest).get(f.key)
            out.append(Series(f.metric, f.kind, f.help, math.nan if value is None else value))
        return [*out, *self._extra()]
