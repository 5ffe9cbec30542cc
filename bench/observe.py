"""What watching costs: a learning-curve redraw, and a /metrics scrape of a busy replay server.

    .venv/bin/python bench/observe.py [--episodes 100000] [--scrapes 200]

Prints the wall and CPU seconds one ``plot_curve`` takes for ``--episodes`` episode returns and 50
evaluations (the learner redraws every ``run.plot_every_seconds`` in a background
thread), and p50/p99 milliseconds of ``GET /metrics`` on an in-process replay server
holding 100,000 CartPole-shaped transitions from 16 actors.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def bench_plot(episodes: int, repeats: int = 3) -> tuple[float, float]:
    """Best wall and CPU seconds of one redraw (after a first, warming one)."""
    from learner.metrics import plot_curve

    rng = np.random.default_rng(0)
    data = [(i * 10, float(r)) for i, r in enumerate(rng.uniform(0, 500, episodes))]
    evals = [(i * 1000, 300.0, 50.0) for i in range(50)]
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        plot_curve(Path(tmp) / "curve.png", data, evals, "bench", 475.0)  # fonts, caches
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            plot_curve(Path(tmp) / "curve.png", data, evals, "bench", 475.0)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def bench_scrape(scrapes: int) -> tuple[float, float]:
    from dqn import codec, rpc
    from dqn.config import build
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc
    from replay_server.server import ReplayServer

    server = ReplayServer(
        build({"replay": {"capacity": 100_000, "samples_per_insert": 0}}), (4,), 2
    )
    server.start()
    try:
        with rpc.channel(server.address) as channel:
            stub = pb_grpc.ReplayServiceStub(channel)
            n = 4096
            for actor in range(16):
                for seq in range(1, 3):
                    batch = pb.TransitionBatch(actor_id=actor, sequence=seq, incarnation=1)
                    cols = {
                        "obs": np.zeros((n, 4), np.float32),
                        "action": np.zeros(n, np.int64),
                        "reward": np.ones(n, np.float32),
                        "next_obs": np.zeros((n, 4), np.float32),
                        "terminated": np.zeros(n, bool),
                        "discount": np.full(n, 0.99, np.float32),
                    }
                    for name, array in cols.items():
                        codec.encode(array, getattr(batch, name))
                    stub.Push(iter([pb.PushRequest(batch=batch)]), timeout=30)
        times = []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            with urllib.request.urlopen(server.metrics.url, timeout=5) as reply:
                reply.read()
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        return statistics.median(times), times[int(0.99 * (len(times) - 1))]
    finally:
        server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    wall, cpu = bench_plot(args.episodes)
    print(f"plot_curve, {args.episodes:,} episodes: {wall:.3f} s wall, {cpu:.3f} s CPU (best of 3)")
    p50, p99 = bench_scrape(args.scrapes)
    print(f"replay GET /metrics, {args.scrapes} scrapes: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
