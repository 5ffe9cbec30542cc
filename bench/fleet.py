"""Actor fleet throughput against the actor count, Ray actors and plain processes,
beside the raw vector env, and the memory each actor holds.

    .venv/bin/python bench/fleet.py [--counts 1 2 4 8] [--runners ray process]
        [--seconds 5] [--quick] [-- extra dqn flags, e.g. --env PixelCartPole-v1]

Starts ``dqn replay-server`` (a real one, defaults) and a weight service in this
process that publishes the initial weights once, as the learner does (no learner
runs, so no update competes for the CPU). Then, per runner, grows the fleet through
the counts (1 -> 2 -> 4 -> 8 actors, the running ones kept) and, once the new actors
push, reads the replay server's Info twice ``--seconds`` apart: fleet env steps/s
(the actors' own counts) and transitions/s ingested by the server.

The raw rate is measured in the same run, before and after the fleets (mean of the
two, so a drifting machine load shows up as a gap between them): N plain processes
step a vector env of the same id and env count with random actions (drawn ahead in
blocks) for ``--seconds``, all at once. ``vs raw`` is the fleet's rate over that of as
many raw processes stepping gymnasium's ``SyncVectorEnv``; ``vs lean`` is over that of
the actors' own ``LeanVectorEnv`` (the same env steps without SyncVectorEnv's info
merging and copies: the stricter figure, what the actor adds to stepping its envs).
``vs raw per CPU`` compares env steps per CPU second instead (the actors' processes,
all their threads, against the raw ones), a figure a loaded machine disturbs much
less than the wall-clock rates. Memory per actor is psutil's ``memory_full_info`` of
each actor process: USS (its own pages), PSS (own + its share of shared pages) and
RSS; ``48 actors`` extrapolates a host of 48 as 48 x USS + the shared part once
(RSS - USS of one actor, an upper bound of what they share). Writes
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


def _raw_worker(env, num_envs: int, seconds: float, seed: int, sync: bool, ready, go, out) -> None:
    """One raw vector env stepping random actions for ``seconds`` once ``go`` is set."""
    import numpy as np

    from dqn.envs import make_vector_env

    env = make_vector_env(env, num_envs, seed=seed, sync=sync)
    env.reset(seed=seed)
    n_actions = int(env.single_action_space.n)
    actions = np.random.default_rng(seed).integers(0, n_actions, (1024, num_envs))
    for k in range(50):  # warm up
        env.step(actions[k])
    ready.set()
    go.wait(300)
    steps, k = 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - t0) < seconds:
        env.step(actions[k])
        k = (k + 1) % len(actions)
        steps += num_envs
    out.put((steps / elapsed, steps / max(time.process_time() - c0, 1e-9)))
    env.close()


def raw_rate(env, num_envs: int, procs: int, seconds: float, sync: bool) -> tuple[float, float]:
    """Total env steps/s of ``procs`` raw vector-env processes stepping at once, and
    their env steps per CPU second (mean over the processes): gymnasium's SyncVectorEnv
    with ``sync``, else the actors' own LeanVectorEnv."""
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    readies, workers = [], []
    for k in range(procs):
        ready = ctx.Event()
        p = ctx.Process(
            target=_raw_worker,
            args=(env, num_envs, seconds, k, sync, ready, go, out),
            daemon=True,
        )
        p.start()
        readies.append(ready)
        workers.append(p)
    try:
        for ready in readies:
            if not ready.wait(300):
                raise TimeoutError("a raw vector env process did not start")
        go.set()
        rates = [out.get(timeout=seconds + 300) for _ in workers]
        return sum(r for r, _ in rates), sum(c for _, c in rates) / len(rates)
    finally:
        for p in workers:
            p.join(10)
            if p.is_alive():
                p.kill()


def memory(pids: list[int]) -> dict:
    """Mean USS / PSS / RSS in MiB of the processes ``pids`` (psutil memory_full_info)."""
    import psutil

    rows = []
    for pid in pids:
        try:
            m = psutil.Process(pid).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rows.append((m.uss, m.pss, m.rss))
    if not rows:
        return {}
    uss, pss, rss = (sum(c) / len(rows) / 2**20 for c in zip(*rows, strict=True))
    return {
        "uss_mib": uss,
        "pss_mib": pss,
        "rss_mib": rss,
        "host_48_mib": 48 * uss + (rss - uss),
        "measured_processes": len(rows),
    }


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system
    return total


def measure(info: _Info, n: int, seconds: float, pids=lambda: [], timeout: float = 120.0) -> dict:
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
    procs = pids()
    cpu0 = _cpu_seconds(procs)
    t0, steps0, ins0, _ = info()
    time.sleep(seconds)
    t1, steps1, ins1, _ = info()
    cpu = _cpu_seconds(procs) - cpu0
    dt = t1 - t0
    return {
        "actors": n,
        "env_steps_per_s": (steps1 - steps0) / dt,
        # the actors' own CPU time (every thread): env steps per core they used
        "env_steps_per_cpu_s": (steps1 - steps0) / cpu if cpu > 0 else None,
        "transitions_per_s": (ins1 - ins0) / dt,
        "seconds": dt,
    }


