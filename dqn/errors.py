"""The error a bad setting raises, in a module of its own so that every module that
validates settings (``dqn.config``, ``dqn.presets``, ``dqn.envs``, ...) can import it
without importing the others: ``dqn.config`` imports ``dqn.presets`` to apply a
``--preset``, and ``dqn.presets`` needs the error type but not the loader
(``docs/decisions.md``, "config imports presets, not the other way")."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with the field's dotted name
    (``learner.lr: must be > 0, got -1.0``), which entry points may replace by the flag
    or environment variable that set it."""
