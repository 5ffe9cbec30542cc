"""SIGTERM to the learner: final outputs and checkpoint, weight streams drained, exit 0."""

from __future__ import annotations

import signal
import subprocess
import threading

import grpc
import pytest

from dqn import rpc
from dqn.security import Security
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from tests.integration._train import start_dqn, summary

pytestmark = pytest.mark.integration


def test_learner_sigterm_writes_outputs_and_drains_streams(tmp_path):
    token = "sigterm-test-token"
    env = {"DQN_AUTH_TOKEN": token}
    common = ["--env", "Probe1-v0", "--run-dir", str(tmp_path / "run")]
    procs = []
    try:
        replay = start_dqn(
            "replay-server",
            *common,
            "--ready-file",
            str(tmp_path / "r"),
            env=env,
            stderr=subprocess.STDOUT,
        )
        procs.append(replay)
        address = rpc.read_ready_file(tmp_path / "r", 60, lambda: replay.poll() is None)
        learner = start_dqn(
            "learner",
            *common,
            "--replay-address",
            address["address"],
            "--ready-file",
            str(tmp_path / "l"),
            env=env,
            stderr=subprocess.STDOUT,
        )
        procs.append(learner)
        weights = rpc.read_ready_file(tmp_path / "l", 60, lambda: learner.poll() is None)

        ended = threading.Event()
        received = []

        def watch():
            with rpc.channel(weights["address"], security=Security(token=token)) as ch:
                stream = pb_grpc.WeightServiceStub(ch).WatchWeights(
                    pb.WatchWeightsRequest(), timeout=60
                )
                try:
                    for msg in stream:
                        received.append(msg.version)
                except grpc.RpcError:
                    pass
            ended.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        while not received:  # the initial weights arrive first
            assert watcher.is_alive()
            threading.Event().wait(0.05)

        learner.send_signal(signal.SIGTERM)
        output, _ = learner.communicate(timeout=60)
        assert learner.returncode == 0, output
        assert ended.wait(10), "the weight stream was left open"
        s = summary(tmp_path / "run")
        assert s["stop_reason"] == "stopped"
        assert (tmp_path / "run" / "checkpoints" / "learner.pt").is_file()
        assert (tmp_path / "run" / "policy.safetensors").is_file()
        assert token not in output
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
