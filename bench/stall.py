"""How long one CPU-bound call stalls every other call on the replay server's loop.

The replay server runs every RPC on one event loop (decision 22), and its CPU-bound
work (batch checks and ring writes in Push, gather and encode in Sample, the sum tree
in UpdatePriorities) runs inline on it. The promise: no call stalls the others for
longer than its own work, and a checkpoint's copy (another thread, in chunks under
the server's lock) stalls it for one chunk, not for the whole copy. For each kind of
call this runs a burst from a client *process* (so client work does not share the
server's GIL), and reports side by side

* ``own ms``: the call's server-side time, median and max (the handler's work, timed
  on the loop), and
* ``stall ms``: the longest the loop was late waking a 50 ms sleeper during the burst
  (``AioServer.take_loop_lag``), i.e. the longest any other call had to wait, and
* ``health ms``: the worst gRPC health round trip seen by a second client process
  probing every 10 ms meanwhile.

``stall <= own max`` (plus scheduling noise on a loaded 2-core machine) is the claim.

    python bench/stall.py [--calls 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import print_table, random_columns, write_json  # noqa: E402

PIXELS = (2, 40, 80)  # PixelCartPole-v1 frame stacks, uint8


def _columns(n: int, obs_shape, obs_dtype, rng) -> dict[str, np.ndarray]:
    cols = random_columns(n, rng)
    if obs_shape != (4,):
        obs = rng.integers(0, 255, (n, *obs_shape), dtype=np.uint8).astype(obs_dtype)
        cols["obs"], cols["next_obs"] = obs, obs.copy()
    return cols


def _push_request(n: int, obs_shape, obs_dtype, rng):
    from dqn import codec
    from dqn.v1 import replay_pb2 as pb

    request = pb.PushRequest()
    for name, array in _columns(n, obs_shape, obs_dtype, rng).items():
        codec.encode(array, getattr(request.batch, name))
    request.batch.actor_id = 1
    return request


def _client(address: str, kind: str, obs_shape, obs_dtype, calls: int, out) -> None:
    """Runs in a child process: ``calls`` calls of ``kind``; reports when done."""
    from dqn import codec, rpc
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    rng = np.random.default_rng(1)
    with rpc.channel(address) as ch:
        stub = pb_grpc.ReplayServiceStub(ch)
        n = 64 if obs_shape != (4,) else 256
        request = _push_request(n, obs_shape, obs_dtype, rng)
        for k in range(calls):
            if kind == "push":
                request.batch.sequence = 10_000 + k
                stub.Push(iter([request]), timeout=30)
            elif kind == "sample":
                stub.Sample(pb.SampleRequest(batch_size=128, num_batches=16), timeout=30)
            else:  # priorities: as many rows as a learner sends per flush
                r = stub.Sample(pb.SampleRequest(batch_size=128, num_batches=16), timeout=30)
                update = pb.UpdatePrioritiesRequest()
                update.index.CopyFrom(r.index)
                update.key.CopyFrom(r.key)
                m = r.index.shape[0]
                codec.encode(rng.random(m, dtype=np.float32), update.priority)
                stub.UpdatePriorities(update, timeout=30)
    out.put("done")


def _prober(address: str, stop, out) -> None:
    """Runs in a child process: health checks every 10 ms; reports the worst."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from dqn import rpc

    worst = 0.0
    with rpc.channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        while not stop.is_set():
            t0 = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.01)
    out.put(worst)


def _timed(servicer, timings: list[float]):
    """Wrap the servicer's synchronous work so each call's own time is recorded (a
    Push message's checks and its ring write count as one piece of work)."""
    from replay_server import service

    checks: list[float] = []

    def wrap(fn, into):
        def timed(*args):
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                into.append(time.perf_counter() - t0)

        return timed

    original = service.validate_batch
    service.validate_batch = wrap(original, checks)
    store = wrap(servicer._store, timings)

    def store_with_checks(*args):
        store(*args)
        timings[-1] += checks.pop() if checks else 0.0

    servicer._store = store_with_checks
    draws: list[float] = []
    servicer._draw = wrap(servicer._draw, draws)
    encode = wrap(servicer._encode, timings)

    def encode_after_draw(*args):  # a Sample's own work: its draw and its encoding
        data = encode(*args)
        timings[-1] += draws.pop() if draws else 0.0
        return data

    servicer._encode = encode_after_draw
    servicer._update_priorities = wrap(servicer._update_priorities, timings)
    return lambda: setattr(service, "validate_batch", original)


