"""``dqn evaluate RUN_DIR``: run the exported TorchScript policy greedily."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dqn.envs import make_vector_env


def evaluate_run(
    run_dir: str, episodes: int = 20, seed: int = 12345, env_id: str | None = None
) -> dict:
    run = Path(run_dir)
    policy_path = run / "policy.pt"
    if not policy_path.exists():
        raise FileNotFoundError(f"{policy_path} not found (has the run finished?)")
    if env_id is None:
        env_id = json.loads((run / "config.json").read_text())["env"]["id"]
    policy = torch.jit.load(str(policy_path), map_location="cpu").eval()
    env = make_vector_env(env_id, episodes, seed=seed)
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
