"""Greedy evaluation on envs separate from the actors'."""

from __future__ import annotations

import numpy as np
import torch

from dqn.envs import make_vector_env


class Evaluator:
    """Runs ``episodes`` greedy episodes at once, one per env of a vector env."""

    def __init__(self, env_id: str, episodes: int, seed: int):
        self.env = make_vector_env(env_id, episodes, seed=seed)
        self.episodes = episodes
        self.seed = seed
        self.calls = 0

    @torch.inference_mode()
    def run(self, net: torch.nn.Module, device: torch.device) -> np.ndarray:
        """Returns of ``episodes`` greedy episodes, ``[episodes]``."""
        self.calls += 1
        obs, _ = self.env.reset(seed=self.seed + 10_007 * self.calls)
        returns = np.zeros(self.episodes, dtype=np.float64)
        done = np.zeros(self.episodes, dtype=bool)
        was_training = net.training
        net.eval()
        while not done.all():
            q = net(torch.as_tensor(obs, dtype=torch.float32, device=device))
            actions = q.argmax(dim=1).cpu().numpy()
            obs, reward, terminated, truncated, _ = self.env.step(actions)
            returns += np.where(done, 0.0, reward)
            done |= terminated | truncated
        net.train(was_training)
        return returns

    def close(self) -> None:
        self.env.close()
