"""What learning from pixels costs: env steps/s with rendering and the conv update rate.

    .venv/bin/python bench/pixels.py [--seconds 5] [--envs 8] [--batch 32] [--threads 1]

Prints steps/s of CartPole-v1's own ``rgb_array`` render, of one PixelCartPole-v1 env
(render + crop + downscale + stack) and of a SyncVectorEnv of ``--envs`` of them with
random actions, then Double-DQN updates/s of the conv Q-network of
``deploy/configs/pixel_cartpole.toml`` on uint8 batches (CPU).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def rate(fn, seconds: float) -> float:
    fn()  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless, as PixelCartPole sets it
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    from dqn.config import EnvConfig, LearnerConfig, NetworkConfig
    from dqn.envs import make_env, make_vector_env
    from dqn.networks import build_q_network
    from dqn.pixels import ENV_ID
    from learner.q_learning import DQNUpdate

    rng = np.random.default_rng(0)
    plain = CartPoleEnv(render_mode="rgb_array")
    plain.reset(seed=0)
    frames = rate(lambda: plain.render() is not None, args.seconds)
    print(f"CartPole-v1 rgb_array render:     {frames:8.0f} frames/s")

    env = make_env(EnvConfig(id=ENV_ID))
    env.reset(seed=0)

    def one() -> int:
        _, _, term, trunc, _ = env.step(int(rng.integers(2)))
        if term or trunc:
            env.reset()
        return 1

    print(f"{ENV_ID} x1:            {rate(one, args.seconds):8.0f} steps/s")
    vec = make_vector_env(EnvConfig(id=ENV_ID), args.envs, seed=0)
    vec.reset(seed=0)

    def many() -> int:
        vec.step(rng.integers(0, 2, size=args.envs))
        return args.envs

    print(f"{ENV_ID} x{args.envs} (vector): {rate(many, args.seconds):8.0f} steps/s")

    torch.set_num_threads(args.threads)
    shape = env.observation_space.shape
    net_cfg = NetworkConfig(hidden=(128,))
    update = DQNUpdate(
        build_q_network(shape, 2, net_cfg), build_q_network(shape, 2, net_cfg), LearnerConfig()
    )
    b = args.batch
    batch = {
        "obs": torch.randint(0, 256, (b, *shape), dtype=torch.uint8),
        "next_obs": torch.randint(0, 256, (b, *shape), dtype=torch.uint8),
        "action": torch.randint(0, 2, (b,)),
        "reward": torch.ones(b),
        "terminated": torch.zeros(b, dtype=torch.bool),
        "discount": torch.full((b,), 0.99),
    }

    def step() -> int:
        update.step(batch)
        return 1

    updates = rate(step, args.seconds)
    print(f"conv update, batch {b}, {args.threads} thread(s): {updates:8.0f} updates/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
