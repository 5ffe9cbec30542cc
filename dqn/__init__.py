"""Distributed DQN: Ray actors, a gRPC replay server and a learner.

The Python API, for notebooks and scripts::

    import dqn
    result = dqn.train("CartPole-v1", max_seconds=300)
    result.policy.predict(obs)
    policy = dqn.load_policy("runs/latest")

This package is also the shared core of the parts (``actors``, ``replay_server``,
``learner``): configuration, the Q-network, the tensor<->proto codec, the env factory,
gRPC helpers and the generated stubs (``dqn.v1``). The core imports none of the parts;
``train`` and ``Result`` come from the composition root (``deploy.api``) and are
imported on first use only, so ``import dqn`` (and every part that imports the core)
stays as light as before (``docs/decisions.md`` §30).
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("distributed-dqn")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.1.0"

# name -> module it lives in; imported when first asked for
_LAZY = {
    "train": "deploy.api",
    "make_config": "deploy.api",
    "Result": "deploy.api",
    "ProgressReport": "deploy.api",
    "TrainingError": "deploy.api",
    "load_policy": "dqn.policy_file",
    "ConfigError": "dqn.config",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dqn' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
