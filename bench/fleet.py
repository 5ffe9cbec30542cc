"""Actor fleet throughput against the actor count, Ray actors and plain processes.

    .venv/bin/python bench/fleet.py [--counts 1 2 4 8] [--runners ray process]
        [--seconds 5] [--quick] [-- extra dqn flags, e.g. --actors.envs-per-actor 16]

Starts ``dqn replay-server`` (a real one, defaults) and a weight service in this
process that publishes the initial weights once, as the learner does (no learner
runs, so no update competes for the CPU). Then, per runner, grows the fleet through
the counts (1 -> 2 -> 4 -> 8 actors, the running ones kept) and, once the new actors
push, reads the replay server's Info twice ``--seconds`` apart: fleet env steps/s
(the actors' own counts) and transitions/s ingested by the server. Writes
bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ReplayServerProcess, print_table, write_json  # noqa: E402


class _Info:
    def __init__(self, address: str):
        from dqn import rpc
        from dqn.v1 import replay_pb2_grpc as pb_grpc

        self.channel = rpc.channel(address)
        self.stub = pb_grpc.ReplayServiceStub(self.channel)

    def __call__(self):
        from dqn.v1 import replay_pb2 as pb

        r = self.stub.Info(pb.InfoRequest(episodes_after=2**62), timeout=5)
        sequences = {(a.actor_id, a.env_steps): a.last_sequence for a in r.actors}
        return time.monotonic(), r.env_steps, r.inserted, sequences

    def close(self) -> None:
        self.channel.close()


class ProcessFleet:
    """Plain spawned processes running ``run_actor_process`` (``--actors.runner process``)."""

    def __init__(self, config, replay_address: str, weights_address: str):
        self.config, self.replay, self.weights = config, replay_address, weights_address
        self.ctx = mp.get_context("spawn")
        self.procs: list = []

    def resize(self, n: int) -> None:
        from actors.actor import run_actor_process

        while len(self.procs) < n:
            p = self.ctx.Process(
                target=run_actor_process,
                args=(self.config, len(self.procs), self.replay, self.weights),
                daemon=True,
            )
            p.start()
            self.procs.append(p)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()  # SIGTERM: the actor flushes and exits
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        self.procs = []


def measure(info: _Info, n: int, seconds: float, timeout: float = 120.0) -> dict:
    """Wait until ``n`` actors push (an actor's Info entry changes), let them run a
    second, then measure."""
    before = {actor for actor, _ in info()[3]}
    deadline = time.monotonic() + timeout
    while True:
        a0 = info()[3]
        time.sleep(0.3)
        a1 = info()[3]
        moving = {aid for (aid, steps), seq in a1.items() if (aid, steps) not in a0}
        if len(moving) >= n:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} actors pushing after {timeout:.0f}s ({before})")
    time.sleep(1.0)
    t0, steps0, ins0, _ = info()
    time.sleep(seconds)
    t1, steps1, ins1, _ = info()
    dt = t1 - t0
    return {
        "actors": n,
        "env_steps_per_s": (steps1 - steps0) / dt,
        "transitions_per_s": (ins1 - ins0) / dt,
        "seconds": dt,
    }


def run(args) -> dict:

    from dqn import config as config_mod
    from dqn.cli import build_parser, load_config
    from dqn.envs import env_spec
    from dqn.networks import build_q_network
    from learner.weight_service import WeightServer

    parsed = build_parser().parse_args(
        ["actors", "--replay-address", "-", "--weights-address", "-", *args.extra]
    )
    base = load_config(parsed)
    obs_shape, n_actions, _ = env_spec(base.env.id)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        server = ReplayServerProcess(Path(tmp), *args.extra)
        weights = WeightServer("127.0.0.1", 0)
        weights.start()
        net = build_q_network(obs_shape, n_actions, base.network)
        weights.publisher.publish(net.state_dict(), 0, 0)
        info = _Info(server.address)
        try:
            for runner in args.runners:
                cfg = config_mod.build(
                    {
                        **base.to_dict(),
                        "actors": {**base.to_dict()["actors"], "num_actors": max(args.counts)},
                    }
                )
                if runner == "ray":
                    from actors.fleet import RayFleet, init_ray, shutdown_ray

                    need = max(args.counts) * cfg.actors.cpus_per_actor
                    init_ray("local", num_cpus=max(os.cpu_count() or 1, math.ceil(need)))
                    fleet = RayFleet(cfg, server.address, weights.address)
                else:
                    fleet = ProcessFleet(cfg, server.address, weights.address)
                try:
                    for n in args.counts:
                        fleet.resize(n)
                        row = {"runner": runner, **measure(info, n, args.seconds)}
                        rows.append(row)
                        print(
                            f"{runner} {n} actors: {row['env_steps_per_s']:,.0f} env steps/s, "
                            f"{row['transitions_per_s']:,.0f} transitions/s ingested",
                            flush=True,
                        )
                finally:
                    fleet.stop()
                    if runner == "ray":
                        shutdown_ray()
        finally:
            info.close()
            weights.stop()
            server.stop()
    return {
        "env": base.env.id,
        "envs_per_actor": base.actors.envs_per_actor,
        "push_every": base.actors.push_every,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "rows": rows,
    }


def report(result: dict) -> None:
    base = {r["runner"]: r["env_steps_per_s"] for r in result["rows"] if r["actors"] == 1}
    print_table(
        f"Fleet on {result['env']}: {result['envs_per_actor']} envs per actor, "
        f"{result['push_every']} transitions per push, {result['cpus']} CPUs, "
        f"{result['seconds']:g} s per point",
        ["runner", "actors", "env steps/s", "transitions/s", "vs 1 actor"],
        [
            [
                r["runner"],
                r["actors"],
                r["env_steps_per_s"],
                r["transitions_per_s"],
                r["env_steps_per_s"] / base[r["runner"]] if base.get(r["runner"]) else None,
            ]
            for r in result["rows"]
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--runners", nargs="+", default=["ray", "process"], choices=["ray", "process"]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement per point")
    parser.add_argument("--quick", action="store_true", help="a few seconds: smoke test")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("extra", nargs="*", help="more dqn flags (after --)")
    args = parser.parse_args(argv)
    if args.quick:
        args.counts, args.runners, args.seconds = [1, 2], ["process"], 1.0
    result = run(args)
    report(result)
    write_json("fleet", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
