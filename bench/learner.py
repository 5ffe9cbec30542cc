"""Learner updates/s: CPU and CUDA, eager and as a captured CUDA graph, on random data
resident on the device and on batches from a live replay server over gRPC.

    .venv/bin/python bench/learner.py [--seconds 3] [--repeats 3] [--batch-sizes 128 256 1024]
        [--batches-per-call 16] [--quick]

The update is the learner's own (:class:`learner.q_learning.DQNUpdate`, default network and
hyperparameters); the graph mode is :class:`learner.cuda_graph.CapturedUpdate`.
"random" feeds a pool of batches already on the device; "live" starts ``dqn
replay-server``, fills it with 100k CartPole-shaped transitions and feeds the learner
through its :class:`learner.sampler.PrefetchingSampler` (several batches per RPC,
pinned host buffers and non-blocking copies on CUDA). Modes are interleaved
``--repeats`` times; the table gives medians. Without CUDA the CUDA rows are skipped
with a note. Writes bench/results/learner.json. Target (GPU): live graph >= 0.6 x random
graph at the same batch size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    N_ACTIONS,
    OBS_SHAPE,
    ReplayServerProcess,
    median,
    print_table,
    random_columns,
    ratio,
    write_json,
)

TARGET = 0.6  # live graph / random graph
POOL = 32  # random batches cycled through


def _learner(device, batch_size: int, graph: bool):
    import torch

    from dqn.config import LearnerConfig, NetworkConfig
    from dqn.networks import build_q_network
    from learner.cuda_graph import CapturedUpdate
    from learner.q_learning import DQNUpdate

    torch.manual_seed(0)
    cfg, net_cfg = LearnerConfig(batch_size=batch_size), NetworkConfig()
    online = build_q_network(OBS_SHAPE, N_ACTIONS, net_cfg).to(device)
    target = build_q_network(OBS_SHAPE, N_ACTIONS, net_cfg).to(device)
    update = DQNUpdate(online, target, cfg)
    return CapturedUpdate(update, batch_size) if graph else update


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(update, next_batch, device, seconds: float, warmup: int = 20) -> float:
    """Updates/s over ``seconds`` after ``warmup`` updates (capture included there)."""
    for _ in range(warmup):
        update.step(next_batch())
    _sync(device)
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(10):
            stats = update.step(next_batch())
        n += 10
        if time.perf_counter() >= end:
            break
    stats["loss"].item()  # the last update has finished
    _sync(device)
    return n / (time.perf_counter() - t0)


def random_rate(device, batch_size: int, graph: bool, seconds: float) -> float:
    import torch

    rng = np.random.default_rng(0)
    pool = []
    for _ in range(POOL):
        cols = random_columns(batch_size, rng)
        pool.append({k: torch.from_numpy(np.array(v)).to(device) for k, v in cols.items()})
    update = _learner(device, batch_size, graph)
    i = 0

    def next_batch():
        nonlocal i
        i += 1
        return pool[i % POOL]

    return _timed(update, next_batch, device, seconds)


def live_rate(device, batch_size: int, graph: bool, seconds: float, address: str, args) -> float:
    from learner.sampler import PrefetchingSampler

    update = _learner(device, batch_size, graph)
    sampler = PrefetchingSampler(
        address, batch_size, args.batches_per_call, args.prefetch_calls, device
    )
    try:

        def next_batch():
            batch = sampler.next(timeout=30.0)
            if batch is None:
                raise TimeoutError("no batch from the replay server in 30 s")
            return batch

        return _timed(update, next_batch, device, seconds)
    finally:
        sampler.close()


def _fill(address: str, n: int) -> None:
    from dqn import codec, rpc
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    rng = np.random.default_rng(1)
    with rpc.channel(address) as channel:
        stub = pb_grpc.ReplayServiceStub(channel)
        for seq in range(1, n // 2048 + 2):
            batch = pb.TransitionBatch(actor_id=1, incarnation=1, sequence=seq)
            for name, array in random_columns(2048, rng).items():
                codec.encode(array, getattr(batch, name))
            stub.Push(iter([pb.PushRequest(batch=batch)]), timeout=30)


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if cuda else [])
    if not cuda:
        print("note: CUDA not available: CUDA eager / CUDA graph rows skipped", flush=True)
    modes = []
    for dev in devices:
        for graph in (False, True) if dev.type == "cuda" else (False,):
            for source in ("random", "live"):
                modes.append((dev, graph, source))
    rates: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-learner-") as tmp:
        server = ReplayServerProcess(
            Path(tmp),
            "--replay.capacity",
            "100000",
            "--replay.min-size",
            "1000",
            "--replay.max-batch-transitions",
            "4096",
        )
        try:
            _fill(server.address, 100_000)
            for _ in range(args.repeats):
                for b in args.batch_sizes:
                    for dev, graph, source in modes:
                        if source == "random":
                            r = random_rate(dev, b, graph, args.seconds)
                        else:
                            r = live_rate(dev, b, graph, args.seconds, server.address, args)
                        rates.setdefault((dev.type, graph, source, b), []).append(r)
        finally:
            server.stop()
    rows = []
    for (dev, graph, source, b), got in rates.items():
        rows.append(
            {
                "device": dev,
                "mode": "graph" if graph else "eager",
                "source": source,
                "batch_size": b,
                "updates_per_s_median": median(got),
                "updates_per_s": got,
                "transitions_per_s_median": median(got) * b,
            }
        )
    rows.sort(key=lambda r: (r["device"], r["batch_size"], r["mode"], r["source"]))
    result = {
        "seconds": args.seconds,
        "repeats": args.repeats,
        "threads": args.threads,
        "batches_per_call": args.batches_per_call,
        "prefetch_calls": args.prefetch_calls,
        "cuda": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "rows": rows,
    }
    if cuda:
        got = {(r["mode"], r["source"], r["batch_size"]): r for r in rows if r["device"] == "cuda"}
        result["targets"] = [
            {
                "batch_size": b,
                "live_graph_over_random_graph": ratio(
                    got[("graph", "live", b)]["updates_per_s_median"],
                    got[("graph", "random", b)]["updates_per_s_median"],
                ),
                "eager_random_over_graph_random": ratio(
                    got[("eager", "random", b)]["updates_per_s_median"],
                    got[("graph", "random", b)]["updates_per_s_median"],
                ),
                "min": TARGET,
            }
            for b in args.batch_sizes
        ]
        for t in result["targets"]:
            t["met"] = t["live_graph_over_random_graph"] >= TARGET
    return result


def report(result: dict) -> None:
    base = {
        (r["device"], r["mode"], r["batch_size"]): r["updates_per_s_median"]
        for r in result["rows"]
        if r["source"] == "random"
    }
    print_table(
        f"Learner updates/s (median of {result['repeats']} x {result['seconds']:g} s; "
        f"live: {result['batches_per_call']} batches per Sample call; "
        f"{result['threads']} CPU thread(s); {result['device_name']})",
        ["device", "mode", "batch", "source", "updates/s", "transitions/s", "vs random"],
        [
            [
                r["device"],
                r["mode"],
                r["batch_size"],
                r["source"],
                r["updates_per_s_median"],
                r["transitions_per_s_median"],
                ratio(r["updates_per_s_median"], base[(r["device"], r["mode"], r["batch_size"])]),
            ]
            for r in result["rows"]
        ],
    )
    if not result["cuda"]:
        print("CUDA rows: skipped (no CUDA device here); the target needs a GPU")
    for t in result.get("targets", []):
        print(
            f"target batch {t['batch_size']}: live graph / random graph = "
            f"{t['live_graph_over_random_graph']:.2f} (>= {t['min']:g}: "
            f"{'met' if t['met'] else 'MISSED'}); eager / graph on random data = "
            f"{t['eager_random_over_graph_random']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 1024])
    parser.add_argument("--batches-per-call", type=int, default=16, help="live: per Sample RPC")
    parser.add_argument("--prefetch-calls", type=int, default=2, help="live: responses ahead")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a few seconds: smoke test")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.batch_sizes = 0.3, 1, [128]
    result = run(args)
    report(result)
    write_json("learner", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
