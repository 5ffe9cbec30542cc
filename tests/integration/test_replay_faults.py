"""The `dqn replay-server` process under faults: kill -9 and restart, SIGTERM.

Each test runs the real CLI as a subprocess on 127.0.0.1 and pushes with the actors'
GrpcReplayWriter; every process started here is stopped by PID in a finally block.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from actors.replay_client import GrpcReplayWriter
from dqn import rpc
from dqn.v1 import replay_pb2 as pb
from replay_server import checkpoint
from tests.component._helpers import make_batch, replay_stub
from tests.integration._train import ROOT

pytestmark = pytest.mark.integration
ROWS = 8  # transitions per batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReplayProcess:
    """`dqn replay-server` on a fixed port with a checkpoint file; output goes to a log."""

    def __init__(self, tmp: Path, port: int, every_seconds: float):
        self.tmp, self.port, self.every = tmp, port, every_seconds
        self.ckpt = tmp / "replay.npz"
        self.log = tmp / "replay.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = self.tmp / "replay.ready"
        ready.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DQN_")}
        args = [
            *("replay-server", "--replay.host", "127.0.0.1", "--replay.port", str(self.port)),
            *("--replay.checkpoint-path", str(self.ckpt), "--replay.min-size", "1"),
            *("--replay.samples-per-insert", "0"),  # writers push, nobody samples
            *("--replay.checkpoint-every-seconds", str(self.every), "--ready-file", str(ready)),
        ]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deploy.cli", *args],
                cwd=ROOT,
                env={**env, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        rpc.read_ready_file(ready, 60, alive=lambda: self.proc.poll() is None)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def _info(address: str) -> pb.InfoResponse:
    """Info, waiting out gRPC's reconnect backoff (subchannels are shared per address)."""
    channel, stub = replay_stub(address)
    try:
        return stub.Info(pb.InfoRequest(), timeout=15.0, wait_for_ready=True)
    finally:
        channel.close()


def _wait_for(predicate, timeout: float, what: str, output=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{output()}"
        time.sleep(0.05)


def _checkpoint_size(path: Path) -> int:
    return checkpoint.load(path).size if path.exists() else 0


def test_kill_9_restart_restores_checkpoint_and_writer_carries_on(tmp_path):
    server = ReplayProcess(tmp_path, _free_port(), every_seconds=0.5)
    writer = None
    try:
        server.start()
        writer = GrpcReplayWriter(server.address)
        seq = 0

        def send(batches: int) -> None:
            nonlocal seq
            for _ in range(batches):
                seq += 1
                writer.write(make_batch(seq, seq * ROWS, ROWS))

        send(20)
        _wait_for(
            lambda: _checkpoint_size(server.ckpt) >= 10 * ROWS,
            60,
            "a checkpoint with 80 transitions",
            server.output,
        )
        saved = checkpoint.load(server.ckpt)
        server.signal(signal.SIGKILL)
        server.proc.wait(10)

        send(5)  # queued while the server is down; the writer keeps retrying
        server.start()  # same port, same checkpoint file
        restored = re.search(r"restored (\d+) transitions \((\d+) inserted", server.output())
        assert restored, server.output()
        assert int(restored[1]) >= saved.size
        assert int(restored[2]) >= saved.counters["inserted"]
        at_restart = _info(server.address)
        assert at_restart.size >= saved.size

        send(10)  # the same writer, after the restart
        _wait_for(
            lambda: any(a.last_sequence == seq for a in _info(server.address).actors),
            60,
            f"batch {seq} to arrive after the restart",
            server.output,
        )
        final = _info(server.address)
        # Batches 21..35 never reached the killed server, so each is new to the restored one.
        assert final.inserted >= int(restored[2]) + 15 * ROWS
        assert final.inserted > at_restart.inserted
        assert final.size >= saved.size + 15 * ROWS
    finally:
        if writer is not None:
            writer.close(timeout=2)
        server.cleanup()


def test_sigterm_exits_0_with_every_acknowledged_transition_checkpointed(tmp_path):
    server = ReplayProcess(tmp_path, _free_port(), every_seconds=3600)  # only the final one
    writer = None
    stop = threading.Event()
    pusher = None
    try:
        server.start()
        writer = GrpcReplayWriter(server.address)

        def push_forever() -> None:
            seq = 0
            while not stop.is_set():
                seq += 1
                writer.write(make_batch(seq, seq * ROWS, ROWS))

        pusher = threading.Thread(target=push_forever, daemon=True)
        pusher.start()
        _wait_for(lambda: writer.pushed_transitions >= 400, 60, "400 acknowledged transitions")
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)  # while the writer is still streaming
        code = server.proc.wait(10)
        took = time.monotonic() - t0
        assert code == 0, server.output()
        assert took < 5, f"SIGTERM took {took:.1f}s"
        assert "final replay checkpoint" in server.output()
    finally:
        stop.set()
        if writer is not None:
            writer.close(timeout=2)
        if pusher is not None:
            pusher.join(5)
        server.cleanup()
    acked_batches, acked = writer.pushed_batches, writer.pushed_transitions
    state = checkpoint.load(server.ckpt)
    assert state.counters["inserted"] >= acked > 0
    assert state.actors["actors"]["1"]["last_sequence"] >= acked_batches
    # One stream, acknowledged in order: batches 1..acked_batches, every row of each.
    stored = set(state.columns["obs"][:, 0].astype(int).tolist())
    expected = {seq * ROWS + k for seq in range(1, acked_batches + 1) for k in range(ROWS)}
    assert expected <= stored
