"""``dqn evaluate RUN_DIR``: run the exported TorchScript policy greedily."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from dqn import config as config_mod
from dqn.config import EnvConfig
from dqn.envs import make_vector_env


def run_env(run_dir: str | os.PathLike, env_id: str | None = None) -> EnvConfig:
    """The env section of RUN_DIR/config.json (id, kwargs, wrappers); ``env_id``
    replaces only the id (and drops the spec fields, which were the old env's)."""
    section = json.loads((Path(run_dir) / "config.json").read_text()).get("env", {})
    env = config_mod.build({"env": section}).env
    if env_id is not None and env_id != env.id:
        env = dataclasses.replace(
            env, id=env_id, obs_shape=None, obs_dtype=None, n_actions=None, solve_threshold=None
        )
    return env


def evaluate_run(
    run_dir: str, episodes: int = 20, seed: int = 12345, env_id: str | None = None
) -> dict:
    """Mean, std and returns of ``episodes`` greedy episodes of RUN_DIR/policy.pt on the
    run's env (its id, kwargs and wrappers; ``env_id`` replaces the id)."""
    run = Path(run_dir)
    policy_path = run / "policy.pt"
    if not policy_path.exists():
        raise FileNotFoundError(f"{policy_path} not found (has the run finished?)")
    env_config = run_env(run, env_id)
    env_id = env_config.id
    policy = torch.jit.load(str(policy_path), map_location="cpu").eval()
    env = make_vector_env(env_config, episodes, seed=seed)
    obs, _ = env.reset(seed=seed)
    returns = np.zeros(episodes)
    done = np.zeros(episodes, dtype=bool)
    with torch.inference_mode():
        while not done.all():
            actions = policy(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=1).numpy()
            obs, reward, terminated, truncated, _ = env.step(actions)
            returns += np.where(done, 0.0, reward)
            done |= terminated | truncated
    env.close()
    return {
        "env_id": env_id,
        "episodes": episodes,
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "returns": returns.tolist(),
    }
