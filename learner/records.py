"""Typed records the learner keeps: evaluations (reported by the evaluator actor) and
the run's progress (counters, history; what its checkpoint holds)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from learner.metrics import thin_history


@dataclass(frozen=True)
class EvalRecord:
    """One greedy evaluation of one weights version."""

    version: int  # the weights version played
    updates: int  # learner updates at that version
    env_steps: int  # fleet env steps at that version
    seconds: float  # when the report arrived, seconds from the run's start
    mean: float
    std: float
    episodes: int
    wall_seconds: float = 0.0  # how long the evaluator played
    evaluator: str = ""

    @classmethod
    def restore(cls, data: Any) -> EvalRecord:
        """From a checkpoint: a dict, or the (env_steps, updates, seconds, mean, std)
        tuple older checkpoints hold."""
        if isinstance(data, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        env_steps, updates, seconds, mean, std = data
        return cls(0, int(updates), int(env_steps), float(seconds), mean, std, 0)


@dataclass
class Progress:
    """Counters and history the learner keeps (and checkpoints)."""

    updates: int = 0
    env_steps: int = 0
    episodes_cursor: int = 0
    evals: list[EvalRecord] = field(default_factory=list)  # thinned to EVALS_KEPT
    evaluations: int = 0  # evaluations reported (evals keeps a thinned history)
    solved_at: EvalRecord | None = None
    epsilon: float = 1.0

    def add_eval(self, record: EvalRecord) -> None:
        self.evals.append(record)
        self.evaluations += 1
        thin_history(self.evals, self.evaluations)

    @property
    def last_eval(self) -> EvalRecord | None:
        return self.evals[-1] if self.evals else None

    def to_state(self) -> dict:
        state = dataclasses.asdict(self)
        return state

    @classmethod
    def restore(cls, state: dict) -> Progress:
        state = dict(state)
        evals = [EvalRecord.restore(e) for e in state.pop("evals", [])]
        solved = state.pop("solved_at", None)
        if isinstance(solved, dict) and "seconds" in solved and "version" not in solved:
            # older checkpoints: {"seconds", "env_steps", "updates", "mean", "std"}
            solved = EvalRecord(
                0, solved["updates"], solved["env_steps"], solved["seconds"],
                solved["mean"], solved["std"], 0,
            )  # fmt: skip
        elif solved is not None:
            solved = EvalRecord.restore(solved)
        known = {f.name for f in dataclasses.fields(cls)}
        progress = cls(**{k: v for k, v in state.items() if k in known})
        progress.evals, progress.solved_at = evals, solved
        # a checkpoint from before the history was thinned has no count
        progress.evaluations = max(progress.evaluations, len(evals))
        return progress
