"""Replay server throughput, side by side with a null gRPC server in the same run.

    .venv/bin/python bench/replay.py [--seconds 2] [--repeats 3] [--quick]

Push: 1, 2, 4 and 8 pusher processes (plain gRPC stubs, one TransitionBatch of 32 or
256 CartPole-shaped transitions per Push call) -> transitions/s acknowledged.
Sample: one sampler process, batch size 128 and 256, 1, 16 and 64 batches per call ->
batches/s received.

Both run against the real server (``dqn replay-server``: parse, validate, dedup,
store; sample from 100k stored transitions) and against a null server in this file
(same gRPC server settings and the same raw-bytes parse, then nothing: it stores
nothing and answers Sample with a prebuilt response of the asked size). Cells are
interleaved (null, real, then real, null, ...) ``--repeats`` times; the tables give
medians and the real/null ratio, i.e. what storage and validation cost. Also the
server's CPU time per transition (or per batch), from its process's CPU counters.
Writes bench/results/replay.json. Target: 4 pushers x 256 per message >= 0.7 x null.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # spawned children re-run this as __mp_main__
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    ReplayServerProcess,
    median,
    print_table,
    random_columns,
    ratio,
    write_json,
)

SERVICE_NAME = "dqn.v1.ReplayService"
TARGET = 0.7  # real / null, 4 pushers x 256 transitions per message
CAPACITY = 100_000


# -- the null server ---------------------------------------------------------------------
def null_server_main(ready, stop) -> None:
    """Same gRPC server and raw-bytes parsing as the real one; stores nothing."""
    import grpc

    from dqn import codec, rpc
    from dqn.interfaces import TRANSITION_COLUMNS
    from dqn.v1 import replay_pb2 as pb

    responses: dict[tuple[int, int], pb.SampleResponse] = {}
    rng = np.random.default_rng(0)

    async def push(request_iterator, context):
        batches = transitions = 0
        async for raw in request_iterator:
            request = pb.PushRequest.FromString(raw)
            batches += 1
            transitions += request.batch.action.shape[0]
        return pb.PushResponse(accepted_batches=batches, accepted_transitions=transitions)

    async def sample(raw, context):
        request = pb.SampleRequest.FromString(raw)
        key = (request.batch_size, request.num_batches)
        if key not in responses:
            cols = random_columns(key[0] * key[1], rng)
            response = pb.SampleResponse(num_batches=key[1], batch_size=key[0])
            for name in TRANSITION_COLUMNS:
                codec.encode(cols[name], getattr(response, name))
            responses[key] = response
        return responses[key]

    async def info(raw, context):
        return pb.InfoResponse()

    def identity(data: bytes) -> bytes:
        return data

    # Built as replay_server.server builds the real one: an AioServer, coroutine
    # handlers on its one loop thread, raw-bytes requests.
    server = rpc.AioServer(64, name="null-replay")
    handlers = {
        "Push": grpc.stream_unary_rpc_method_handler(
            push, identity, pb.PushResponse.SerializeToString
        ),
        "Sample": grpc.unary_unary_rpc_method_handler(
            sample, identity, pb.SampleResponse.SerializeToString
        ),
        "Info": grpc.unary_unary_rpc_method_handler(
            info, identity, pb.InfoResponse.SerializeToString
        ),
    }
    server.add_handlers(grpc.method_handlers_generic_handler(SERVICE_NAME, handlers))
    port = server.start("127.0.0.1", 0)
    ready.put(f"127.0.0.1:{port}")
    stop.wait()
    server.stop(0.5)


# -- load generators -----------------------------------------------------------------------
def _push_request(n: int, actor_id: int, seed: int):
    from dqn import codec
    from dqn.v1 import replay_pb2 as pb

    rng = np.random.default_rng(seed)
    request = pb.PushRequest()
    batch = request.batch
    batch.actor_id = actor_id
    for name, array in random_columns(n, rng).items():
        codec.encode(array, getattr(batch, name))
    batch.epsilon = 0.1
    return request


def worker_main(index: int, commands, results) -> None:
    """A load generator: pushes or samples as told, then reports what it got."""
    import random

    import grpc

    from dqn import rpc
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    stubs: dict[str, tuple] = {}
    channels = []

    def stub(address: str):
        if address not in stubs:
            channel = rpc.channel(address)
            grpc.channel_ready_future(channel).result(timeout=30)
            channels.append(channel)
            stubs[address] = (raw_push(channel), pb_grpc.ReplayServiceStub(channel))
        return stubs[address]

    requests: dict[int, object] = {}
    results.put(("ready", index, None))
    while True:
        cmd = commands.get()
        if cmd[0] == "stop":
            break
        kind, address, size, per_call, t_start, seconds = cmd
        push, s = stub(address)
        done = calls = 0
        while time.time() < t_start:
            time.sleep(0.001)
        end = t_start + seconds
        # At least one call per cell, checked after it: a worker that reaches the cell
        # late (a slow machine, a slow first connect) still measures something.
        if kind == "push":
            request = requests.get(size) or _push_request(size, 1000 + index, index)
            requests[size] = request
            batch = request.batch
            batch.incarnation = random.getrandbits(63)  # a fresh sender every cell
            sequence = 1
            while True:
                msgs = []
                for _ in range(per_call):
                    batch.sequence = sequence
                    batch.actor_env_steps = sequence * size
                    msgs.append(request.SerializeToString())
                    sequence += 1
                reply = push(iter(msgs), timeout=30)
                done += reply.accepted_transitions
                calls += 1
                if time.time() >= end:
                    break
        else:  # sample: size = batch size, per_call = batches per call
            request = pb.SampleRequest(batch_size=size, num_batches=per_call, timeout_ms=1000)
            while True:
                reply = s.Sample(request, timeout=30)
                done += reply.num_batches
                calls += 1
                if time.time() >= end:
                    break
        results.put(("done", index, (done, calls, time.time() - t_start)))
    for channel in channels:
        channel.close()


class Load:
    """A pool of load-generator processes kept for the whole run (spawned once)."""

    def __init__(self, n: int):
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(target=worker_main, args=(i, q, self.results), daemon=True)
            for i, q in enumerate(self.commands)
        ]
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self.results.get(timeout=120)

    def run(self, kind, workers, address, size, per_call, seconds) -> tuple[int, int, float]:
        t_start = time.time() + 0.2
        for i in range(workers):
            self.commands[i].put((kind, address, size, per_call, t_start, seconds))
        got = [self.results.get(timeout=seconds + 60) for _ in range(workers)]
        done = sum(g[2][0] for g in got)
        calls = sum(g[2][1] for g in got)
        return done, calls, max(g[2][2] for g in got)

    def close(self) -> None:
        for q in self.commands:
            q.put(("stop",))
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()


def raw_push(channel):
    """Push taking already serialized PushRequests (the load is encoded before timing)."""
    from dqn.v1 import replay_pb2 as pb

    return channel.stream_unary(
        f"/{SERVICE_NAME}/Push",
        request_serializer=None,
        response_deserializer=pb.PushResponse.FromString,
    )


def _prefill(address: str, n: int) -> None:
    from dqn import rpc

    with rpc.channel(address) as channel:
        push = raw_push(channel)
        request = _push_request(1024, 999_999, 7)
        request.batch.incarnation = 1
        for seq in range(1, n // 1024 + 2):
            request.batch.sequence = seq
            push(iter((request.SerializeToString(),)), timeout=30)


def _cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


# -- the run -----------------------------------------------------------------------------
def run(args) -> dict:
    ctx = mp.get_context("spawn")
    servers: dict[str, tuple[str, int]] = {}
    load = real = null = None
    stop = ctx.Event()
    samples: dict[tuple, list] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        try:
            real = ReplayServerProcess(
                Path(tmp), "--replay.capacity", str(CAPACITY), "--replay.min-size", "1000"
            )
            servers["real"] = (real.address, real.proc.pid)
            ready = ctx.Queue()
            null = ctx.Process(target=null_server_main, args=(ready, stop), daemon=True)
            null.start()
            servers["null"] = (ready.get(timeout=60), null.pid)
            _prefill(real.address, CAPACITY)
            load = Load(max(args.pushers))
            cells = [("push", p, m, args.per_call) for m in args.messages for p in args.pushers]
            cells += [("sample", 1, b, k) for b in args.batch_sizes for k in args.batches_per_call]
            print(
                f"null server {servers['null'][0]}, real server {servers['real'][0]}; "
                f"{len(cells)} cells x 2 servers x {args.repeats} repeats x {args.seconds:g} s",
                flush=True,
            )
            for rep in range(args.repeats):
                order = ("null", "real") if rep % 2 == 0 else ("real", "null")
                for cell, name in itertools.product(cells, order):
                    kind, workers, size, per_call = cell
                    address, pid = servers[name]
                    cpu0 = _cpu_seconds(pid)
                    done, calls, elapsed = load.run(
                        kind, workers, address, size, per_call, args.seconds
                    )
                    cpu = _cpu_seconds(pid) - cpu0
                    samples.setdefault((*cell, name), []).append((done / elapsed, cpu / done))
        finally:
            if load is not None:
                load.close()
            stop.set()
            if null is not None:
                null.join(10)
                if null.is_alive():
                    null.terminate()
            if real is not None:
                real.stop()

    def cell_result(cell) -> dict:
        out = {}
        for name in ("null", "real"):
            got = samples[(*cell, name)]
            out[name] = {
                "rate_median": median(r for r, _ in got),
                "rates": [r for r, _ in got],
                "server_cpu_us_per_unit_median": median(c * 1e6 for _, c in got),
            }
        out["ratio"] = ratio(out["real"]["rate_median"], out["null"]["rate_median"])
        return out

    push = [
        {"pushers": p, "transitions_per_message": m, "messages_per_call": c, **cell_result(cell)}
        for cell in (x for x in cells if x[0] == "push")
        for _, p, m, c in [cell]
    ]
    sample = [
        {"batch_size": b, "batches_per_call": k, **cell_result(cell)}
        for cell in (x for x in cells if x[0] == "sample")
        for _, _, b, k in [cell]
    ]
    result = {
        "seconds_per_cell": args.seconds,
        "repeats": args.repeats,
        "capacity": CAPACITY,
        "push": push,
        "sample": sample,
    }
    target_cell = next(
        (r for r in push if r["pushers"] == 4 and r["transitions_per_message"] == 256), None
    )
    if target_cell is not None:
        result["target"] = {
            "what": "real/null push rate, 4 pushers x 256 transitions per message",
            "ratio": target_cell["ratio"],
            "min": TARGET,
            "met": target_cell["ratio"] >= TARGET,
        }
    return result


def report(result: dict) -> None:
    print_table(
        f"Push: transitions/s acknowledged (median of {result['repeats']} x "
        f"{result['seconds_per_cell']:g} s); server CPU µs per transition",
        ["pushers", "per msg", "null/s", "real/s", "real/null", "null µs/tr", "real µs/tr"],
        [
            [
                r["pushers"],
                r["transitions_per_message"],
                r["null"]["rate_median"],
                r["real"]["rate_median"],
                r["ratio"],
                r["null"]["server_cpu_us_per_unit_median"],
                r["real"]["server_cpu_us_per_unit_median"],
            ]
            for r in result["push"]
        ],
    )
    print_table(
        "Sample: batches/s received by one sampler; server CPU µs per batch",
        ["batch", "per call", "null/s", "real/s", "real/null", "null µs/b", "real µs/b"],
        [
            [
                r["batch_size"],
                r["batches_per_call"],
                r["null"]["rate_median"],
                r["real"]["rate_median"],
                r["ratio"],
                r["null"]["server_cpu_us_per_unit_median"],
                r["real"]["server_cpu_us_per_unit_median"],
            ]
            for r in result["sample"]
        ],
    )
    t = result.get("target")
    if t:
        verdict = "met" if t["met"] else "MISSED"
        print(f"target: {t['what']} = {t['ratio']:.2f} (>= {t['min']:g}: {verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one cell")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per cell")
    parser.add_argument("--pushers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--messages", type=int, nargs="+", default=[32, 256])
    parser.add_argument(
        "--per-call", type=int, default=1, help="TransitionBatch messages per Push call"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches-per-call", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--quick", action="store_true", help="a few seconds: smoke test")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 0.3, 1
        args.pushers, args.messages = [1, 2], [32]
        args.batch_sizes, args.batches_per_call = [128], [1, 16]
    result = run(args)
    report(result)
    write_json("replay", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
