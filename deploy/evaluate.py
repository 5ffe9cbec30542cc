"""``dqn evaluate RUN_DIR``: play the run's ``policy.safetensors`` greedily."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from actors.evaluator import play_greedy
from dqn import config as config_mod
from dqn.config import EnvConfig
from dqn.envs import make_vector_env
from dqn.policy_file import load_policy, policy_path


def run_env(run_dir: str | os.PathLike, env_id: str | None = None) -> EnvConfig:
    """The env section of RUN_DIR/config.json (id, kwargs, wrappers); ``env_id``
    replaces the id (and drops the spec fields and a dqn.train run's env factory,
    which were the old env's)."""
    section = json.loads((Path(run_dir) / "config.json").read_text()).get("env", {})
    env = config_mod.build({"env": section}).env
    if env_id is not None and env_id != env.id:
        env = dataclasses.replace(
            env,
            id=env_id,
            factory="",  # the run's own env, replaced
            obs_shape=None,
            obs_dtype=None,
            n_actions=None,
            solve_threshold=None,
        )
    return env


def evaluate_run(
    run_dir: str, episodes: int = 20, seed: int = 12345, env_id: str | None = None
) -> dict:
    """Mean, std and returns of ``episodes`` greedy episodes of RUN_DIR/policy.safetensors
    on the run's env (its id, kwargs and wrappers; ``env_id`` replaces the id)."""
    run = Path(run_dir)
    policy = load_policy(policy_path(run))
    env_config = run_env(run, env_id)
    env = make_vector_env(env_config, episodes, seed=seed)
    try:
        returns = play_greedy(env, policy.q_values, seed)
    finally:
        env.close()
    return {
        "env_id": env_config.id,
        "episodes": episodes,
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "returns": returns.tolist(),
    }