def run_case(kind: str, obs_shape, calls: int, capacity: int = 20_000) -> dict:
    from dqn.config import build
    from replay_server.server import ReplayServer

    obs_dtype = np.uint8 if obs_shape != (4,) else np.float32
    config = build(
        {
            "replay": {
                "capacity": capacity,
                "min_size": 1,
                "host": "127.0.0.1",
                "port": 0,
                "prioritized": kind == "priorities",
                "max_batch_transitions": 256,
                "samples_per_insert": 0,  # pushes and samples measured apart
            }
        }
    )
    server = ReplayServer(config, obs_shape, 2, obs_dtype=obs_dtype)
    server.start()
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    try:
        # Fill first, so Sample gathers from a realistic buffer.
        from dqn import rpc
        from dqn.v1 import replay_pb2_grpc as pb_grpc

        rng = np.random.default_rng(0)
        with rpc.channel(server.address) as ch:
            stub = pb_grpc.ReplayServiceStub(ch)
            fill = _push_request(256, obs_shape, obs_dtype, rng)
            for seq in range(1, capacity // 256 + 2):
                fill.batch.sequence = seq
                stub.Push(iter([fill]), timeout=30)
        own: list[float] = []
        untime = _timed(server.servicer, own)
        prober = ctx.Process(target=_prober, args=(server.address, stop, out))
        prober.start()
        time.sleep(0.5)  # the prober's first checks, before the burst
        server.take_loop_lag()
        own.clear()
        if kind == "checkpoint":  # snapshots from this thread while a client pushes
            client = ctx.Process(
                target=_client, args=(server.address, "push", obs_shape, obs_dtype, 10**6, out)
            )
            client.start()
            for _ in range(calls):
                t0 = time.perf_counter()
                server.servicer.snapshot()
                own.append(time.perf_counter() - t0)
            client.kill()
        else:
            client = ctx.Process(
                target=_client, args=(server.address, kind, obs_shape, obs_dtype, calls, out)
            )
            client.start()
            assert out.get(timeout=600) == "done"
        stall = server.take_loop_lag()
        stop.set()
        health = out.get(timeout=60)
        client.join(30)
        prober.join(30)
        untime()
    finally:
        stop.set()
        server.stop(0.5)
    own_ms = np.array(own) * 1e3
    return {
        "call": kind,
        "obs": "x".join(map(str, obs_shape)),
        "calls": calls,
        "own_ms_median": float(np.median(own_ms)) if len(own_ms) else float("nan"),
        "own_ms_max": float(own_ms.max()) if len(own_ms) else float("nan"),
        "stall_ms": stall * 1e3,
        "health_ms_max": health * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per burst")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    cases = [
        ("push", (4,)),
        ("push", PIXELS),
        ("sample", (4,)),
        ("sample", PIXELS),
        ("priorities", (4,)),
    ]
    rows = [run_case(kind, shape, args.calls) for kind, shape in cases]
    # A checkpoint's copy of a ~1 GB frame replay (40k PixelCartPole rows), pushes going
    # on: "own" is the whole snapshot; the stall is what the loop saw meanwhile.
    rows.append(run_case("checkpoint", PIXELS, 3, capacity=40_000))
    print_table(
        "Replay server: one call's own work vs the stall it causes others",
        ["call", "obs", "own ms p50", "own ms max", "loop stall ms", "health ms max"],
        [
            [
                r["call"],
                r["obs"],
                r["own_ms_median"],
                r["own_ms_max"],
                r["stall_ms"],
                r["health_ms_max"],
            ]
            for r in rows
        ],
    )
    write_json("stall", {"cases": rows}, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
