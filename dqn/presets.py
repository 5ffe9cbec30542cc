"""Named configurations (``--preset NAME``) that solve CartPole-v1.

A preset is a layer of field values applied first, under the config file, the
environment and the flags, so any of its values can still be overridden. Each one
lists every value it depends on, so a change of the defaults does not change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dqn.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    help: str
    values: dict[str, dict[str, Any]]


_COMMON_CARTPOLE = {
    "network": {"hidden": (128, 128)},
    "actors": {"num_actors": 2, "envs_per_actor": 8, "epsilon": "linear", "eps_start": 1.0},
    "learner": {"batch_size": 128, "gamma": 0.99, "grad_clip": 10.0, "huber_delta": 1.0},
}


def _layer(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {name: dict(values) for name, values in _COMMON_CARTPOLE.items()}
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


PRESETS: dict[str, Preset] = {
    "fast": Preset(
        "the defaults, tuned for wall-clock time on few cores: Double DQN, 3-step "
        "returns, Polyak target (tau 0.01), lr 2.5e-3, uniform replay, linear eps "
        "1 -> 0.02 over 10k fleet steps",
        _layer(
            network={"dueling": False},
            replay={"prioritized": False, "capacity": 100_000, "min_size": 1_000},
            actors={"eps_end": 0.02, "eps_decay_steps": 10_000},
            learner={
                "lr": 2.5e-3,
                "n_step": 3,
                "double_dqn": True,
                "target_update": "polyak",
                "tau": 0.01,
            },
        ),
    ),
    "classic": Preset(
        "Nature-DQN style: 1-step targets with max over the target net (no Double "
        "DQN), hard target copy every 250 updates, lr 1e-3, uniform replay, linear "
        "eps 1 -> 0.05 over 20k fleet steps",
        _layer(
            network={"dueling": False},
            replay={"prioritized": False, "capacity": 100_000, "min_size": 1_000},
            actors={"eps_end": 0.05, "eps_decay_steps": 20_000},
            learner={
                "lr": 1e-3,
                "n_step": 1,
                "double_dqn": False,
                "target_update": "hard",
                "target_period": 250,
            },
        ),
    ),
    "rainbow-lite": Preset(
        "dueling head + 3-step returns + prioritized replay (alpha 0.6, beta 0.4 -> 1, "
        "actor-computed initial priorities) + Double DQN + Polyak target (tau 0.01)",
        _layer(
            network={"dueling": True},
            replay={
                "prioritized": True,
                "priority_alpha": 0.6,
                "capacity": 100_000,
                "min_size": 1_000,
            },
            actors={"eps_end": 0.02, "eps_decay_steps": 10_000, "initial_priorities": True},
            learner={
                "lr": 2.5e-3,
                "n_step": 3,
                "double_dqn": True,
                "target_update": "polyak",
                "tau": 0.01,
                "priority_beta0": 0.4,
                "priority_beta_steps": 10_000,
            },
        ),
    ),
}


def values(name: str | None) -> dict[str, dict[str, Any]]:
    """The field values of preset ``name`` (``{}`` for None); ConfigError if unknown."""
    if name is None:
        return {}
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return {section: dict(v) for section, v in PRESETS[name].values.items()}


def describe(width: int = 78) -> str:
    """The presets and what each one is, for ``--help``."""
    import textwrap

    lines = ["presets (--preset NAME):"]
    for name, p in PRESETS.items():
        lines += textwrap.wrap(
            p.help, width, initial_indent=f"  {name:<13} ", subsequent_indent=" " * 16
        )
    return "\n".join(lines)
