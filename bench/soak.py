"""Soaks: the whole stack, the replay server under load, and actor-id churn.

    .venv/bin/python bench/soak.py stack [--minutes M | --seconds S | --quick]
        [--runner ray|process] [--actors N] [-- extra dqn train flags]
    .venv/bin/python bench/soak.py replay [--seconds 60] [--pushers 32]
        [--samples-per-insert R --spi-tolerance T] [-- extra replay-server flags]
    .venv/bin/python bench/soak.py churn [--actor-ids 100000]

``stack`` (the default mode) runs ``dqn train`` (deploy/local.py: replay server,
learner and actors, Ray or plain processes) with ``--run.stop-when-solved false`` in a
temporary run dir and samples the RSS of each of its processes (psutil) every
``--interval`` s. Warm-up ends once the replay ring has been written through once, the
learner has evaluated ``--warmup-evals`` times, redrawn its curve ``--warmup-plots``
times and written a checkpoint, the replay server has written one, and
``--warmup-seconds`` have passed. Then it measures for ``--minutes``/``--seconds``, or,
without them, until each periodic task has run again (``--window-evals`` evaluations,
``--window-plots`` redraws, ``--window-checkpoints`` checkpoints, the ring overwritten
once more, ``--window-samples`` RSS samples): bounded by counts, not by the machine's
speed, with ``--deadline`` as the only clock. ``--quick`` is that count-bounded form
at a fast cadence (redraw every 0.5 s, checkpoints every 2 s, an eval of 5 episodes every
100 updates, process actors, a 20k ring): what tests/integration/test_soak.py runs in CI.
It then stops ``dqn train`` (SIGTERM, or with ``--stop-signal int-group`` SIGINT to
its process group, as Ctrl-C does) and checks that every part exited.

RSS "after warm-up" and "at the end" are medians of ``--edge-samples`` samples; a
process passes when end - warm <= max(``--growth-mib`` 16, ``--growth-fraction`` 0.04
x warm). Why that much: after warm-up no part should hold more per repetition of its
work, so what remains is allocator noise (glibc arenas and trims, pymalloc arenas,
torch's CPU allocator: a few MiB either way), plus the learner's episode deque, which
keeps filling up to its bound (100k episodes, about 10 MiB). The learner's leak of
issue 11 (item 7) added 35 MiB in the quick window and 54 MiB in 5 minutes. Ray's own
daemons are listed, summed, but not checked. Prints a table per process (first, warm,
peak, end RSS, growth, the allowed growth, the fitted slope in MiB/min) and how the
launcher ended; writes bench/results/soak_stack.json and the run's log
soak_stack_train.log.

``replay`` starts the replay server as a subprocess on 127.0.0.1 (port 0), then for
``--seconds`` runs ``--pushers`` pusher processes (spawned; each a plain gRPC stub
pushing TransitionBatches of ``--batch`` CartPole-shaped transitions, obs [4] float32,
with its own actor_id and incarnation and increasing sequence numbers) and one sampler
process (Sample ``--sample-batch-size`` x ``--sample-batches``). Every loop stops by
itself when its time is up. Prints transitions pushed and sampled per second, p50/p99
latency of Push and Sample calls, the server's RSS (start, after warm-up, middle, end)
and errors by status code; writes bench/results/soak.json. Exit code 0 when there were
no errors and the server's RSS at the end is at most ``--rss-growth`` (1.1) times its
RSS after warm-up (the ring buffer has been written through once and
``--warmup-seconds`` have passed); else 1, saying why. With ``--samples-per-insert``
the rate limiter holds pushers back. A pusher refused with UNAVAILABLE because enough
pushers already wait (the server's designed answer, which writers retry with backoff)
and a Push still held back when the run ends (DEADLINE_EXCEEDED after its end) count
as backpressure, not as errors.

``churn`` pushes one small batch from each of ``--actor-ids`` distinct actor ids (each
a new life: its own incarnation, sequence 1), ``--ids-per-call`` batches per Push
stream, to a replay server, calling Info and sampling the server's RSS every
``--info-every`` ids. Prints RSS, Info's outcome and size, the actors it lists and
those it has expired, over the ids; errors by gRPC status for Push and Info. Exit code
1 on any error, on fewer batches accepted than sent, or when the server's RSS grew more
than ``--rss-growth-mib`` from ``--warmup-ids`` ids to the end; writes
bench/results/soak_churn.json.

Every mode encodes with ``dqn.codec`` and dials with ``dqn.rpc``'s channel options.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
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
MAX_MESSAGE_MB = 64
RATE_LIMITED = "rate limited"  # in the UNAVAILABLE details of a refused waiting pusher


# -- mode `replay`: the replay server under load ---------------------------------------
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

    from dqn import codec, rpc
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    rng = np.random.default_rng(1000 + index)
    n = args["batch"]
    request = pb.PushRequest()
    batch = request.batch
    batch.actor_id = index
    batch.incarnation = int(rng.integers(1, 2**63 - 1))
    obs = rng.standard_normal((n + 1, *OBS_SHAPE)).astype(np.float32)
    codec.encode(obs[:-1], batch.obs)
    codec.encode(obs[1:], batch.next_obs)
    codec.encode(rng.integers(0, N_ACTIONS, n).astype(np.int64), batch.action)
    codec.encode(np.ones(n, np.float32), batch.reward)
    codec.encode(rng.random(n) < 0.05, batch.terminated)
    codec.encode(np.full(n, 0.99, np.float32), batch.discount)
    batch.epsilon = 0.1

    with rpc.channel(address, MAX_MESSAGE_MB) as channel:
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

    from dqn import rpc
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    b, k = args["sample_batch_size"], args["sample_batches"]
    with rpc.channel(address, MAX_MESSAGE_MB) as channel:
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


def replay_run(args) -> int:
    """Soak the replay server: pushers and a sampler for ``--seconds``."""
    import psutil

    from dqn import rpc
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
            channel = rpc.channel(address, MAX_MESSAGE_MB)
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
    return _verdict(
        args,
        "soak",
        result,
        reasons,
        error_samples,
        server_log,
        f"no errors, server RSS end within {args.rss_growth:g} x RSS after warm-up",
    )


def _verdict(args, name, result, reasons, error_samples, server_log, ok: str) -> int:
    """The end of a server soak: the first errors, the server log's tail if it raised,
    ``<out>/<name>.json``, and a FAIL line (exit code 1) or an OK line (0)."""
    if error_samples:
        print("first errors:", *error_samples, sep="\n  ")
    if "Traceback" in server_log:
        print("--- replay server log (tail) ---\n" + server_log[-2000:])
    out = Path(args.out) if args.out else ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if reasons:
        print("FAIL: " + "; ".join(reasons))
        return 1
    print(f"OK: {ok}")
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


# -- mode `stack`: the whole stack through `dqn train` ----------------------------------
RAY_DAEMONS = ("gcs_server", "raylet")
# What each process of the stack is; ``actor`` and ``ray`` get numbered or summed.
STACK_ROLES = ("launcher", "replay", "learner", "actor")


def _role(proc, launcher_pid: int) -> str:
    """Which part of the stack a descendant of the `dqn train` launcher is."""
    if proc.pid == launcher_pid:
        return "launcher"
    cmd = proc.cmdline()
    if "deploy.cli" in cmd and "replay-server" in cmd:
        return "replay"
    if "deploy.cli" in cmd and "learner" in cmd:
        return "learner"
    text = " ".join(cmd)
    if "_RayActor" in text:  # a Ray actor's process title
        return "actor"
    if "multiprocessing" in text:  # --actors.runner process: spawned actor processes
        return "other" if "resource_tracker" in text else "actor"
    return "ray" if proc.name() in RAY_DAEMONS or "ray" in text else "other"


class _StackProcesses:
    """RSS per process of a running `dqn train` tree, by role; a role whose pid changes
    (a restarted part) is reported, since a soak must see the same processes throughout."""

    def __init__(self, launcher_pid: int):
        import psutil

        self._psutil = psutil
        self.launcher = psutil.Process(launcher_pid)
        self.pids: dict[str, int] = {}  # label -> pid
        self.restarts: list[str] = []
        self.seen: dict[int, object] = {}  # every process of the tree ever sampled

    def sample(self) -> dict[str, int]:
        """{label: rss bytes}: launcher, replay, learner, actor-1.., ray (daemons, summed)."""
        psutil = self._psutil
        rows: dict[str, int] = {}
        actors: list[tuple[float, int, int]] = []
        try:
            procs = [self.launcher, *self.launcher.children(recursive=True)]
        except psutil.Error:
            return rows
        for p in procs:
            self.seen.setdefault(p.pid, p)
            try:
                role, rss, created = (
                    _role(p, self.launcher.pid),
                    p.memory_info().rss,
                    p.create_time(),
                )
            except psutil.Error:  # exited meanwhile
                continue
            if role == "actor":
                actors.append((created, p.pid, rss))
            elif role in ("ray", "other"):
                rows[role] = rows.get(role, 0) + rss
            else:
                rows[role] = rss
                self._track(role, p.pid)
        for i, (_, pid, rss) in enumerate(sorted(actors), 1):  # numbered by start time
            rows[f"actor-{i}"] = rss
            self._track(f"actor-{i}", pid)
        return rows

    def _track(self, label: str, pid: int) -> None:
        old = self.pids.setdefault(label, pid)
        if old != pid:
            self.restarts.append(f"{label}: pid {old} -> {pid}")
            self.pids[label] = pid


class _RunDirWatch:
    """Counts what the stack has done, from the files it leaves in its run dir:
    evaluations (records in metrics.jsonl), redraws of learning_curve.png and learner and
    replay checkpoints (new mtimes; polled, so redraws faster than the polling count as
    fewer: a lower bound)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.evals = 0
        self.plots = self.checkpoints = self.replay_checkpoints = 0
        self._offset = 0
        self._partial = b""
        self._mtimes: dict[str, int] = {}

    def _changed(self, rel: str) -> bool:
        try:
            mtime = (self.run_dir / rel).stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if self._mtimes.get(rel) == mtime:
            return False
        self._mtimes[rel] = mtime
        return True

    def poll(self) -> None:
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                self.evals += bool(line.strip()) and json.loads(line).get("kind") == "eval"
        self.plots += self._changed("learning_curve.png")
        self.checkpoints += self._changed("checkpoints/learner.pt")
        self.replay_checkpoints += self._changed("checkpoints/replay.npz")

    def counts(self) -> dict[str, int]:
        return {
            "evals": self.evals,
            "plots": self.plots,
            "checkpoints": self.checkpoints,
            "replay_checkpoints": self.replay_checkpoints,
        }


