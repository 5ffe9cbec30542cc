"""The learner's periodic work and budgets, kept apart from its update step.

:meth:`Schedule.due` names the periodic tasks due now (replay poll, progress report,
curve refresh, checkpoint); :meth:`Schedule.stop_reason` says which budget, if any,
is spent (seconds from the run's start, fleet env steps, updates) and
:meth:`Schedule.budget_spent` how much of it;
:meth:`Schedule.throttle` holds the update rate under ``learner.max_updates_per_sec``.
"""

from __future__ import annotations

import time

from dqn.config import Config

INFO_EVERY_S = 0.5  # replay Info polls (env steps, episodes, actors' epsilon)


class Schedule:
    def __init__(self, config: Config, start_time: float, updates: int = 0):
        run = config.run
        self.run = run
        self.start_time = start_time
        self.max_updates_per_sec = config.learner.max_updates_per_sec
        self.every = {
            "info": INFO_EVERY_S,
            "progress": run.progress_every_seconds,
            "plot": run.plot_every_seconds,
            "checkpoint": run.checkpoint_every_seconds,
        }
        now = time.monotonic()
        self._last = dict.fromkeys(self.every, now)
        self._rate_mark = (now, updates)

    def due(self, now: float | None = None) -> list[str]:
        """The periodic tasks due at ``now``, marked done (in ``every``'s order)."""
        now = time.monotonic() if now is None else now
        out = [name for name, s in self.every.items() if now - self._last[name] >= s]
        for name in out:
            self._last[name] = now
        return out

    def elapsed(self) -> float:
        return time.time() - self.start_time

    def stop_reason(self, env_steps: int, updates: int) -> str | None:
        """The budget spent (``max_seconds``, ``max_env_steps``, ``max_updates``) or None."""
        if self.elapsed() >= self.run.max_seconds:
            return "max_seconds"
        if env_steps >= self.run.max_env_steps:
            return "max_env_steps"
        if updates >= self.run.max_updates:
            return "max_updates"
        return None

    def budget_spent(self, env_steps: int, updates: int) -> float:
        """The share of the run's budget spent: the largest of the three shares (time,
        env steps, updates), since whichever runs out first ends the run."""
        run = self.run
        return min(
            1.0,
            max(
                self.elapsed() / run.max_seconds,
                env_steps / run.max_env_steps,
                updates / run.max_updates,
            ),
        )

    def rate_mark(self, updates: int) -> None:
        """Start a new interval for :meth:`throttle` (each progress report does)."""
        self._rate_mark = (time.monotonic(), updates)

    def throttle(self, updates: int) -> None:
        """Sleep while ``updates`` is ahead of ``max_updates_per_sec`` (0 = no cap)."""
        if self.max_updates_per_sec <= 0:
            return
        t0, u0 = self._rate_mark
        ahead = (updates - u0) / self.max_updates_per_sec - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
