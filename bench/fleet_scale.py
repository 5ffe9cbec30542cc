"""A fleet of simulated actors against one replay server and one weight server, on loopback.

    .venv/bin/python bench/fleet_scale.py [--counts 1 32 128 512] [--publishes 20] [--quick]

For each fleet size N, in a fresh pair of servers (both child processes, so clients and
servers share no GIL):

* the replay server is ``dqn replay-server`` (CartPole-v1 shapes, capacity 100k,
  min_size 1000, rate limiter off), prefilled to min_size; the weight server is
  :class:`learner.weight_server.WeightServer` in a small runner (this file with
  ``_serve-weights``) that publishes the real CartPole MLP's weights (perturbed each
  time) through its publisher whenever the learner side asks, and reports when;
* N simulated actors (grpc.aio, many per process, in ``--actor-processes`` processes),
  each with its own two connections, as a real actor has: one ``WatchWeights`` stream
  kept open (renewed at its deadline, after_version = the last version held, as
  ``actors/weight_client.py`` does) and one ``Push`` call per TransitionBatch of
  ``--batch`` valid transitions (per-actor actor_id, a random 63-bit incarnation and
  sequence 1, 2, ... as ``actors/adder.py`` does, the policy version held, an episode
  record every 4th batch), retried on retryable or hinted errors (the server's
  ``retry-after-ms``, else backoff) like ``actors/replay_client.py``. Each actor
  pushes every ``max(--push-interval, N / --max-fleet-batches-per-s)`` seconds, so
  the fleet's total stays within what one server ingests on 2 cores (about 780
  messages/s measured by bench/replay.py);
* one learner client (the main process, apart from the actors) loops ``Sample``
  (128 x 16, at most ``--sample-hz`` calls/s, like a learner doing ~300 updates/s)
  and ``Info``, checks gRPC health on both servers, and publishes a new weights
  version every ``--publish-every`` seconds, once every actor holds the first
  version and has had a batch accepted.

Measured: the delay from each publish until every actor holds that version or a newer
one (p50/p99/max over publishes, and over (actor, publish) pairs), ``Sample``/``Info``
latency against N = 1, health latency, errors by RPC and status code, the weight
server's longest event-loop stall per publish (``AioServer.take_loop_lag``), and the
servers' threads, RSS and CPU sampled every 0.5 s (psutil). Every wait has a deadline;
the run stops by itself. Writes bench/results/fleet_scale.json. ``run_fleet()`` is the harness
``tests/component/test_fleet_scale.py`` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import multiprocessing as mp
import os
import queue
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # spawned children re-run this as __mp_main__
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    N_ACTIONS,
    OBS_SHAPE,
    ReplayServerProcess,
    print_table,
    random_columns,
    ratio,
    write_json,
)

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class FleetSettings:
    """One fleet run. Deadlines default to the real clients' own."""

    actors: int
    publishes: int = 20  # versions published after the initial one
    publish_every_s: float = 0.5
    batch: int = 32  # transitions per TransitionBatch
    push_interval_s: float = 0.25  # per actor, unless the fleet cap below asks for longer
    max_fleet_batches_per_s: float = 256.0
    sample_batch: int = 128
    sample_batches: int = 16
    sample_hz: float = 20.0
    info_every_s: float = 0.25
    health_every_s: float = 0.2
    actor_processes: int = 0  # 0: one for a single actor, else 2
    start_timeout_s: float = 300.0  # for each server to be up (child processes)
    warmup_timeout_s: float = 60.0  # for every actor to hold the initial version
    settle_timeout_s: float = 60.0  # after the last publish, for every actor to hold it
    push_deadline_s: float = 30.0  # actors/replay_client.py
    watch_deadline_s: float = 60.0  # actors/weight_client.py STREAM_DEADLINE_S
    sample_deadline_s: float = 10.0  # learner/sampler.py
    info_deadline_s: float = 2.0  # learner/main.py
    health_deadline_s: float = 5.0
    capacity: int = 100_000
    min_size: int = 1_000
    resource_every_s: float = 0.5
    seed: int = 0

    @property
    def push_interval(self) -> float:
        return max(self.push_interval_s, self.actors / self.max_fleet_batches_per_s)

    @property
    def processes(self) -> int:
        wanted = self.actor_processes or (1 if self.actors == 1 else 2)
        return max(1, min(wanted, self.actors))


