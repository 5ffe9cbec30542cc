"""A real Ray fleet past the old 32-thread ceiling: `dqn train` with 48 Ray actors of
one env each on fractional CPUs. Every actor must be seen acting with the learner's
weights, and then each one is seen keeping up, round after round: acting with a
version the learner published after a mark taken while training goes on, the slowest
actor within a few times the median one's time (per-actor version from the replay
server's Info)."""

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
ROUNDS = 3
# the slowest actor may take this many times the median actor's time to pick up a new
# version, or this many seconds (a poll is 0.5 s apart, and an Info call on 2 busy cores
# takes a while)
SLOWEST_VS_MEDIAN = 5.0
SLOWEST_FLOOR_S = 10.0


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
        # Training goes on meanwhile, and every actor keeps up with it, round after
        # round: a mark is the learner's version at some moment, and each actor is
        # timed until it acts with a newer one. A fixed bound on the lag in versions
        # would depend on how many versions the learner publishes while 48 actors
        # share 2 cores (CI's machine saw 9 against a bound of 8); the slowest actor
        # against the median one does not: a stuck or starved actor is far behind
        # the rest on any machine.
        rounds = []
        for _ in range(ROUNDS):
            before = _info(address, token)
            mark, t_mark = before.learner_version, time.monotonic()
            passed: dict[int, float] = {}
            deadline = t_mark + 300
            while len(passed) < ACTORS:
                assert proc.poll() is None, _log(tmp_path)
                after = _info(address, token)
                now = time.monotonic() - t_mark
                for a in after.actors:
                    if a.policy_version > mark:
                        passed.setdefault(a.actor_id, now)
                behind = sorted(set(range(ACTORS)) - set(passed))
                assert time.monotonic() < deadline, (
                    f"{len(behind)} of {ACTORS} actors never acted with a version newer "
                    f"than {mark} (newest now {after.learner_version}): {behind}",
                    _log(tmp_path),
                )
                if behind:
                    time.sleep(0.5)
            times = sorted(passed.values())
            median = times[len(times) // 2]
            slowest = max(passed, key=passed.get)
            assert passed[slowest] <= max(SLOWEST_FLOOR_S, SLOWEST_VS_MEDIAN * median), (
                f"actor {slowest} took {passed[slowest]:.1f} s to act with a version newer "
                f"than {mark}; the median actor {median:.1f} s",
                _log(tmp_path),
            )
            assert after.learner_version > mark and after.inserted > before.inserted
            per_actor = {a.actor_id: after.learner_version - a.policy_version for a in after.actors}
            rounds.append((median, passed[slowest], max(per_actor.values())))
        print(
            f"\nall {ACTORS} actors acting with published weights {all_current:.0f} s after "
            "start; then per round, seconds until every actor acted with a version newer "
            "than the mark (median / slowest) and the largest lag in versions then: "
            + ", ".join(f"{m:.1f} / {w:.1f} s, lag {lag}" for m, w, lag in rounds)
            + f"; {after.env_steps:,} env steps"
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
