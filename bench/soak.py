"""Soak the replay server: many concurrent pushers and a sampler against `dqn replay-server`.

    .venv/bin/python bench/soak.py [--seconds 60] [--pushers 32]
        [--samples-per-insert R --spi-tolerance T] [-- extra replay-server flags]

Starts the replay server as a subprocess on 127.0.0.1 (port 0), then for ``--seconds``
runs ``--pushers`` pusher processes (spawned; each a plain gRPC stub pushing
TransitionBatches of ``--batch`` CartPole-shaped transitions, obs [4] float32, with its
own actor_id and incarnation and increasing sequence numbers) and one sampler process
(Sample ``--sample-batch-size`` x ``--sample-batches``). Every loop stops by itself when
its time is up. Prints transitions pushed and sampled per second, p50/p99 latency of
Push and Sample calls, the server's RSS (start, after warm-up, middle, end) and errors
by status code; writes bench/results/soak.json.

Exit code 0 when there were no errors and the server's RSS at the end is at most
``--rss-growth`` (1.1) times its RSS after warm-up (the ring buffer has been written
through once and ``--warmup-seconds`` have passed); else 1, saying why.

With ``--samples-per-insert`` the rate limiter holds pushers back. A pusher refused
with UNAVAILABLE because enough pushers already wait (the server's designed answer,
which writers retry with backoff) and a Push still held back when the run ends
(DEADLINE_EXCEEDED after its end) count as backpressure, not as errors.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import queue
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # spawned children re-run this as __mp_main__
    sys.path.insert(0, str(ROOT))

from bench.common import ReplayServerProcess  # noqa: E402

MiB = 1 << 20
OBS_SHAPE = (4,)
N_ACTIONS = 2
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * MiB),
    ("grpc.max_receive_message_length", 64 * MiB),
]
RATE_LIMITED = "rate limited"  # in the UNAVAILABLE details of a refused waiting pusher


# -- child processes --------------------------------------------------------------------
def _encode(tensor, array: np.ndarray, code: int) -> None:
    tensor.dtype = code
    tensor.shape[:] = array.shape
    tensor.data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def _backoff(attempt: int, end: float) -> None:
    time.sleep(max(0.0, min(0.05 * 2**attempt, 1.0, end - time.monotonic())))


def _error(errors, samples, exc, end: float, backpressure) -> None:
    """Count an RpcError: backpressure (designed, retried) or an error by status."""
    code, details = exc.code(), exc.details() or ""
    late = time.monotonic() >= end
    if code.name == "UNAVAILABLE" and RATE_LIMITED in details:
        backpressure["UNAVAILABLE (rate limited, retried)"] += 1
    elif code.name == "DEADLINE_EXCEEDED" and late:
        backpressure["DEADLINE_EXCEEDED (held back at the end)"] += 1
    else:
        errors[code.name] += 1
        if len(samples) < 5:
            samples.append(f"{code.name}: {details}")


def pusher_main(index: int, address: str, args: dict, go, results) -> None:
    import grpc

    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    rng = np.random.default_rng(1000 + index)
    n = args["batch"]
    request = pb.PushRequest()
    batch = request.batch
    batch.actor_id = index
    batch.incarnation = int(rng.integers(1, 2**63 - 1))
    obs = rng.standard_normal((n + 1, *OBS_SHAPE)).astype(np.float32)
    _encode(batch.obs, obs[:-1], pb.DTYPE_FLOAT32)
    _encode(batch.next_obs, obs[1:], pb.DTYPE_FLOAT32)
    _encode(batch.action, rng.integers(0, N_ACTIONS, n).astype(np.int64), pb.DTYPE_INT64)
    _encode(batch.reward, np.ones(n, np.float32), pb.DTYPE_FLOAT32)
    _encode(batch.terminated, rng.random(n) < 0.05, pb.DTYPE_BOOL)
    _encode(batch.discount, np.full(n, 0.99, np.float32), pb.DTYPE_FLOAT32)
    batch.epsilon = 0.1

    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.ReplayServiceStub(channel)
        results.put(("ready", index))
        go.wait(timeout=600)
        latencies: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        backpressure: collections.Counter[str] = collections.Counter()
        samples: list[str] = []
        accepted = duplicates = 0
        sequence, attempt = 1, 0
        start = time.monotonic()
        end = start + args["seconds"]
        while (now := time.monotonic()) < end:
            batch.sequence = sequence  # a retry resends the same sequence
            batch.actor_env_steps = sequence * n
            t0 = time.perf_counter()
            try:
                reply = stub.Push(iter((request,)), timeout=end - now + args["grace"])
            except grpc.RpcError as exc:
                _error(errors, samples, exc, end, backpressure)
                _backoff(attempt, end)
                attempt += 1
                continue
            latencies.append(time.perf_counter() - t0)
            accepted += reply.accepted_transitions
            duplicates += reply.duplicate_batches
            sequence, attempt = sequence + 1, 0
        elapsed = time.monotonic() - start
    results.put(
        (
            "pusher",
            index,
            {
                "latency_s": np.asarray(latencies, np.float64),
                "accepted_transitions": accepted,
                "duplicate_batches": duplicates,
                "batches": sequence - 1,
                "errors": dict(errors),
                "backpressure": dict(backpressure),
                "error_samples": samples,
                "elapsed_s": elapsed,
            },
        )
    )


def sampler_main(address: str, args: dict, go, results) -> None:
    import grpc

    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    b, k = args["sample_batch_size"], args["sample_batches"]
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.ReplayServiceStub(channel)
        results.put(("ready", "sampler"))
        go.wait(timeout=600)
        latencies: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        backpressure: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        samples: list[str] = []
        sampled = empty = 0
        attempt = 0
        start = time.monotonic()
        end = start + args["seconds"]
        while (now := time.monotonic()) < end:
            wait_ms = int(max(0.0, min(0.5, end - now)) * 1000)
            request = pb.SampleRequest(batch_size=b, num_batches=k, timeout_ms=wait_ms)
            t0 = time.perf_counter()
            try:
                reply = stub.Sample(request, timeout=end - now + args["grace"])
            except grpc.RpcError as exc:
                _error(errors, samples, exc, end, backpressure)
                _backoff(attempt, end)
                attempt += 1
                continue
            dt = time.perf_counter() - t0
            attempt = 0
            if reply.num_batches == 0:
                empty += 1
                reasons[reply.reason.split(":")[0][:60]] += 1
                continue
            obs = np.frombuffer(reply.obs.data, np.float32)
            action = np.frombuffer(reply.action.data, np.int64)
            if obs.size != b * k * 4 or action.size != b * k or (action >= N_ACTIONS).any():
                errors["BAD_SAMPLE"] += 1
                continue
            latencies.append(dt)
            sampled += b * k
        elapsed = time.monotonic() - start
    results.put(
        (
            "sampler",
            "sampler",
            {
                "latency_s": np.asarray(latencies, np.float64),
                "sampled_transitions": sampled,
                "calls": len(latencies),
                "empty_responses": empty,
                "empty_reasons": dict(reasons),
                "errors": dict(errors),
                "backpressure": dict(backpressure),
                "error_samples": samples,
                "elapsed_s": elapsed,
            },
        )
    )


# -- the parent ------------------------------------------------------------------------
def _server_flags(args) -> list[str]:
    flags = [
        "--replay.capacity",
        str(args.capacity),
        "--replay.min-size",
        str(args.min_size),
        # what the rate limiter's deadlock check must know about this load
        "--actors.push-every",
        str(args.batch),
        "--learner.batch-size",
        str(args.sample_batch_size),
        "--learner.batches-per-call",
        str(args.sample_batches),
    ]
    if args.samples_per_insert is not None:
        flags += ["--replay.samples-per-insert", str(args.samples_per_insert)]
    if args.spi_tolerance is not None:
        flags += ["--replay.spi-tolerance", str(args.spi_tolerance)]
    return flags + list(args.extra)


def _pct(latencies: np.ndarray, q: float) -> float | None:
    return float(np.percentile(latencies, q) * 1000) if latencies.size else None


def _rss(process) -> int:
    return process.memory_info().rss


def run(args) -> int:
    import grpc
    import psutil

    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    ctx = mp.get_context("spawn")
    child_args = {
        "seconds": args.seconds,
        "batch": args.batch,
        "sample_batch_size": args.sample_batch_size,
        "sample_batches": args.sample_batches,
        "grace": 10.0,
    }
    warmup_s = args.warmup_seconds if args.warmup_seconds is not None else args.seconds * 0.2
    children: list = []
    proc = None
    reasons: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            replay = ReplayServerProcess(tmp, *_server_flags(args))
            proc, address = replay.proc, replay.address
            server = psutil.Process(proc.pid)
            channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
            stub = pb_grpc.ReplayServiceStub(channel)

            def info():
                return stub.Info(pb.InfoRequest(episodes_after=2**63), timeout=5)

            results = ctx.Queue()
            go = ctx.Event()
            for i in range(args.pushers):
                children.append(
                    ctx.Process(
                        target=pusher_main,
                        args=(i + 1, address, child_args, go, results),
                        name=f"soak-pusher-{i + 1}",
                        daemon=True,
                    )
                )
            children.append(
                ctx.Process(
                    target=sampler_main,
                    args=(address, child_args, go, results),
                    name="soak-sampler",
                    daemon=True,
                )
            )
            t_spawn = time.monotonic()
            for child in children:
                child.start()
            ready_count, deadline = 0, time.monotonic() + 180
            while ready_count < len(children):
                try:
                    kind, _ = results.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError("clients not connected within 180 s") from None
                ready_count += kind == "ready"
            print(
                f"server {address} pid {proc.pid}; {len(children)} clients connected in "
                f"{time.monotonic() - t_spawn:.1f} s; running {args.seconds:g} s",
                flush=True,
            )

            rss = {"start": _rss(server)}
            mem = rss["start"]
            series = []
            go.set()
            t_go = time.monotonic()
            t_end = t_go + args.seconds
            full_at = None
            while (now := time.monotonic()) < t_end:
                t = now - t_go
                r = info()
                mem = _rss(server)
                series.append((round(t, 2), mem, r.inserted, r.sampled))
                if full_at is None and r.inserted >= args.capacity:
                    full_at = t
                if "warm" not in rss and full_at is not None and t >= warmup_s:
                    rss["warm"], rss["warm_at_s"] = mem, round(t, 2)
                if "middle" not in rss and t >= args.seconds / 2:
                    rss["middle"] = mem
                time.sleep(min(0.5, max(0.0, t_end - time.monotonic())))
            if "warm" not in rss:  # the buffer never filled: take the warm-up time anyway
                reasons.append(f"buffer never wrapped (inserted < capacity {args.capacity})")
                rss["warm"], rss["warm_at_s"] = rss.get("middle", mem), None
            rss.setdefault("middle", mem)

            outcomes: dict = {}
            deadline = time.monotonic() + child_args["grace"] + 30
            while len(outcomes) < len(children) and time.monotonic() < deadline:
                try:
                    kind, who, payload = results.get(timeout=1.0)
                except queue.Empty:
                    continue
                outcomes[(kind, who)] = payload
            for child in children:
                child.join(timeout=max(0.1, deadline - time.monotonic()))
            missing = len(children) - len(outcomes)
            if missing:
                reasons.append(f"{missing} client processes reported nothing")
            rss["end"] = _rss(server)
            final = info()
        except Exception as exc:  # reported, then exit code 1
            print(f"soak failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if proc is not None:
                tail = (tmp / "replay.log").read_text(errors="replace")[-3000:]
                if tail:
                    print("--- replay server log (tail) ---\n" + tail, file=sys.stderr)
            return 1
        finally:
            for child in children:
                if child.is_alive():
                    child.terminate()
                    child.join(timeout=5)
            if proc is not None:
                replay.stop()
        server_log = (tmp / "replay.log").read_text(errors="replace")

    pushers = [v for (kind, _), v in outcomes.items() if kind == "pusher"]
    sampler = outcomes.get(("sampler", "sampler"), {})
    push_lat = np.concatenate([p["latency_s"] for p in pushers]) if pushers else np.zeros(0)
    sample_lat = sampler.get("latency_s", np.zeros(0))
    pushed = sum(p["accepted_transitions"] for p in pushers)
    push_window = max((p["elapsed_s"] for p in pushers), default=args.seconds)
    sampled = sampler.get("sampled_transitions", 0)
    sample_window = sampler.get("elapsed_s", args.seconds)
    errors: collections.Counter[str] = collections.Counter()
    backpressure: collections.Counter[str] = collections.Counter()
    error_samples: list[str] = []
    for o in [*pushers, sampler]:
        errors.update(o.get("errors", {}))
        backpressure.update(o.get("backpressure", {}))
        error_samples += o.get("error_samples", [])
    n_errors = sum(errors.values())

    result = {
        "seconds": args.seconds,
        "pushers": args.pushers,
        "batch": args.batch,
        "sample_batch_size": args.sample_batch_size,
        "sample_batches": args.sample_batches,
        "capacity": args.capacity,
        "min_size": args.min_size,
        "samples_per_insert": args.samples_per_insert,
        "spi_tolerance": args.spi_tolerance,
        "pushed_transitions": pushed,
        "push_calls": int(push_lat.size),
        "pushed_transitions_per_s": pushed / push_window,
        "push_latency_ms": {"p50": _pct(push_lat, 50), "p99": _pct(push_lat, 99)},
        "sampled_transitions": sampled,
        "sample_calls": int(sample_lat.size),
        "sampled_transitions_per_s": sampled / sample_window,
        "sample_calls_per_s": sample_lat.size / sample_window,
        "sample_latency_ms": {"p50": _pct(sample_lat, 50), "p99": _pct(sample_lat, 99)},
        "empty_sample_responses": sampler.get("empty_responses", 0),
        "empty_sample_reasons": sampler.get("empty_reasons", {}),
        "server_rss_mb": {
            k: (v / MiB if k in ("start", "warm", "middle", "end") else v) for k, v in rss.items()
        },
        "server_info": {
            "size": final.size,
            "inserted": final.inserted,
            "sampled": final.sampled,
            "rejected_batches": final.rejected_batches,
            "duplicate_batches": final.duplicate_batches,
        },
        "errors": dict(errors),
        "error_samples": error_samples,
        "backpressure": dict(backpressure),
        "rss_series": [
            {"t": t, "rss_mb": m / MiB, "inserted": i, "sampled": s} for t, m, i, s in series
        ],
    }

    # Accounting: the server holds at least what it acknowledged (a push cut off by its
    # deadline may be stored unacknowledged) and handed out what the sampler received.
    if final.inserted < pushed:
        reasons.append(f"server inserted {final.inserted:,} < {pushed:,} acknowledged")
    if final.sampled < sampled:
        reasons.append(f"server sampled {final.sampled:,} < {sampled:,} received")
    if final.rejected_batches:
        reasons.append(f"server rejected {final.rejected_batches} batches")
    if n_errors:
        reasons.append(f"{n_errors} errors: {dict(errors)}")
    limit = args.rss_growth * rss["warm"]
    if rss["end"] > limit:
        reasons.append(
            f"server RSS grew: end {rss['end'] / MiB:.1f} MiB > {args.rss_growth:g} x "
            f"{rss['warm'] / MiB:.1f} MiB after warm-up"
        )
    result["ok"] = not reasons
    result["why_not_ok"] = reasons

    _print_table(result, rss)
    if error_samples:
        print("first errors:", *error_samples, sep="\n  ")
    if "Traceback" in server_log:
        print("--- replay server log (tail) ---\n" + server_log[-2000:])
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    if reasons:
        print("FAIL: " + "; ".join(reasons))
        return 1
    print(f"OK: no errors, server RSS end within {args.rss_growth:g} x RSS after warm-up")
    return 0


def _print_table(r: dict, rss: dict) -> None:
    def ms(d):
        return " / ".join("-" if d[k] is None else f"{d[k]:.2f}" for k in ("p50", "p99"))

    spi = (
        f", samples_per_insert {r['samples_per_insert']:g} (tolerance {r['spi_tolerance']:g})"
        if r["samples_per_insert"] is not None and r["spi_tolerance"] is not None
        else ""
    )
    warm_at = rss.get("warm_at_s")
    rows = [
        ("pushed transitions/s", f"{r['pushed_transitions_per_s']:,.0f}"),
        ("  push calls (batches)", f"{r['push_calls']:,}"),
        ("  push latency p50 / p99 (ms)", ms(r["push_latency_ms"])),
        ("sampled transitions/s", f"{r['sampled_transitions_per_s']:,.0f}"),
        ("  sample calls/s", f"{r['sample_calls_per_s']:,.1f}"),
        ("  sample latency p50 / p99 (ms)", ms(r["sample_latency_ms"])),
        ("  empty sample responses", f"{r['empty_sample_responses']:,}"),
        (
            "server RSS start/warm/mid/end (MiB)",
            " / ".join(f"{rss[k] / MiB:.1f}" for k in ("start", "warm", "middle", "end")),
        ),
        ("  warm-up taken at (s)", "-" if warm_at is None else f"{warm_at:.1f}"),
        (
            "server inserted / sampled",
            f"{r['server_info']['inserted']:,} / {r['server_info']['sampled']:,}",
        ),
        (
            "errors by status",
            ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none",
        ),
        (
            "backpressure (not errors)",
            ", ".join(f"{k} {v}" for k, v in sorted(r["backpressure"].items())) or "none",
        ),
    ]
    print()
    print(
        f"soak {r['seconds']:g} s: {r['pushers']} pushers x {r['batch']} transitions, 1 sampler "
        f"({r['sample_batch_size']} x {r['sample_batches']}), capacity {r['capacity']:,}{spi}"
    )
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60, help="load duration")
    parser.add_argument("--pushers", type=int, default=32, help="pusher processes")
    parser.add_argument("--batch", type=int, default=256, help="transitions per Push")
    parser.add_argument("--sample-batch-size", type=int, default=128)
    parser.add_argument("--sample-batches", type=int, default=16, help="batches per Sample")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--min-size", type=int, default=1_000)
    parser.add_argument(
        "--samples-per-insert", type=float, default=None, help="rate limiter ratio (default off)"
    )
    parser.add_argument("--spi-tolerance", type=float, default=None)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="RSS after warm-up is taken this long after the start and after the ring "
        "has been written through once (default: 20%% of --seconds)",
    )
    parser.add_argument("--rss-growth", type=float, default=1.1, help="allowed end/warm RSS")
    parser.add_argument("extra", nargs="*", help="more `dqn replay-server` flags (after --)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.pushers < 1 or args.batch < 1:
        parser.error("--seconds, --pushers and --batch must be positive")
    if args.samples_per_insert is not None and args.spi_tolerance is None:
        parser.error("--samples-per-insert needs --spi-tolerance")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
