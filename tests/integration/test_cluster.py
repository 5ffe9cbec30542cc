"""The compose topology as plain processes on loopback: a Ray head, worker nodes joined
with ``ray start --address``, the replay server, the learner and the fleet driver.

The fleet follows the cluster (``--num-actors auto``) as a worker joins and leaves,
``dqn actors scale`` resizes it by hand, and through all of it the learner and the
replay server keep their processes and training goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from dqn import rpc
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from tests.integration._train import ROOT, start_dqn

pytestmark = pytest.mark.integration

NODE_IP = "127.0.0.2"  # Ray rewrites 127.0.0.1 in cluster mode; see deploy/ray_node.py


def _free_port() -> int:
    from deploy.ray_node import free_port

    return free_port("127.0.0.1")


class Cluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="dqnray"))  # short: unix socket paths
        self.gcs_port = _free_port()
        self.client_port = _free_port()

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def ray_node(self, name: str, *args: str) -> subprocess.Popen:
        return self.start(
            name,
            [
                sys.executable,
                "-m",
                "deploy.ray_node",
                *args,
                f"--node-ip={NODE_IP}",
                f"--temp-dir={self.ray_tmp / name}",
            ],
        )

    def dqn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = start_dqn(*args, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def replay_and_learner(self, run_dir: Path, *learner_flags: str) -> tuple[str, str]:
        """Start ``dqn replay-server`` and ``dqn learner``; their gRPC addresses."""
        replay = self.dqn("replay", "replay-server", "--ready-file", str(self.tmp / "replay.json"))
        replay_addr = rpc.read_ready_file(self.tmp / "replay.json", 60, _alive(replay))["address"]
        learner = self.dqn(
            "learner",
            "learner",
            "--replay-address",
            replay_addr,
            "--ready-file",
            str(self.tmp / "learner.json"),
            "--run-dir",
            str(run_dir),
            "--run.stop-when-solved",
            "false",
            # Budgets far beyond the test's waits: the default 2M env steps or 600 s
            # would end the learner mid-test on a machine 3x faster or slower.
            "--max-seconds",
            "3600",
            "--max-env-steps",
            "1000000000",
            *learner_flags,
        )
        info = rpc.read_ready_file(self.tmp / "learner.json", 60, _alive(learner))
        return replay_addr, info["address"]

    def stop(self, name: str, timeout: float = 30) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def close(self) -> None:
        # Fleet driver first (it kills its actors), then learner, replay, workers, head.
        for name in (
            [n for n in ("actors", "learner", "replay") if n in self.procs]
            + sorted((n for n in self.procs if n.startswith("worker")), reverse=True)
            + [n for n in ("head",) if n in self.procs]
        ):
            self.stop(name)
        # Anything left of the Ray sessions (raylets, gcs) lives under our temp dir.
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.ray_tmp) in a for a in p.info["cmdline"] or []):
                    p.kill()
            except psutil.Error:
                pass
        # Keep Ray's error logs (its temp dir is short-lived: unix socket paths).
        for err in self.ray_tmp.glob("*/session_*/logs/*.err"):
            if err.stat().st_size:
                dest = self.tmp / "ray-logs" / err.parts[-4]
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(err, dest / err.name)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def _wait(what: str, predicate, timeout: float, cluster: Cluster, logs=("actors",)):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(1.0)
    dump = "\n".join(f"--- {n}.log ---\n{cluster.log(n)}" for n in logs)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{dump}")


def _alive(proc: subprocess.Popen):
    return lambda: proc.poll() is None


def _fleet(address: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "actors", *args, "--fleet-address", address, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _info(stub) -> pb.InfoResponse:
    return stub.Info(pb.InfoRequest(), timeout=10)


def _evals(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line being written
        if rec.get("kind") == "eval":
            out.append(rec["mean"])
    return out


@pytest.mark.timeout(1200)  # 132 s on the loaded 2-core dev box; CI may be 3x slower
def test_fleet_follows_workers_and_scales_while_training_goes_on(tmp_path):
    c = Cluster(tmp_path)
    run_dir = tmp_path / "run"
    try:
        c.ray_node("head", "head", f"--port={c.gcs_port}", f"--client-port={c.client_port}")
        c.ray_node("worker1", "worker", f"--address={NODE_IP}:{c.gcs_port}", "--num-cpus=1")
        replay_addr, weights_addr = c.replay_and_learner(run_dir, "--eval.every-versions", "50")
        c.dqn(
            "actors",
            "actors",
            "--replay-address",
            replay_addr,
            "--weights-address",
            weights_addr,
            "--ray-address",
            f"ray://{NODE_IP}:{c.client_port}",
            "--num-actors",
            "auto",
            "--actors.cpus-per-actor",
            "1",
            "--ready-file",
            str(tmp_path / "fleet.json"),
        )
        fleet = rpc.read_ready_file(tmp_path / "fleet.json", 120, _alive(c.procs["actors"]))
        fleet_addr = fleet["address"]
        pids = {name: c.procs[name].pid for name in ("replay", "learner")}
        channel = rpc.channel(replay_addr)
        stub = pb_grpc.ReplayServiceStub(channel)

        def pushing_actors(min_steps_after: dict[int, int] | None = None) -> set[int]:
            info = _info(stub)
            return {
                a.actor_id
                for a in info.actors
                if a.env_steps > (min_steps_after or {}).get(a.actor_id, -1)
            }

        # One worker with one CPU: auto gives one actor, and it feeds the replay server.
        st = _wait(
            "1 live actor on 1 CPU",
            lambda: (s := _fleet(fleet_addr, "status"))["alive"] == 1 and s,
            120,
            c,
        )
        assert st["auto"] and st["target"] == 1 and st["clusterCpus"] == 1
        _wait("transitions flowing", lambda: _info(stub).inserted > 1_000, 120, c)

        # A second worker joins: the fleet grows to 2 without touching learner or replay.
        c.ray_node("worker2", "worker", f"--address={NODE_IP}:{c.gcs_port}", "--num-cpus=1")
        st = _wait(
            "2 live actors after a worker joined",
            lambda: (s := _fleet(fleet_addr, "status"))["alive"] == 2 and s,
            120,
            c,
            logs=("actors", "worker2"),
        )
        assert st["target"] == 2
        nodes = {a["node"] for a in st["actor"]}
        assert len(nodes) == 2, f"actors not spread across the two workers: {st}"
        before = {a.actor_id: a.env_steps for a in _info(stub).actors}
        _wait("both actors pushing", lambda: len(pushing_actors(before)) >= 2, 60, c)

        # By hand: shrink to 1, then back to following the cluster.
        st = _fleet(fleet_addr, "scale", "1")
        assert st["target"] == 1 and st["actors"] == 1 and not st["auto"]
        st = _fleet(fleet_addr, "scale", "auto")
        assert st["auto"]
        _wait("2 actors again", lambda: _fleet(fleet_addr, "status")["alive"] == 2, 120, c)

        # The second worker leaves: the fleet shrinks back to what the cluster holds.
        c.stop("worker2")
        st = _wait(
            "fleet shrunk after a worker left",
            lambda: (s := _fleet(fleet_addr, "status"))["target"] == 1 and s["alive"] == 1 and s,
            120,
            c,
        )

        # Bad requests get a precise error and change nothing.
        bad = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "actors", "scale", "5000", "--fleet-address",
             fleet_addr],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr and "actors" in bad.stderr
        assert _fleet(fleet_addr, "status")["target"] == 1

        # Training went on throughout: same learner and replay processes, evaluations
        # far above a random policy's ~22 on CartPole.
        inserted = _info(stub).inserted
        _wait("more transitions", lambda: _info(stub).inserted > inserted + 1_000, 60, c)
        _wait(
            "greedy evaluation >= 150",
            lambda: max(_evals(run_dir), default=0) >= 150,
            240,
            c,
            logs=("learner", "actors"),
        )
        for name, pid in pids.items():
            assert c.procs[name].pid == pid and c.procs[name].poll() is None, name
        channel.close()
    finally:
        c.close()


def test_process_fleet_scales_and_restarts_dead_actors(tmp_path):
    """No Ray at all (the GPU machine's case): plain actor processes, same control."""
    c = Cluster(tmp_path)
    try:
        replay_addr, weights_addr = c.replay_and_learner(tmp_path / "run")
        c.dqn(
            "actors",
            "actors",
            "--replay-address",
            replay_addr,
            "--weights-address",
            weights_addr,
            "--actors.runner",
            "process",
            "--num-actors",
            "1",
            "--actors.envs-per-actor",
            "2",
            "--ready-file",
            str(tmp_path / "fleet.json"),
        )
        fleet_addr = rpc.read_ready_file(tmp_path / "fleet.json", 60, _alive(c.procs["actors"]))[
            "address"
        ]
        channel = rpc.channel(replay_addr)
        stub = pb_grpc.ReplayServiceStub(channel)
        st = _fleet(fleet_addr, "scale", "2")
        assert st["runner"] == "process" and st["target"] == 2 and st["actors"] == 2

        def pushing() -> set[int]:
            return {a.actor_id for a in _info(stub).actors if a.env_steps > 0}

        _wait("both actors pushing", lambda: pushing() >= {0, 1}, 120, c)
        st = _fleet(fleet_addr, "status")
        victim = next(a for a in st["actor"] if a["actorId"] == 1)
        os.kill(victim["pid"], signal.SIGKILL)
        st = _wait(
            "actor 1 restarted under a new pid",
            lambda: (
                (s := _fleet(fleet_addr, "status"))["alive"] == 2
                and all(a["pid"] != victim["pid"] for a in s["actor"])
                and s
            ),
            60,
            c,
        )
        steps = {a.actor_id: a.env_steps for a in _info(stub).actors}
        _wait(
            "the restarted actor pushing again",
            lambda: any(a.actor_id == 1 and a.env_steps != steps[1] for a in _info(stub).actors),
            60,
            c,
        )
        st = _fleet(fleet_addr, "scale", "0")
        assert st["actors"] == 0
        channel.close()
    finally:
        c.close()
