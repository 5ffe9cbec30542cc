"""The Python API: ``dqn.train(...)`` trains on this machine as ``dqn train`` does.

>>> import dqn
>>> result = dqn.train("CartPole-v1", max_seconds=300)
>>> result.solved, result.seconds_to_solve
>>> result.policy.predict(obs)

It is the same local topology (replay server and learner processes, a private Ray
with the actors and the evaluator), built by :class:`deploy.builder.Builder`, with the
budget counted from the call, every process gone when it returns or raises, callbacks
on the learner's records, and a :class:`Result` instead of an exit code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqn import config as config_mod
from dqn.config import Config, ConfigError

# The CLI's short options, as keyword arguments (``env`` is train's first argument).
SHORT_OPTIONS = {k: v for k, v in config_mod.SHORT_OPTIONS.items() if k != "env"}


class TrainingError(RuntimeError):
    """The run failed (a process died, or no summary was written); see its log."""


@dataclass(frozen=True)
class ProgressReport:
    """One progress record of the learner (what its progress line shows); figures
    not known yet are None."""

    env_steps: int
    seconds: float  # since the start of the run
    updates: int | None = None
    env_steps_per_s: float | None = None
    updates_per_s: float | None = None
    epsilon: float | None = None
    recent_return: float | None = None
    loss: float | None = None
    q_mean: float | None = None
    replay_size: int | None = None
    policy_lag: float | None = None
    spi_recent: float | None = None
    samples_per_insert: float | None = None
    budget_spent: float | None = None  # share of the run's budget spent, 0..1
    final: bool = False


@dataclass(frozen=True)
class Result:
    """What a run left: its summary figures as attributes, its directory, its policy."""

    run_dir: Path
    summary: dict
    exit_code: int

    def __getattr__(self, name: str) -> Any:
        # the summary's fields: solved, seconds_to_solve, env_steps_to_solve, eval_mean...
        summary = self.__dict__.get("summary", {})
        if name in summary:
            return summary[name]
        raise AttributeError(
            f"Result has no {name!r} (summary fields: {', '.join(sorted(summary))})"
        )

    def __dir__(self):
        return sorted({*super().__dir__(), *self.summary})

    @property
    def policy_path(self) -> Path | None:
        """The exported policy: the solving version if it solved, else the last."""
        path = self.run_dir / "policy.safetensors"
        return path if path.exists() else None

    @functools.cached_property
    def policy(self):
        """The exported policy, loaded once: ``predict(obs)`` and ``q_values(obs)``."""
        from dqn.policy_file import load_policy

        return load_policy(self.run_dir)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"Result(solved={s.get('solved')}, seconds_to_solve={s.get('seconds_to_solve')}, "
            f"env_steps_to_solve={s.get('env_steps_to_solve')}, eval_mean={s.get('eval_mean')}, "
            f"stop_reason={s.get('stop_reason')!r}, run_dir={str(self.run_dir)!r})"
        )


def _dotted(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, dot, name = str(key).partition(".")
        if not dot or not section or not name:
            raise ConfigError(f"overrides: {key!r} is not a dotted 'section.field' key")
        out.setdefault(section, {})[name.replace("-", "_")] = value
    return out


def _config_layer(config: Config | Mapping | str | os.PathLike | None) -> dict:
    if config is None:
        return {}
    if isinstance(config, Config):
        return config.to_dict()
    if isinstance(config, Mapping):
        return {section: dict(fields) for section, fields in config.items()}
    return config_mod.read_file(config)


def _env_layer(env: Any) -> dict[str, Any]:
    """``env``: an id or import path (a string), or a callable returning an Env."""
    if env is None:
        return {}
    if isinstance(env, str):
        return {"id": env, "factory": ""}
    if callable(env):
        from dqn.envs import dump_factory, factory_name

        return {"id": factory_name(env), "factory": dump_factory(env)}
    raise ConfigError(
        f"env: expected an id, an import path or a callable returning a gymnasium Env, "
        f"got {type(env).__name__}"
    )


def make_config(
    env: Any = None,
    *,
    config: Config | Mapping | str | os.PathLike | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    **short_options: Any,
) -> Config:
    """The Config ``train`` runs: defaults < preset < ``config`` < the environment's
    DQN_SECTION__FIELD < ``env`` and the short options < ``overrides``."""
    from dqn import presets

    unknown = sorted(set(short_options) - set(SHORT_OPTIONS))
    if unknown:
        raise TypeError(
            f"train() got unknown option(s) {', '.join(unknown)}; the short options are "
            f"{', '.join(SHORT_OPTIONS)} (anything else: overrides={{'section.field': value}})"
        )
    short: dict[str, dict[str, Any]] = {"env": _env_layer(env)}
    for key, value in short_options.items():
        if value is not None:
            section, name = SHORT_OPTIONS[key]
            short.setdefault(section, {})[name] = value
    layers = [
        presets.values(preset),
        _config_layer(config),
        config_mod.from_environ(os.environ),
        short,
        _dotted(overrides or {}),
    ]
    return config_mod.build(config_mod.merge(*layers))


def _record_handler(
    on_evaluation: Callable | None, on_progress: Callable | None, start: float
) -> Callable[[dict], bool]:
    from learner.records import EvalRecord

    evaluation_fields = {f.name for f in dataclasses.fields(EvalRecord)}
    progress_fields = {f.name for f in dataclasses.fields(ProgressReport)}

    def handle(record: dict) -> bool:
        kind = record.get("kind")
        if kind == "eval" and on_evaluation is not None:
            data = {k: v for k, v in record.items() if k in evaluation_fields}
            return bool(on_evaluation(EvalRecord(env_steps=record["step"], **data)))
        if kind == "progress" and on_progress is not None:
            data = {k: v for k, v in record.items() if k in progress_fields}
            data = {
                k: None if isinstance(v, float) and math.isnan(v) else v for k, v in data.items()
            }
            seconds = record.get("time", start) - start
            return bool(
                on_progress(ProgressReport(env_steps=record["step"], seconds=seconds, **data))
            )
        return False

    return handle


def train(
    env: Any = None,
    *,
    seed: int | None = None,
    run_dir: str | os.PathLike | None = None,
    max_seconds: float | None = None,
    max_env_steps: int | None = None,
    max_updates: int | None = None,
    num_actors: int | None = None,
    device: str | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    config: Config | Mapping | str | os.PathLike | None = None,
    on_evaluation: Callable[[Any], bool | None] | None = None,
    on_progress: Callable[[ProgressReport], bool | None] | None = None,
    resume: bool = False,
    log_level: str = "WARNING",
) -> Result:
    """Train a DQN on this machine and return the run's :class:`Result`.

    ``env``: a registered id (``"CartPole-v1"``), an import path (``"mymod:make_env"``)
    or a callable/class returning a gymnasium Env — one defined in a notebook or your
    script reaches every process that builds envs (it travels by value). The short
    options are the CLI's; any other setting goes in ``overrides`` with dotted keys
    (``{"learner.lr": 1e-3}``) or in ``config`` (a Config, a ``{section: {field:
    value}}`` dict, or a TOML/JSON file). The budget (``max_seconds``) counts from this
    call. ``on_evaluation(record)`` gets each greedy evaluation (a
    ``learner.records.EvalRecord``) and ``on_progress(report)`` each progress record (a
    :class:`ProgressReport`); either returning True stops training (the learner still
    writes its outputs). Ctrl-C or an exception from a callback stops every process
    before it propagates. Raises ConfigError (a ValueError naming the setting) for bad
    settings, before anything starts, and TrainingError when the run ends without a
    summary (a process failed at start-up or died); a run that wrote one returns its
    Result, whose ``exit_code`` says how it ended (0: done, 1: a process failed).
    """
    from deploy.local import train as run_local

    start = time.time()
    cfg = make_config(
        env,
        config=config,
        preset=preset,
        overrides=overrides,
        seed=seed,
        run_dir=None if run_dir is None else str(run_dir),
        max_seconds=max_seconds,
        max_env_steps=max_env_steps,
        max_updates=max_updates,
        num_actors=num_actors,
        device=device,
    )
    handler = None
    if on_evaluation is not None or on_progress is not None:
        handler = _record_handler(on_evaluation, on_progress, start)
    code = run_local(
        cfg,
        resume=resume,
        log_level=log_level,
        start_time=start,
        on_record=handler,
        raise_interrupt=True,
    )
    directory = Path(cfg.run.dir).resolve()
    summary_path = directory / "summary.json"
    if not summary_path.exists():
        raise TrainingError(f"the run in {directory} ended (exit {code}) without a summary.json")
    import json

    return Result(directory, json.loads(summary_path.read_text()), code)
