"""A real Ray fleet past the old 32-thread ceiling: `dqn train` with 48 Ray actors of
one env each on fractional CPUs. Every actor must be seen acting with the learner's
weights, and then each one is seen keeping up: acting with a version the learner
published after a mark taken while training goes on (per-actor version from the
replay server's Info)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from dqn import rpc
from dqn.security import Security
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from tests.integration._train import start_dqn, summary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ACTORS = 48


def _log(tmp_path) -> str:
    return (tmp_path / "train.log").read_text(errors="replace")[-4000:]


def _info(address: str, token: str) -> pb.InfoResponse:
    with rpc.channel(address, security=Security(token=token)) as ch:
        return pb_grpc.ReplayServiceStub(ch).Info(pb.InfoRequest(), timeout=10)


def test_48_ray_actors_all_act_with_the_learners_weights(tmp_path):
    run_dir = tmp_path / "run"
    # Output to a file: a pipe nobody reads while the test polls would fill up and
    # block the launcher and the learner on their next print.
    out = open(tmp_path / "train.log", "w")  # noqa: SIM115 - closed in finally
    proc = start_dqn(
        "train",
        "--env",
        "CartPole-v1",
        "--run-dir",
        str(run_dir),
        "--num-actors",
        str(ACTORS),
        "--actors.envs-per-actor",
        "1",
        "--actors.cpus-per-actor",
        "0.04",  # 48 x 0.04 = 1.92 of the 2 CPUs a local Ray gets here (not > 2)
        "--actors.push-every",
        "8",
        "--learner.publish-every",
        "50",
        # every actor pushing freely: the fleet's freshness, not the replay ratio's pace
        "--replay.samples-per-insert",
        "0",
        "--run.stop-when-solved",
        "false",
        "--max-seconds",
        "1500",  # ended by the test once it has seen what it needs
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    t0 = time.monotonic()
    seen: dict[int, int] = {}  # actor id -> the version it acted with when first current
    try:
        ready = run_dir / ".replay.ready"
        deadline = time.monotonic() + 600  # 48 Ray workers start on 2 cores: minutes
        while not ready.exists() or not (run_dir / ".token").exists():
            assert proc.poll() is None, _log(tmp_path)
            assert time.monotonic() < deadline, "replay server never came up"
            time.sleep(0.5)
        address = json.loads(ready.read_text())["address"]
        token = (run_dir / ".token").read_text().strip()
        while len(seen) < ACTORS:
            assert proc.poll() is None, _log(tmp_path)
            assert time.monotonic() < deadline, (
                f"only {len(seen)} of {ACTORS} actors acted with published weights: "
                f"missing {sorted(set(range(ACTORS)) - set(seen))}"
            )
            info = _info(address, token)
            for a in info.actors:
                # Acting with the learner's weights: a version published after the
                # first, and near the newest (an actor on its initial random weights
                # would stay at the version it started with).
                if a.policy_version > 1:
                    seen.setdefault(a.actor_id, a.policy_version)
            time.sleep(1.0)
        all_current = time.monotonic() - t0
        # Training goes on meanwhile, and every actor keeps up with it: each one is
        # seen acting with a version the learner published after this point. An actor
        # stuck on old weights never gets there, however fast or slow the machine
        # (a fixed bound on the lag in versions would depend on how many versions
        # the learner publishes while 48 actors share 2 cores).
        before = _info(address, token)
        mark = before.learner_version
        deadline = time.monotonic() + 300
        while True:
            after = _info(address, token)
            behind = sorted(a.actor_id for a in after.actors if a.policy_version <= mark)
            if len(after.actors) == ACTORS and not behind:
                break
            assert proc.poll() is None, _log(tmp_path)
            assert time.monotonic() < deadline, (
                f"{len(behind)} of {ACTORS} actors never acted with a version newer than "
                f"{mark} (newest now {after.learner_version}): {behind}",
                _log(tmp_path),
            )
            time.sleep(1.0)
        newest = after.learner_version
        assert newest > mark
        assert after.inserted > before.inserted
        per_actor = {a.actor_id: newest - a.policy_version for a in after.actors}
        print(
            f"\nall {ACTORS} actors acting with published weights {all_current:.0f} s after "
            f"start, and all past version {mark} when the learner was at {newest}; "
            f"per-actor lag then max {max(per_actor.values())}, mean "
            f"{sum(per_actor.values()) / ACTORS:.2f} versions (server policy_lag "
            f"{after.policy_lag:.2f}); {after.env_steps:,} env steps"
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # the launcher stops every child itself
            try:
                proc.wait(180)
            except Exception:  # noqa: BLE001 - last resort: end the whole group
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
    s = summary(run_dir)
    assert s["actors"] == ACTORS and s["updates"] > 0