def _stack_flags(args) -> list[str]:
    """`dqn train` flags: run until stopped, with each periodic task at the soak's pace."""
    flags = [
        "--run.stop-when-solved", "false",
        "--run.max-seconds", str(args.deadline + 600),  # the soak stops it (SIGTERM)
        "--run.max-env-steps", str(10**15),
        "--run.max-updates", str(10**15),
        "--actors.runner", args.runner,
        "--actors.num-actors", str(args.actors),
        "--actors.envs-per-actor", str(args.envs_per_actor),
        "--replay.capacity", str(args.capacity),
        "--replay.checkpoint-every-seconds", str(args.checkpoint_every),
        "--run.checkpoint-every-seconds", str(args.checkpoint_every),
        "--run.plot-every-seconds", str(args.plot_every),
        "--run.progress-every-seconds", str(args.progress_every),
        "--eval.every-versions", str(max(1, args.eval_every_updates // 10)),
        "--eval.episodes", str(args.eval_episodes),
        "--log-level", "WARNING",
    ]  # fmt: skip
    return flags + list(args.extra)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def _slope_mib_per_min(series: list[tuple[float, int]]) -> float | None:
    if len(series) < 3:
        return None
    t = np.array([s for s, _ in series])
    y = np.array([v for _, v in series], np.float64) / MiB
    if np.ptp(t) <= 0:
        return None
    return float(np.polyfit(t, y, 1)[0] * 60.0)


def stack_run(args) -> int:
    """Soak `dqn train` (replay server + learner + actors) and check RSS per process."""
    import grpc

    from dqn import rpc
    from dqn import security as security_mod
    from dqn.config import SecurityConfig
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    reasons: list[str] = []
    series: list[dict] = []  # {"t", "phase", "rss": {label: bytes}, counts...}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-soak-stack-") as tmp_name:
        run_dir = Path(tmp_name) / "run"
        log_path = Path(tmp_name) / "train.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DQN_")}  # hermetic
        cmd = [sys.executable, "-m", "deploy.cli", "train", "--run.dir", str(run_dir)]
        with open(log_path, "wb") as log_file:
            launcher = subprocess.Popen(
                [*cmd, *_stack_flags(args)],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, ended as one if need be
            )
        procs = _StackProcesses(launcher.pid)
        watch = _RunDirWatch(run_dir)
        channel = None
        warm: dict | None = None  # the sample at which warm-up ended, and its counts
        info = None
        try:
            ready = rpc.read_ready_file(
                run_dir / ".replay.ready", 120, alive=lambda: launcher.poll() is None
            )
            security = security_mod.load(SecurityConfig(token_file=str(run_dir / ".token")))
            channel = rpc.channel(ready["address"], security=security)
            stub = pb_grpc.ReplayServiceStub(channel)
            info_errors: collections.Counter[str] = collections.Counter()
            end_at: float | None = None
            while True:
                now = time.monotonic()
                if launcher.poll() is not None:
                    raise RuntimeError(f"dqn train exited early with {launcher.returncode}")
                if now - t0 > args.deadline:
                    what = "warm-up" if warm is None else "the measured window"
                    raise TimeoutError(
                        f"{what} not done within --deadline {args.deadline:g} s "
                        f"(counts {watch.counts()}, inserted {info.inserted if info else 0:,})"
                    )
                watch.poll()
                try:
                    info = stub.Info(pb.InfoRequest(episodes_after=2**63), timeout=30)
                except grpc.RpcError as exc:
                    info_errors[exc.code().name] += 1
                rss = procs.sample()
                counts = watch.counts()
                inserted = info.inserted if info is not None else 0
                row = {
                    "t": round(now - t0, 2),
                    "phase": "warm-up" if warm is None else "measured",
                    "rss": rss,
                    "inserted": inserted,
                    **counts,
                }
                series.append(row)
                if warm is None:
                    actors = sum(k.startswith("actor-") for k in rss)
                    if (
                        "learner" in rss
                        and actors >= args.actors
                        and inserted >= args.capacity  # the ring has been written through
                        and counts["evals"] >= args.warmup_evals
                        and counts["plots"] >= args.warmup_plots
                        and counts["checkpoints"] >= 1
                        and counts["replay_checkpoints"] >= 1
                        and now - t0 >= args.warmup_seconds
                    ):
                        warm = {"index": len(series) - 1, "t": now, **counts, "inserted": inserted}
                        row["phase"] = "measured"
                        if args.seconds is not None:
                            end_at = now + args.seconds
                        print(
                            f"[{now - t0:6.1f}s] warmed up: {counts['evals']} evals, "
                            f"{counts['plots']} plots, {counts['checkpoints']} checkpoints, "
                            f"{inserted:,} inserted; measuring "
                            + (
                                f"{args.seconds:g} s"
                                if args.seconds is not None
                                else f"until {args.window_evals} evals, {args.window_plots} "
                                f"plots, {args.window_checkpoints} checkpoints, the ring "
                                f"overwritten once and {args.window_samples} samples more"
                            ),
                            flush=True,
                        )
                else:
                    done = len(series) - warm["index"] > args.window_samples
                    if end_at is not None:
                        done = done and now >= end_at
                    else:
                        done = (
                            done
                            and counts["evals"] - warm["evals"] >= args.window_evals
                            and counts["plots"] - warm["plots"] >= args.window_plots
                            and counts["checkpoints"] - warm["checkpoints"]
                            >= args.window_checkpoints
                            and inserted - warm["inserted"] >= args.capacity
                        )
                    if done:
                        break
                if args.verbose:
                    print(
                        f"[{now - t0:6.1f}s] {row['phase']:8} "
                        + " ".join(f"{k} {v / MiB:.0f}" for k, v in sorted(rss.items()))
                        + f" | {counts} inserted {inserted:,}",
                        flush=True,
                    )
                time.sleep(max(0.0, args.interval - (time.monotonic() - now)))
            final = {
                "inserted": info.inserted,
                "sampled": info.sampled,
                "rejected_batches": info.rejected_batches,
                "duplicate_batches": info.duplicate_batches,
                "env_steps": info.env_steps,
                "episodes_total": info.episodes_total,
            }
            if info_errors:
                reasons.append(f"replay Info failed: {dict(info_errors)}")
        except Exception as exc:  # reported, then exit code 1
            print(f"soak failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            tail = log_path.read_text(errors="replace")[-3000:]
            print("--- dqn train log (tail) ---\n" + tail, file=sys.stderr)
            return 1
        finally:
            if channel is not None:
                channel.close()
            stopped = _stop_stack(launcher, list(procs.seen.values()), args.stop_signal)
        train_log = log_path.read_text(errors="replace")
        out = Path(args.out) if args.out else ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "soak_stack_train.log").write_text(train_log)
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None

    measured = series[warm["index"] :]
    k = max(1, min(args.edge_samples, len(measured) // 3))
    labels = sorted(
        {label for row in measured for label in row["rss"]},
        key=lambda s: (
            STACK_ROLES.index(s.split("-")[0]) if s.split("-")[0] in STACK_ROLES else 9,
            s,
        ),
    )
    table = []
    for label in labels:
        points = [(row["t"], row["rss"][label]) for row in measured if label in row["rss"]]
        values = [v for _, v in points]
        first = next((row["rss"][label] for row in series if label in row["rss"]), 0)
        warm_rss, end_rss = _median(values[:k]), _median(values[-k:])
        allowed = max(args.growth_mib * MiB, args.growth_fraction * warm_rss)
        checked = label not in ("ray", "other")
        ok = (end_rss - warm_rss) <= allowed
        table.append(
            {
                "process": label,
                "pid": procs.pids.get(label),
                "first_mb": first / MiB,
                "warm_mb": warm_rss / MiB,
                "peak_mb": max(values) / MiB,
                "end_mb": end_rss / MiB,
                "growth_mb": (end_rss - warm_rss) / MiB,
                "allowed_mb": allowed / MiB if checked else None,
                "slope_mb_per_min": _slope_mib_per_min(points),
                "ok": ok if checked else None,
            }
        )
        if checked and not ok:
            reasons.append(
                f"{label} RSS grew {(end_rss - warm_rss) / MiB:.1f} MiB after warm-up "
                f"({warm_rss / MiB:.1f} -> {end_rss / MiB:.1f}), more than {allowed / MiB:.1f}"
            )
    for role in ("replay", "learner"):
        if role not in labels:
            reasons.append(f"no {role} process seen")
    if not any(label.startswith("actor-") for label in labels):
        reasons.append("no actor process seen")
    if procs.restarts:
        reasons.append("parts restarted: " + "; ".join(procs.restarts))
    if stopped["launcher_killed"]:
        reasons.append(f"dqn train did not exit within 180 s of --stop-signal {args.stop_signal}")
    if stopped["left"]:
        reasons.append(f"processes left after dqn train ended: {stopped['left']}")
    if final["rejected_batches"]:
        reasons.append(f"replay rejected {final['rejected_batches']} batches")
    if "Traceback" in train_log:
        reasons.append("a traceback in the dqn train log")
    notes = []
    if summary is None:  # the launcher gives the learner 60 s to finish after SIGTERM
        notes.append("no summary.json after the stop signal")
    elif summary.get("stop_reason") != "stopped":
        reasons.append(f"run ended by {summary.get('stop_reason')!r}, not by the soak")

    last = measured[-1]
    result = {
        "mode": "stack",
        "runner": args.runner,
        "actors": args.actors,
        "envs_per_actor": args.envs_per_actor,
        "capacity": args.capacity,
        "cadence_s": {
            "plot": args.plot_every,
            "checkpoint": args.checkpoint_every,
            "progress": args.progress_every,
        },
        "eval_every_updates": args.eval_every_updates,
        "tolerance": {"growth_mib": args.growth_mib, "growth_fraction": args.growth_fraction},
        "warmup_at_s": round(warm["t"] - t0, 1),
        "measured_s": round(last["t"] - measured[0]["t"], 1),
        "window": {
            key: last[key] - measured[0][key]
            for key in ("evals", "plots", "checkpoints", "replay_checkpoints", "inserted")
        },
        "replay_info": final,
        "stop": stopped,
        "summary": summary,
        "processes": table,
        "series": [
            {**row, "rss": {k2: round(v / MiB, 1) for k2, v in row["rss"].items()}}
            for row in series
        ],
        "notes": notes,
        "ok": not reasons,
        "why_not_ok": reasons,
    }
    _print_stack_table(result)
    info_line = ", ".join(f"{k} {v:,}" for k, v in final.items())
    print(
        f"replay Info at the end: {info_line}\ndqn train exited {stopped['launcher_exit_code']} "
        f"{stopped['launcher_stop_s']:.1f} s after --stop-signal {args.stop_signal}"
        + (f", stop_reason {summary['stop_reason']!r}" if summary else "")
    )
    for note in notes:
        print(f"note: {note}")
    if "Traceback" in train_log:
        print("--- dqn train log (tail) ---\n" + train_log[-3000:])
    (out / "soak_stack.json").write_text(json.dumps(result, indent=2) + "\n")
    if reasons:
        print("FAIL: " + "; ".join(reasons))
        return 1
    print(
        f"OK: every process's RSS within max({args.growth_mib:g} MiB, "
        f"{args.growth_fraction:.0%}) of its RSS after warm-up"
    )
    return 0


def _stop_stack(launcher: subprocess.Popen, seen: list, how: str = "term") -> dict:
    """Stop the launcher as ``how`` says: ``term``, SIGTERM to it (what a service
    manager sends), or ``int-group``, SIGINT to its process group (Ctrl-C in a
    terminal); it stops the learner, fleet, Ray and replay server itself. Wait; then end
    by PID whatever it started that is left (every process of its tree the soak sampled,
    and its process group). Returns how long the launcher took, its exit code, and what
    was left ("pid name status")."""
    import psutil

    t0 = time.monotonic()

    group = {p.pid: p for p in seen if p.pid != launcher.pid}
    with contextlib.suppress(psutil.Error):
        for p in psutil.process_iter():
            if _same_group(p, launcher.pid):
                group.setdefault(p.pid, p)
    killed = False
    if launcher.poll() is None:
        if how == "int-group":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGINT)
        else:
            launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(180)
        except subprocess.TimeoutExpired:
            killed = True
            launcher.kill()
            launcher.wait(10)
    stop_s = time.monotonic() - t0

    def gone(p) -> bool:  # exited: a zombie has, only its parent has not reaped it yet
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    deadline = time.monotonic() + 30
    alive = [p for p in group.values() if not gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if not gone(p)]
    left = []
    for p in alive:
        with contextlib.suppress(psutil.Error):
            left.append(f"{p.pid} {p.name()} {p.status()}")
            p.kill()
    return {
        "launcher_exit_code": launcher.returncode,
        "launcher_stop_s": round(stop_s, 1),
        "launcher_killed": killed,
        "left": left,
    }


def _same_group(proc, pgid: int) -> bool:
    try:
        return proc.pid != pgid and os.getpgid(proc.pid) == pgid
    except (ProcessLookupError, PermissionError):
        return False


def _print_stack_table(r: dict) -> None:
    from bench.common import print_table

    w = r["window"]
    print_table(
        f"soak of the whole stack ({r['runner']} runner, {r['actors']} actors x "
        f"{r['envs_per_actor']} envs, capacity {r['capacity']:,}): warmed up at "
        f"{r['warmup_at_s']:.0f} s, then {r['measured_s']:.0f} s measured with {w['evals']} "
        f"evals, {w['plots']} plot redraws, {w['checkpoints']} learner and "
        f"{w['replay_checkpoints']} replay checkpoints, {w['inserted']:,} transitions inserted",
        ["process", "pid", "first MiB", "warm MiB", "peak MiB", "end MiB", "growth", "allowed",
         "MiB/min", "ok"],
        [
            [
                p["process"], str(p["pid"] or "-"), p["first_mb"], p["warm_mb"],
                p["peak_mb"], p["end_mb"], p["growth_mb"], p["allowed_mb"],
                p["slope_mb_per_min"],
                {True: "yes", False: "NO", None: "-"}[p["ok"]],
            ]
            for p in r["processes"]
        ],
    )  # fmt: skip


# -- mode `churn`: many distinct actor ids against the replay server ---------------------
def _churn_batch(actor_id: int, rng: np.random.Generator, rows: int):
    """One PushRequest of ``rows`` valid CartPole-shaped transitions from ``actor_id``
    (a new life: random incarnation, sequence 1), encoded with the shipped codec."""
    from bench.common import random_columns
    from dqn import codec
    from dqn.v1 import replay_pb2 as pb

    request = pb.PushRequest()
    batch = request.batch
    for name, column in random_columns(rows, rng).items():
        codec.encode(column, getattr(batch, name))
    batch.actor_id = actor_id
    batch.incarnation = int(rng.integers(1, 2**62))
    batch.sequence = 1
    batch.actor_env_steps = rows
    batch.epsilon = 0.1
    return request


def churn_run(args) -> int:
    """Push from ``--actor-ids`` distinct actor ids, ``--ids-per-call`` per Push stream,
    calling Info and sampling the server's RSS every ``--info-every`` ids."""
    import grpc
    import psutil

    from dqn import rpc
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    rng = np.random.default_rng(args.seed)
    template = _churn_batch(1, rng, args.rows)
    push_errors: collections.Counter[str] = collections.Counter()
    info_errors: collections.Counter[str] = collections.Counter()
    samples: list[str] = []
    series: list[dict] = []
    accepted = duplicates = 0
    reasons: list[str] = []
    first_info_error_at = None
    with tempfile.TemporaryDirectory(prefix="bench-soak-churn-") as tmp_name:
        tmp = Path(tmp_name)
        replay = None
        try:
            replay = ReplayServerProcess(
                tmp,
                "--replay.capacity", str(args.capacity),
                "--replay.min-size", "1",
                "--replay.metrics-port", "-1",
            )  # fmt: skip
            server = psutil.Process(replay.proc.pid)
            channel = rpc.channel(replay.address, args.max_message_mb)
            stub = pb_grpc.ReplayServiceStub(channel)
            grpc.channel_ready_future(channel).result(timeout=60)

            def requests(first: int, last: int):
                for actor_id in range(first, last):
                    request = pb.PushRequest()
                    request.CopyFrom(template)
                    request.batch.actor_id = actor_id
                    request.batch.incarnation = int(rng.integers(1, 2**62))
                    yield request

            def probe(ids: int, t: float) -> None:
                nonlocal first_info_error_at
                row = {"ids": ids, "t": round(t, 2), "rss_mb": server.memory_info().rss / MiB}
                try:
                    reply = stub.Info(pb.InfoRequest(episodes_after=2**63), timeout=30)
                    row.update(
                        info="OK",
                        info_bytes=reply.ByteSize(),
                        actors_listed=len(reply.actors),
                        actors_expired=getattr(reply, "actors_expired", None),
                        inserted=reply.inserted,
                    )
                except grpc.RpcError as exc:
                    info_errors[exc.code().name] += 1
                    row["info"] = exc.code().name
                    if first_info_error_at is None:
                        first_info_error_at = ids
                        samples.append(f"Info at {ids:,} ids: {exc.code().name}: {exc.details()}")
                series.append(row)
                if args.verbose:
                    print(row, flush=True)

            start = time.monotonic()
            probe(0, 0.0)
            next_id = 1
            while next_id <= args.actor_ids:
                last = min(args.actor_ids + 1, next_id + args.ids_per_call)
                try:
                    reply = stub.Push(requests(next_id, last), timeout=args.call_timeout)
                    accepted += reply.accepted_batches
                    duplicates += reply.duplicate_batches
                except grpc.RpcError as exc:
                    push_errors[exc.code().name] += 1
                    if len(samples) < 5:
                        samples.append(f"Push ids {next_id:,}..{last - 1:,}: {exc.code().name}: "
                                       f"{exc.details()}")  # fmt: skip
                pushed = last - 1
                if (
                    pushed // args.info_every > (next_id - 1) // args.info_every
                    or last > args.actor_ids
                ):
                    probe(pushed, time.monotonic() - start)
                next_id = last
            elapsed = time.monotonic() - start
            channel.close()
        except Exception as exc:  # reported, then exit code 1
            print(f"churn failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if replay is not None:
                tail = replay.log.read_text(errors="replace")[-3000:]
                print("--- replay server log (tail) ---\n" + tail, file=sys.stderr)
            return 1
        finally:
            if replay is not None:
                replay.stop()
        server_log = replay.log.read_text(errors="replace")

    # RSS after warm-up: at the first probe past --warmup-ids (the server's per-actor
    # bookkeeping, if bounded, is full by then), against the end.
    warm = next((r for r in series if r["ids"] >= args.warmup_ids), series[-1])
    end = series[-1]
    growth = end["rss_mb"] - warm["rss_mb"]
    if push_errors:
        reasons.append(f"Push errors by status: {dict(push_errors)}")
    if info_errors:
        reasons.append(
            f"Info errors by status: {dict(info_errors)} (first at {first_info_error_at:,} ids)"
        )
    if accepted != args.actor_ids:
        reasons.append(f"{accepted:,} of {args.actor_ids:,} batches accepted")
    if growth > args.rss_growth_mib:
        reasons.append(
            f"server RSS grew {growth:.1f} MiB from {warm['ids']:,} to {end['ids']:,} ids "
            f"({warm['rss_mb']:.1f} -> {end['rss_mb']:.1f}), more than {args.rss_growth_mib:g}"
        )
    result = {
        "mode": "churn",
        "actor_ids": args.actor_ids,
        "rows_per_batch": args.rows,
        "ids_per_call": args.ids_per_call,
        "capacity": args.capacity,
        "seconds": elapsed,
        "accepted_batches": accepted,
        "duplicate_batches": duplicates,
        "push_errors": dict(push_errors),
        "info_errors": dict(info_errors),
        "first_info_error_at_ids": first_info_error_at,
        "error_samples": samples,
        "rss_mb": {"start": series[0]["rss_mb"], "warm": warm["rss_mb"], "end": end["rss_mb"]},
        "warm_at_ids": warm["ids"],
        "series": series,
        "ok": not reasons,
        "why_not_ok": reasons,
    }
    from bench.common import print_table

    step = max(1, len(series) // 12)
    shown = series[::step] + ([series[-1]] if (len(series) - 1) % step else [])
    print_table(
        f"churn: {args.actor_ids:,} distinct actor ids x {args.rows} row(s), "
        f"{args.ids_per_call:,} per Push stream, in {elapsed:.1f} s",
        ["actor ids", "server RSS MiB", "Info", "Info bytes", "actors listed", "expired"],
        [
            [r["ids"], r["rss_mb"], r["info"], r.get("info_bytes"), r.get("actors_listed"),
             r.get("actors_expired")]
            for r in shown
        ],
    )  # fmt: skip
    print(
        f"accepted {accepted:,} batches, {duplicates:,} duplicates; Push errors "
        f"{dict(push_errors) or 'none'}; Info errors {dict(info_errors) or 'none'}; server RSS "
        f"{series[0]['rss_mb']:.1f} -> {warm['rss_mb']:.1f} (at {warm['ids']:,} ids) -> "
        f"{end['rss_mb']:.1f} MiB"
    )
    return _verdict(
        args,
        "soak_churn",
        result,
        reasons,
        samples,
        server_log,
        f"no errors, server RSS within {args.rss_growth_mib:g} MiB after warm-up",
    )


MODES = ("stack", "replay", "churn")


def _stack_parser(sub) -> None:
    p = sub.add_parser("stack", help="the whole stack through dqn train (default mode)")
    long = p.add_mutually_exclusive_group()
    long.add_argument("--minutes", type=float, default=None, help="measure this long after warm-up")
    long.add_argument("--seconds", type=float, default=None, help="the same, in seconds")
    p.add_argument(
        "--quick",
        action="store_true",
        help="the CI form: a fast cadence, process actors, a 20k ring (with --minutes or "
        "--seconds: that cadence for that long)",
    )
    p.add_argument("--runner", choices=("ray", "process"), default=None, help="default ray")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--envs-per-actor", type=int, default=None, help="default 8 (quick 4)")
    p.add_argument("--capacity", type=int, default=None, help="replay ring (100k; quick 20k)")
    p.add_argument("--interval", type=float, default=None, help="seconds between samples (2)")
    p.add_argument("--plot-every", type=float, default=None, help="curve redraw s (15; quick 0.5)")
    p.add_argument("--checkpoint-every", type=float, default=None, help="s (10; quick 2)")
    p.add_argument("--progress-every", type=float, default=None, help="s (2; quick 1)")
    p.add_argument("--eval-every-updates", type=int, default=None, help="(250; quick 100)")
    p.add_argument("--eval-episodes", type=int, default=None, help="per eval (20; quick 5)")
    p.add_argument("--warmup-seconds", type=float, default=None, help="at least (60; quick 0)")
    p.add_argument("--warmup-evals", type=int, default=3)
    p.add_argument("--warmup-plots", type=int, default=2)
    p.add_argument("--window-evals", type=int, default=None, help="count-bounded window (10)")
    p.add_argument("--window-plots", type=int, default=None, help="count-bounded window (25)")
    p.add_argument("--window-checkpoints", type=int, default=None, help="(5)")
    p.add_argument("--window-samples", type=int, default=None, help="RSS samples at least (30)")
    p.add_argument("--edge-samples", type=int, default=5, help="samples per warm/end median")
    p.add_argument(
        "--growth-mib",
        type=float,
        default=16.0,
        help="allowed RSS growth per process after warm-up, MiB (or --growth-fraction)",
    )
    p.add_argument("--growth-fraction", type=float, default=0.04, help="of its warm RSS")
    p.add_argument("--deadline", type=float, default=None, help="give up after this many s")
    p.add_argument(
        "--stop-signal",
        choices=("term", "int-group"),
        default="term",
        help="how the soak ends dqn train: SIGTERM to it (a service manager), or SIGINT "
        "to its process group (Ctrl-C)",
    )
    p.add_argument("--out", default=None, help="result dir (default bench/results)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every sample")
    p.add_argument("extra", nargs="*", help="more `dqn train` flags (after --)")


def _resolve_stack(args, error) -> None:
    """Fill the defaults that depend on --quick and on the long mode."""
    quick = args.quick
    if args.minutes is not None:
        args.seconds = args.minutes * 60.0
    if args.seconds is not None and args.seconds <= 0:
        error("--minutes/--seconds must be positive")
    defaults = {
        "runner": "process" if quick else "ray",
        "envs_per_actor": 4 if quick else 8,
        "capacity": 20_000 if quick else 100_000,
        "interval": 0.5 if quick else 2.0,
        "plot_every": 0.5 if quick else 15.0,
        "checkpoint_every": 2.0 if quick else 10.0,
        "progress_every": 1.0 if quick else 2.0,
        "eval_every_updates": 100 if quick else 250,
        "eval_episodes": 5 if quick else 20,
        "warmup_seconds": 0.0 if quick else 60.0,
        "window_evals": 10,
        "window_plots": 25,
        "window_checkpoints": 5,
        "window_samples": 30,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.deadline is None:
        args.deadline = (args.seconds or 0.0) + args.warmup_seconds + (300 if quick else 900)


def _replay_parser(sub) -> None:
    p = sub.add_parser("replay", help="the replay server under pushers and a sampler")
    p.add_argument("--seconds", type=float, default=60, help="load duration")
    p.add_argument("--pushers", type=int, default=32, help="pusher processes")
    p.add_argument("--batch", type=int, default=256, help="transitions per Push")
    p.add_argument("--sample-batch-size", type=int, default=128)
    p.add_argument("--sample-batches", type=int, default=16, help="batches per Sample")
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--min-size", type=int, default=1_000)
    p.add_argument(
        "--samples-per-insert", type=float, default=None, help="rate limiter ratio (default off)"
    )
    p.add_argument("--spi-tolerance", type=float, default=None)
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="RSS after warm-up is taken this long after the start and after the ring "
        "has been written through once (default: 20%% of --seconds)",
    )
    p.add_argument("--rss-growth", type=float, default=1.1, help="allowed end/warm RSS")
    p.add_argument("--out", default=None, help="result dir (default bench/results)")
    p.add_argument("extra", nargs="*", help="more `dqn replay-server` flags (after --)")


def _churn_parser(sub) -> None:
    p = sub.add_parser("churn", help="many distinct actor ids against the replay server")
    p.add_argument("--actor-ids", type=int, default=100_000, help="distinct actor ids")
    p.add_argument("--rows", type=int, default=1, help="transitions per batch")
    p.add_argument("--ids-per-call", type=int, default=1_000, help="batches per Push stream")
    p.add_argument("--info-every", type=int, default=5_000, help="ids between Info calls")
    p.add_argument("--warmup-ids", type=int, default=10_000, help="RSS baseline after these")
    p.add_argument("--rss-growth-mib", type=float, default=16.0, help="allowed after warm-up")
    p.add_argument(
        "--capacity", type=int, default=5_000, help="replay ring; written through by warm-up"
    )
    p.add_argument(
        "--max-message-mb",
        type=int,
        default=MAX_MESSAGE_MB,
        help="the client channel's message limit (a client on gRPC's defaults receives 4)",
    )
    p.add_argument("--call-timeout", type=float, default=120.0, help="deadline of a Push, s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="result dir (default bench/results)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every Info probe")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="mode")
    _stack_parser(sub)
    _replay_parser(sub)
    _churn_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in MODES and argv[0] not in ("-h", "--help")):
        argv = ["stack", *argv]  # the default mode
    args = parser.parse_args(argv)
    if args.mode == "stack":
        _resolve_stack(args, parser.error)
        if args.actors < 1:
            parser.error("--actors must be >= 1")
        return stack_run(args)
    if args.mode == "churn":
        if min(args.actor_ids, args.rows, args.ids_per_call, args.info_every) < 1:
            parser.error("--actor-ids, --rows, --ids-per-call and --info-every must be >= 1")
        return churn_run(args)
    if args.seconds <= 0 or args.pushers < 1 or args.batch < 1:
        parser.error("--seconds, --pushers and --batch must be positive")
    if args.samples_per_insert is not None and args.spi_tolerance is None:
        parser.error("--samples-per-insert needs --spi-tolerance")
    return replay_run(args)


if __name__ == "__main__":
    sys.exit(main())
