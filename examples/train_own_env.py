"""Train a DQN on an env of your own, defined right here, from Python.

    python examples/train_own_env.py [--max-seconds 120] [--run-dir runs/lights]

``Lights`` is a made-up task: ``k`` lamps, one of them lit (the observation is the
one-hot vector of which), and the agent scores 1 when it presses the lit one's
switch; an episode is 10 presses. Perfect play returns 10.0; pressing at random
returns 10/k (2.5 for 4 lamps), so the threshold of 9.5 is reached only by a policy
that learned every lamp.

The class lives in this script (``__main__``), as it would in a notebook: ``dqn.train``
ships it by value to every process that builds envs (the Ray actors, the evaluator).
Afterwards the exported policy is loaded back and played here, without the service.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import dqn


class Lights(gym.Env):
    """Press the switch of the lit lamp, 10 times."""

    def __init__(self, lamps: int = 4, presses: int = 10):
        self.lamps, self.presses = lamps, presses
        self.observation_space = spaces.Box(0.0, 1.0, shape=(lamps,), dtype=np.float32)
        self.action_space = spaces.Discrete(lamps)
        self._lit, self._t = 0, 0

    def _obs(self) -> np.ndarray:
        self._lit = int(self.np_random.integers(self.lamps))
        return np.eye(self.lamps, dtype=np.float32)[self._lit]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 if int(action) == self._lit else 0.0
        self._t += 1
        return self._obs(), reward, self._t >= self.presses, False, {}


def play(policy, episodes: int = 20, seed: int = 123) -> float:
    """Mean return of the loaded policy, played greedily here."""
    env, total = Lights(), 0.0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.predict(obs))
            total += reward
            done = terminated or truncated
    return total / episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--run-dir", default="runs/lights")
    parser.add_argument("--num-actors", type=int, default=None)
    args = parser.parse_args()

    def on_evaluation(record) -> None:
        print(f"  evaluation at {record.env_steps:,} env steps: {record.mean:.2f}", flush=True)

    result = dqn.train(
        Lights,
        max_seconds=args.max_seconds,
        run_dir=args.run_dir,
        num_actors=args.num_actors,
        overrides={"env.solve_threshold": 9.5},
        on_evaluation=on_evaluation,
    )
    print(f"{result!r}")
    policy = dqn.load_policy(result.run_dir)
    print(f"played here: {play(policy):.2f} (perfect 10.0, random 2.5)")


if __name__ == "__main__":
    main()