# -- shared client bits --------------------------------------------------------------------
def _aio_channel(address: str, own_connection: bool = True):
    """A grpc.aio channel with the project's channel options; by default on a TCP
    connection of its own (gRPC would otherwise share one between equal channels)."""
    import grpc

    from dqn import rpc

    options = rpc.channel_options(64)
    if own_connection:
        options = [*options, ("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.insecure_channel(address, options=options)


def _code(exc) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    return code.name if code is not None else type(exc).__name__


def _hint(exc) -> float | None:
    """The server's retry-after hint in seconds (``dqn.rpc.retry_after``), if any."""
    from dqn import rpc

    hint = getattr(rpc, "retry_after", None)
    return hint(exc) if hint is not None else None


def _retry_delay(exc, backoff) -> float:
    """The hint when the server gave one, else the next backoff step."""
    seconds = _hint(exc)
    return seconds if seconds is not None else backoff.next()


class Errors:
    """Counts failures by (rpc, status code name)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.examples: dict[str, str] = {}  # "rpc code" -> the first one's details

    def add(self, rpc_name: str, exc) -> None:
        key = (rpc_name, _code(exc))
        self.counts[key] += 1
        if self.counts[key] == 1:
            details = exc.details() if hasattr(exc, "details") else str(exc)
            self.examples[" ".join(key)] = str(details)[:200]

    def as_dict(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (name, code), n in sorted(self.counts.items()):
            out.setdefault(name, {})[code] = n
        return out


def _merge_errors(parts) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for part in parts:
        for name, codes in part.items():
            for code, n in codes.items():
                out.setdefault(name, {})[code] = out.get(name, {}).get(code, 0) + n
    return out


# -- the weight server runner (child process) ---------------------------------------------
def serve_weights_main(ready_file: str, token_file: str, seed: int) -> int:
    """A WeightServer publishing the CartPole MLP's weights on command.

    stdin ``publish`` -> perturb the weights, ``publisher.publish()``, answer one JSON
    line ``{"version", "t", "t_done", "bytes", "loop_lag_s"}`` (``t``: time.monotonic()
    before the call; ``loop_lag_s``: the server loop's longest stall since the previous
    publish, i.e. during that version's fan-out);
    ``stop`` or end of input -> stop the server and exit.
    """
    import torch

    from dqn import rpc
    from dqn import weights as weights_codec
    from dqn.config import NetworkConfig
    from dqn.networks import build_q_network
    from dqn.security import Security
    from learner.weight_server import WeightServer

    torch.manual_seed(seed)
    state = build_q_network(OBS_SHAPE, N_ACTIONS, NetworkConfig()).state_dict()
    size = weights_codec.to_proto(state, 1).ByteSize()  # one version on the wire
    security = Security(token=Path(token_file).read_text().strip())
    server = WeightServer("127.0.0.1", 0, 64, security)
    server.start()
    aio = getattr(server, "server", None)  # the AioServer: its loop's longest stall
    take_lag = getattr(aio, "take_loop_lag", lambda: None)
    rpc.write_ready_file(ready_file, address=server.address, pid=os.getpid())
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            if command != "publish":
                continue
            with torch.no_grad():
                for tensor in state.values():
                    tensor.add_(torch.randn_like(tensor), alpha=1e-3)
            t = time.monotonic()
            version = server.publisher.publish(state, updates=0, env_steps=0)
            done = time.monotonic()
            lag = take_lag()  # since the previous publish: that version's fan-out
            record = {"version": version, "t": t, "t_done": done, "bytes": size, "loop_lag_s": lag}
            print(json.dumps(record))
            sys.stdout.flush()
    finally:
        server.stop(1.0)
    return 0


class WeightServerProcess:
    """``serve_weights_main`` as a child process; ``publish()`` -> (version, t, bytes)."""

    def __init__(self, tmp: Path, token_file: Path, seed: int = 0):
        self.ready = tmp / "weights.ready"
        self.log = tmp / "weights.log"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_serve-weights",
            str(self.ready),
            str(token_file),
            str(seed),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DQN_")}
        with open(self.log, "wb") as log_file:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
        self.address: str | None = None

    def wait_ready(self, timeout: float = 120.0) -> str:
        from dqn import rpc

        try:
            info = rpc.read_ready_file(self.ready, timeout, alive=lambda: self.proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weight server did not start: {exc}\n{tail}") from None
        self.address = info["address"]
        return self.address

    def publish(self) -> dict:
        self.proc.stdin.write("publish\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weight server exited with {self.proc.poll()}:\n{tail}")
        return json.loads(line)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(timeout)
        except (BrokenPipeError, OSError):
            pass
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# -- server resources ------------------------------------------------------------------
class ResourceSampler:
    """Threads, RSS and CPU time of the server processes, every ``every`` seconds."""

    def __init__(self, pids: dict[str, int], every: float):
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._every = every
        self.t0 = time.monotonic()
        self.series: dict[str, list[dict]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="resources", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        now = time.monotonic()
        for name, proc in self._procs.items():
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    self.series[name].append(
                        {
                            "t": round(now - self.t0, 3),
                            "threads": proc.num_threads(),
                            "rss_mb": round(proc.memory_info().rss / MiB, 1),
                            "cpu_s": round(cpu.user + cpu.system, 3),
                        }
                    )
            except Exception:  # noqa: BLE001 - a server that exited just stops its series
                pass

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()

    def stop(self) -> dict[str, dict]:
        self._stop.set()
        self._thread.join(5)
        self.sample()
        out = {}
        for name, rows in self.series.items():
            if not rows:
                out[name] = {"series": []}
                continue
            span = rows[-1]["t"] - rows[0]["t"]
            out[name] = {
                "threads_min": min(r["threads"] for r in rows),
                "threads_max": max(r["threads"] for r in rows),
                "rss_mb_start": rows[0]["rss_mb"],
                "rss_mb_max": max(r["rss_mb"] for r in rows),
                "rss_mb_end": rows[-1]["rss_mb"],
                "cpu_percent": (
                    100.0 * (rows[-1]["cpu_s"] - rows[0]["cpu_s"]) / span if span > 0 else None
                ),
                "series": rows,
            }
        return out


# -- simulated actors (child processes) -----------------------------------------------------
class SimActor:
    """One actor at protocol level: a WatchWeights stream and a Push loop."""

    def __init__(self, actor_id: int, host: ActorHost):
        from dqn.v1 import replay_pb2_grpc as pb_grpc

        self.actor_id = actor_id
        self.host = host
        self.incarnation = random.getrandbits(63)
        self.sequence = 0
        self.env_steps = 0
        self.version = 0  # the newest version held
        self.received: list[tuple[int, float]] = []  # (version, time.monotonic())
        self.pushed = 0  # transitions acknowledged
        self.push_ms: list[float] = []
        self._replay_ch = _aio_channel(host.replay_address)
        self._weights_ch = _aio_channel(host.weights_address)
        self._replay = pb_grpc.ReplayServiceStub(self._replay_ch)
        self._weights = pb_grpc.WeightServiceStub(self._weights_ch)
        self._rng = np.random.default_rng(actor_id)

    async def watch(self) -> None:
        import grpc

        from dqn.retry import Backoff
        from dqn.v1 import replay_pb2 as pb

        backoff = Backoff(cap=1.0)  # as actors/weight_client.py
        s = self.host.settings
        while not self.host.stopping.is_set():
            call = self._weights.WatchWeights(
                pb.WatchWeightsRequest(after_version=self.version),
                timeout=s.watch_deadline_s,
                metadata=self.host.metadata,
            )
            try:
                async for msg in call:
                    self.received.append((msg.version, time.monotonic()))
                    self.version = max(self.version, msg.version)
                    backoff.reset()
            except grpc.RpcError as exc:
                if self.host.stopping.is_set():
                    return
                self.host.errors.add("WatchWeights", exc)
                await asyncio.sleep(_retry_delay(exc, backoff))
                continue
            await asyncio.sleep(backoff.next())

    def _batch(self):
        from dqn import codec
        from dqn.v1 import replay_pb2 as pb

        s = self.host.settings
        self.sequence += 1
        self.env_steps += s.batch
        request = pb.PushRequest()
        batch = request.batch
        batch.actor_id = self.actor_id
        batch.incarnation = self.incarnation
        batch.sequence = self.sequence
        batch.policy_version = self.version
        batch.epsilon = 0.05
        batch.actor_env_steps = self.env_steps
        for name, array in random_columns(s.batch, self._rng).items():
            codec.encode(array, getattr(batch, name))
        if self.sequence % 4 == 0:
            batch.episodes.add(actor_id=self.actor_id, episode_return=4.0 * s.batch, length=128)
        return request

    async def push_loop(self) -> None:
        import grpc

        from dqn.retry import Backoff, is_retryable

        s = self.host.settings
        interval = s.push_interval
        await asyncio.sleep(random.uniform(0, interval))  # actors do not start in step
        due = time.monotonic()
        while not self.host.stopping.is_set():
            request = self._batch()
            backoff = Backoff()  # as actors/replay_client.py
            while not self.host.stopping.is_set():
                t0 = time.monotonic()
                try:
                    reply = await self._replay.Push(
                        iter([request]), timeout=s.push_deadline_s, metadata=self.host.metadata
                    )
                except grpc.RpcError as exc:
                    if self.host.stopping.is_set():
                        return
                    self.host.errors.add("Push", exc)
                    if not is_retryable(exc) and _hint(exc) is None:
                        break
                    await asyncio.sleep(_retry_delay(exc, backoff))
                    continue
                self.push_ms.append(1e3 * (time.monotonic() - t0))
                self.pushed += reply.accepted_transitions
                break
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def close(self) -> None:
        await self._replay_ch.close(grace=None)
        await self._weights_ch.close(grace=None)

    def report(self) -> dict:
        return {
            "actor_id": self.actor_id,
            "received": self.received,
            "pushed": self.pushed,
            "batches": self.sequence,
        }


class ActorHost:
    """Many SimActors on one event loop."""

    def __init__(self, actor_ids, settings: FleetSettings, replay: str, weights: str, token: str):
        self.settings = settings
        self.replay_address, self.weights_address = replay, weights
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.errors = Errors()
        self.stopping = asyncio.Event()
        self.actors = [SimActor(i, self) for i in actor_ids]
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for actor in self.actors:
            self._tasks.append(asyncio.create_task(actor.watch()))
            self._tasks.append(asyncio.create_task(actor.push_loop()))

    def holding(self, version: int) -> int:
        return sum(actor.version >= version for actor in self.actors)

    async def wait_pushed(self, timeout: float) -> bool:
        """Wait until every actor has had a batch accepted (their first pushes are
        spread over one push interval, and a busy server's retry hint delays some)."""
        deadline = time.monotonic() + timeout
        while any(actor.pushed == 0 for actor in self.actors):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def wait_all(self, version: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.holding(version) < len(self.actors):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self) -> None:
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(a.close() for a in self.actors), return_exceptions=True)

    def report(self) -> dict:
        push_ms = [ms for a in self.actors for ms in a.push_ms]
        return {
            "actors": [a.report() for a in self.actors],
            "errors": self.errors.as_dict(),
            "error_examples": self.errors.examples,
            "push_ms": push_ms,
        }


def _next_command(commands, limit: float):
    """The orchestrator's next command; ("finish", 0, 0) if it died or said nothing."""
    deadline = time.monotonic() + limit
    parent = os.getppid()
    while time.monotonic() < deadline:
        try:
            return commands.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                break
    return ("finish", 0, 0.0)


async def _actor_host(index, actor_ids, settings, replay, weights, token, commands, results):
    host = ActorHost(actor_ids, settings, replay, weights, token)
    host.start()
    t0 = time.monotonic()
    await host.wait_all(1, settings.warmup_timeout_s)
    # ready = every actor holds the first weights and has pushed, within the one warm-up
    # time: the run measured next then sees a whole fleet, however fast this machine
    # starts it (an actor still silent then shows in the report as pushed 0)
    await host.wait_pushed(max(0.0, settings.warmup_timeout_s - (time.monotonic() - t0)))
    results.put(("ready", index, host.holding(1), time.monotonic() - t0))
    limit = settings.warmup_timeout_s + settings.publishes * settings.publish_every_s + 600
    loop = asyncio.get_running_loop()
    _, final, settle = await loop.run_in_executor(None, _next_command, commands, limit)
    if final:
        await host.wait_all(final, settle)
    await host.stop()
    results.put(("done", index, host.report()))


def actor_host_main(index, actor_ids, settings, replay, weights, token, commands, results):
    """Entry point of one actor-host process."""
    asyncio.run(_actor_host(index, actor_ids, settings, replay, weights, token, commands, results))


# -- the learner side (this process) -------------------------------------------------------
class LearnerSide:
    """Sample and Info against replay, health on both servers, publishes on a schedule."""

    def __init__(self, settings: FleetSettings, replay: str, weights: str, token: str):
        self.s = settings
        self.replay_address, self.weights_address = replay, weights
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.errors = Errors()
        self.sample_ms: list[float] = []
        self.info_ms: list[float] = []
        self.health_ms: dict[str, list[float]] = {"replay": [], "weights": []}
        self.inserted: list[tuple[float, int]] = []  # (t, Info.inserted)
        self.version = 1
        self.stopping: asyncio.Event | None = None

    async def _paced(self, every: float, call) -> None:
        due = time.monotonic()
        while not self.stopping.is_set():
            await call()
            due = max(due + every, time.monotonic() - every)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def run(self, publish, finish) -> list[dict]:
        """Loop until ``finish()`` (awaited once all publishes are out) returns."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from dqn.v1 import replay_pb2 as pb
        from dqn.v1 import replay_pb2_grpc as pb_grpc

        self.stopping = asyncio.Event()
        s = self.s
        replay_ch = _aio_channel(self.replay_address, own_connection=False)
        probe_chs = {
            "replay": _aio_channel(self.replay_address),
            "weights": _aio_channel(self.weights_address),
        }
        replay = pb_grpc.ReplayServiceStub(replay_ch)
        probes = {k: health_pb2_grpc.HealthStub(ch) for k, ch in probe_chs.items()}

        async def timed(name: str, out: list, coro):
            t0 = time.monotonic()
            try:
                reply = await coro
            except grpc.RpcError as exc:
                self.errors.add(name, exc)
                return None
            out.append(1e3 * (time.monotonic() - t0))
            return reply

        async def sample():
            request = pb.SampleRequest(
                batch_size=s.sample_batch,
                num_batches=s.sample_batches,
                timeout_ms=500,
                learner_version=self.version,
            )
            call = replay.Sample(request, timeout=s.sample_deadline_s, metadata=self.metadata)
            await timed("Sample", self.sample_ms, call)

        async def info():
            call = replay.Info(pb.InfoRequest(), timeout=s.info_deadline_s, metadata=self.metadata)
            reply = await timed("Info", self.info_ms, call)
            if reply is not None:
                self.inserted.append((time.monotonic(), reply.inserted))

        def health(name: str):
            async def check():
                call = probes[name].Check(
                    health_pb2.HealthCheckRequest(), timeout=s.health_deadline_s
                )
                await timed(f"Health/{name}", self.health_ms[name], call)

            return check

        loops = [
            asyncio.create_task(self._paced(1.0 / s.sample_hz, sample)),
            asyncio.create_task(self._paced(s.info_every_s, info)),
            asyncio.create_task(self._paced(s.health_every_s, health("replay"))),
            asyncio.create_task(self._paced(s.health_every_s, health("weights"))),
        ]
        loop = asyncio.get_running_loop()
        published = []
        try:
            due = time.monotonic()
            for _ in range(s.publishes):
                due += s.publish_every_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                record = await loop.run_in_executor(None, publish)
                self.version = record["version"]
                published.append(record)
            await loop.run_in_executor(None, finish, self.version)
        finally:
            self.stopping.set()
            await asyncio.gather(*loops, return_exceptions=True)
            await replay_ch.close(grace=None)
            for ch in probe_chs.values():
                await ch.close(grace=None)
        return published


# -- one run -------------------------------------------------------------------------------
def _prefill(address: str, token: str, n: int, actor_id: int) -> None:
    """``n`` transitions from one extra actor, so Sample has data from the start."""
    from dqn import codec, rpc
    from dqn.security import Security
    from dqn.v1 import replay_pb2 as pb
    from dqn.v1 import replay_pb2_grpc as pb_grpc

    rng = np.random.default_rng(12345)
    with rpc.channel(address, security=Security(token=token)) as ch:
        stub = pb_grpc.ReplayServiceStub(ch)
        sequence, left = 0, n
        while left > 0:
            sequence += 1
            request = pb.PushRequest()
            request.batch.actor_id = actor_id
            request.batch.incarnation = 1
            request.batch.sequence = sequence
            for name, array in random_columns(min(256, left), rng).items():
                codec.encode(array, getattr(request.batch, name))
            stub.Push(iter([request]), timeout=60.0)
            left -= 256


def _pct(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _summary(values) -> dict:
    values = list(values)
    return {
        "n": len(values),
        "p50": _pct(values, 50),
        "p99": _pct(values, 99),
        "max": float(max(values)) if values else None,
    }


def _delays(actors: list[dict], published: list[dict]) -> dict:
    """Per publish: when every actor held it (or newer); per (actor, publish) too."""
    per_pair, per_publish, missed = [], [], 0
    for record in published:
        v, t = record["version"], record["t"]
        worst = 0.0
        for actor in actors:
            got = next((tr for ver, tr in actor["received"] if ver >= v), None)
            if got is None:
                missed += 1
                worst = float("inf")
                continue
            per_pair.append(got - t)
            worst = max(worst, got - t)
        per_publish.append(worst)
    finite = [d for d in per_publish if d != float("inf")]
    return {
        "all_actors_s": {**_summary(finite), "never": len(per_publish) - len(finite)},
        "per_actor_s": _summary(per_pair),
        "missed": missed,  # (actor, publish) pairs never held, not even as a newer one
    }


def _collect(results, kind: str, count: int, timeout: float) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(got)} of {count} actor hosts sent {kind!r} in {timeout:.0f}s")
        try:
            message = results.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if message[0] == kind:
            got.append(message)
    return got


def run_fleet(settings: FleetSettings, tmp: Path | None = None) -> dict:
    """One fleet of ``settings.actors`` against fresh servers; the measured result.

    ``result["actors"]`` holds each actor's received ``[(version, t), ...]``.
    """
    with tempfile.TemporaryDirectory() as scratch:
        return _run_fleet(settings, Path(tmp or scratch))


def _run_fleet(s: FleetSettings, tmp: Path) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    token_file = tmp / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    load_before = os.getloadavg()
    weights = WeightServerProcess(tmp, token_file, s.seed)
    replay = None
    hosts: list = []
    sampler = None
    try:
        replay = ReplayServerProcess(
            tmp,
            "--replay.capacity",
            str(s.capacity),
            "--replay.min-size",
            str(s.min_size),
            "--security.token-file",
            str(token_file),
            ready_timeout=s.start_timeout_s,
        )
        weights.wait_ready(s.start_timeout_s)
        sampler = ResourceSampler(
            {"replay": replay.proc.pid, "weights": weights.proc.pid}, s.resource_every_s
        )
        _prefill(replay.address, token, s.min_size, actor_id=s.actors + 1)
        first = weights.publish()
        initial_bytes = first["bytes"]

        ctx = mp.get_context("spawn")
        commands = [ctx.Queue() for _ in range(s.processes)]
        results = ctx.Queue()
        ids = np.array_split(np.arange(s.actors), s.processes)
        t_spawn = time.monotonic()
        for i, part in enumerate(ids):
            p = ctx.Process(
                target=actor_host_main,
                args=(
                    i,
                    [int(a) for a in part],
                    s,
                    replay.address,
                    weights.address,
                    token,
                    commands[i],
                    results,
                ),
                daemon=True,
            )
            p.start()
            hosts.append(p)
        ready = _collect(results, "ready", s.processes, s.warmup_timeout_s + s.start_timeout_s)
        connected = sum(m[2] for m in ready)
        warmup_s = time.monotonic() - t_spawn

        learner = LearnerSide(s, replay.address, weights.address, token)
        finished: list = []

        def finish(final: int) -> None:
            for q in commands:
                q.put(("finish", final, s.settle_timeout_s))
            finished.extend(_collect(results, "done", s.processes, s.settle_timeout_s + 120))

        t_measure = time.monotonic()
        published = asyncio.run(learner.run(weights.publish, finish))
        measure_s = time.monotonic() - t_measure
        for p in hosts:
            p.join(30)
        resources = sampler.stop()
        sampler = None
    finally:
        if sampler is not None:
            sampler.stop()
        for p in hosts:
            if p.is_alive():
                p.kill()
                p.join(5)
        weights.stop()
        if replay is not None:
            replay.stop()

    reports = [m[2] for m in finished]
    actors = sorted((a for r in reports for a in r["actors"]), key=lambda a: a["actor_id"])
    errors = _merge_errors([learner.errors.as_dict(), *(r["errors"] for r in reports)])
    ins = learner.inserted
    ingest = (ins[-1][1] - ins[0][1]) / (ins[-1][0] - ins[0][0]) if len(ins) > 1 else None
    final = published[-1]["version"] if published else first["version"]
    return {
        "actors_n": s.actors,
        "settings": dataclasses.asdict(s),
        "push_interval_s": s.push_interval,
        "offered_transitions_per_s": s.actors * s.batch / s.push_interval,
        "ingested_transitions_per_s": ingest,
        "actor_processes": s.processes,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "warmup_s": warmup_s,
        "connected_at_warmup": connected,
        "measure_s": measure_s,
        "published": published,
        "final_version": final,
        "weights_bytes": initial_bytes,
        "bytes_per_publish": initial_bytes * s.actors,
        "delay": _delays(actors, published),
        "actors_holding_final": sum(
            1 for a in actors if a["received"] and a["received"][-1][0] == final
        ),
        "weights_loop_stall_ms": _summary(
            [1e3 * p["loop_lag_s"] for p in published if p.get("loop_lag_s") is not None]
        ),
        "sample_ms": _summary(learner.sample_ms),
        "info_ms": _summary(learner.info_ms),
        "health_ms": {k: _summary(v) for k, v in learner.health_ms.items()},
        "push_ms": _summary([ms for r in reports for ms in r["push_ms"]]),
        "errors": errors,
        "error_examples": {
            k: v
            for part in (learner.errors.examples, *(r["error_examples"] for r in reports))
            for k, v in part.items()
        },
        "servers": resources,
        "actors": actors,
    }


# -- the command ---------------------------------------------------------------------------
def _errors_text(errors: dict) -> str:
    parts = [f"{rpc}:{code}={n}" for rpc, codes in errors.items() for code, n in codes.items()]
    return " ".join(parts) if parts else "none"


def _ms_values(*seconds) -> list[float | None]:
    return [1e3 * v if v is not None else None for v in seconds]


def _vs(row: dict, base: dict | None, key: str) -> float | None:
    if base is None or not row[key]["p99"] or not base[key]["p99"]:
        return None
    return ratio(row[key]["p99"], base[key]["p99"])


def _print(rows: list[dict]) -> None:
    base = next((r for r in rows if r["actors_n"] == 1), None)
    latency = []
    for r in rows:
        every = r["delay"]["all_actors_s"]
        health = r["health_ms"]
        latency.append(
            [
                r["actors_n"],
                r["push_interval_s"],
                r["offered_transitions_per_s"],
                r["ingested_transitions_per_s"],
                *_ms_values(every["p50"], every["p99"], every["max"]),
                r["delay"]["missed"],
                r["sample_ms"]["p99"],
                _vs(r, base, "sample_ms"),
                r["info_ms"]["p99"],
                _vs(r, base, "info_ms"),
                health["replay"]["p99"],
                health["weights"]["p99"],
                max((h["max"] or 0.0) for h in health.values()),
                r["weights_loop_stall_ms"]["max"],
            ]
        )
    print_table(
        "fleet scale: publish -> every actor holds it, learner calls, health (ms)",
        ["N", "push every s", "offered tr/s", "ingested tr/s", "all-hold p50", "p99", "max",
         "missed", "Sample p99", "x N=1", "Info p99", "x N=1", "health p99 replay",
         "weights", "health max", "wt loop stall"],
        latency,
    )  # fmt: skip
    res = []
    for r in rows:
        sv = r["servers"]
        res.append(
            [
                r["actors_n"],
                *(sv["replay"].get(k) for k in ("threads_max", "rss_mb_start", "rss_mb_max")),
                sv["replay"].get("cpu_percent"),
                *(sv["weights"].get(k) for k in ("threads_max", "rss_mb_start", "rss_mb_max")),
                sv["weights"].get("cpu_percent"),
                r["bytes_per_publish"] / MiB,
                r["actors_holding_final"],
            ]
        )
    print_table(
        "fleet scale: servers (threads max, RSS MiB, CPU % of one core), broadcast volume",
        ["N", "replay thr", "RSS start", "RSS max", "CPU %", "weights thr", "RSS start",
         "RSS max", "CPU %", "MiB/publish", "hold final"],
        res,
    )  # fmt: skip
    print("errors by RPC and status:")
    for r in rows:
        print(f"  N={r['actors_n']}: {_errors_text(r['errors'])}")
        for key, details in r["error_examples"].items():
            print(f"    first {key}: {details}")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve-weights"]:
        return serve_weights_main(argv[1], argv[2], int(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 32, 128, 512])
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--publish-every", type=float, default=0.5)
    parser.add_argument("--push-interval", type=float, default=0.25)
    parser.add_argument("--max-fleet-batches-per-s", type=float, default=256.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--actor-processes", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N = 1 and 8, 3 publishes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    counts, publishes = ([1, 8], 3) if args.quick else (args.counts, args.publishes)
    rows = []
    for n in counts:
        settings = FleetSettings(
            actors=n,
            publishes=publishes,
            publish_every_s=args.publish_every,
            batch=args.batch,
            push_interval_s=args.push_interval,
            max_fleet_batches_per_s=args.max_fleet_batches_per_s,
            actor_processes=args.actor_processes,
        )
        print(
            f"N={n}: {settings.processes} actor process(es), push every "
            f"{settings.push_interval:.2f}s, {publishes} publishes ...",
            flush=True,
        )
        result = run_fleet(settings)
        result.pop("actors")
        rows.append(result)
    _print(rows)
    write_json(
        "fleet_scale",
        {"cpus": os.cpu_count(), "rows": rows},
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