def run(args) -> dict:

    from actors.process_fleet import ProcessFleet
    from deploy.cli import build_parser, load_config
    from dqn import config as config_mod
    from dqn.envs import env_spec
    from dqn.networks import build_q_network
    from learner.weight_server import WeightServer

    parsed = build_parser().parse_args(
        ["actors", "--replay-address", "-", "--weights-address", "-", *args.extra]
    )
    base = load_config(parsed)
    spec = env_spec(base.env)
    obs_shape, n_actions = spec.obs_shape, spec.n_actions
    rows: list[dict] = []
    env_id, num_envs = base.env.id, base.actors.envs_per_actor
    counts = sorted(set(args.counts))

    def raw_all() -> dict[tuple[int, bool], tuple[float, float]]:
        out = {}
        for n in counts:
            for sync in (True, False):
                out[n, sync] = r, c = raw_rate(base.env, num_envs, n, args.seconds, sync)
                kind = "SyncVectorEnv" if sync else "LeanVectorEnv"
                print(
                    f"raw {n} x {kind}({env_id} x{num_envs}): {r:,.0f} env steps/s, "
                    f"{c:,.0f} per CPU second",
                    flush=True,
                )
        return out

    raw_before = raw_all()
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

                        def pids(fleet=fleet) -> list[int]:  # the live actors' processes
                            return [s["pid"] for s in fleet.states(timeout=30.0) if s["pid"]]

                        row = {"runner": runner, **measure(info, n, args.seconds, pids)}
                        row["memory"] = memory(pids())
                        rows.append(row)
                        mem = row["memory"]
                        print(
                            f"{runner} {n} actors: {row['env_steps_per_s']:,.0f} env steps/s, "
                            f"{row['transitions_per_s']:,.0f} transitions/s ingested, per actor "
                            f"USS {mem.get('uss_mib', 0):.0f} / PSS {mem.get('pss_mib', 0):.0f}"
                            f" / RSS {mem.get('rss_mib', 0):.0f} MiB",
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
    raw_after = raw_all()
    for row in rows:
        n = row["actors"]
        (before, cpu_before), (after, cpu_after) = raw_before[n, True], raw_after[n, True]
        raw, raw_cpu = (before + after) / 2, (cpu_before + cpu_after) / 2
        row["raw_env_steps_per_s"], row["raw_before"], row["raw_after"] = raw, before, after
        row["raw_env_steps_per_cpu_s"] = raw_cpu
        row["vs_raw"] = row["env_steps_per_s"] / raw if raw else None
        per_cpu = row.get("env_steps_per_cpu_s")
        row["vs_raw_per_cpu"] = per_cpu / raw_cpu if per_cpu and raw_cpu else None
        (lean_before, lean_cpu_before), (lean_after, lean_cpu_after) = (
            raw_before[n, False],
            raw_after[n, False],
        )
        lean, lean_cpu = (lean_before + lean_after) / 2, (lean_cpu_before + lean_cpu_after) / 2
        row["lean_env_steps_per_s"], row["lean_env_steps_per_cpu_s"] = lean, lean_cpu
        row["vs_lean"] = row["env_steps_per_s"] / lean if lean else None
        row["vs_lean_per_cpu"] = per_cpu / lean_cpu if per_cpu and lean_cpu else None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "env": base.env.id,
        "load_average": load,
        "envs_per_actor": base.actors.envs_per_actor,
        "push_every": base.actors.push_every,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "rows": rows,
    }


def report(result: dict) -> None:
    base = {r["runner"]: r["env_steps_per_s"] for r in result["rows"] if r["actors"] == 1}
    load = result.get("load_average")
    print_table(
        f"Fleet on {result['env']}: {result['envs_per_actor']} envs per actor, "
        f"{result['push_every']} transitions per push, {result['cpus']} CPUs, "
        f"{result['seconds']:g} s per point, load average at the end "
        + (" ".join(f"{x:.1f}" for x in load) if load else "?"),
        [
            "runner",
            "actors",
            "env steps/s",
            "transitions/s",
            "vs 1 actor",
            "raw env steps/s",
            "vs raw",
            "per CPU s",
            "raw per CPU s",
            "vs raw per CPU",
            "lean env steps/s",
            "vs lean",
            "vs lean per CPU",
            "USS MiB",
            "PSS MiB",
            "RSS MiB",
            "48 actors MiB",
        ],
        [
            [
                r["runner"],
                r["actors"],
                r["env_steps_per_s"],
                r["transitions_per_s"],
                r["env_steps_per_s"] / base[r["runner"]] if base.get(r["runner"]) else None,
                r.get("raw_env_steps_per_s"),
                r.get("vs_raw"),
                r.get("env_steps_per_cpu_s"),
                r.get("raw_env_steps_per_cpu_s"),
                r.get("vs_raw_per_cpu"),
                r.get("lean_env_steps_per_s"),
                r.get("vs_lean"),
                r.get("vs_lean_per_cpu"),
                r.get("memory", {}).get("uss_mib"),
                r.get("memory", {}).get("pss_mib"),
                r.get("memory", {}).get("rss_mib"),
                r.get("memory", {}).get("host_48_mib"),
            ]
            for r in result["rows"]
        ],
    )
    print(
        "raw = gymnasium's SyncVectorEnv, lean = dqn.vector_env.LeanVectorEnv (what the actors "
        "step), each the mean of runs before and after the fleets; raw before/after: "
        + ", ".join(
            f"{r['actors']}: {r['raw_before']:,.0f}/{r['raw_after']:,.0f}"
            for r in result["rows"]
            if r["runner"] == result["rows"][0]["runner"]
        )
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
