"""Other envs run by id alone through real servers; learner and replay server import
neither Ray nor gymnasium."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from actors.actor import Actor
from actors.replay_client import GrpcReplayWriter
from actors.weight_client import GrpcWeightClient
from dqn import rpc
from dqn.config import build
from dqn.envs import with_spec
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from learner.weight_server import WeightServer
from replay_server.server import ReplayServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_actor_streams_any_env_by_id(env_id):
    config = build(
        {
            "env": {"id": env_id},
            "replay": {"min_size": 10, "samples_per_insert": 0},  # nobody samples
            "actors": {"envs_per_actor": 3, "push_every": 16},
        }
    )
    replay = ReplayServer(with_spec(config))  # the spec dqn train would resolve
    replay.start()
    weights = WeightServer()
    weights.start()
    writer = GrpcReplayWriter(replay.address)
    client = GrpcWeightClient(weights.address)
    try:
        actor = Actor(config, actor_id=0, writer=writer, weight_client=client)
        weights.publisher.publish(actor.net.state_dict(), 0)
        steps = actor.run(threading.Event(), max_steps=100)
        writer.close()
        assert steps == 300
        with rpc.channel(replay.address) as ch:
            info = pb_grpc.ReplayServiceStub(ch).Info(pb.InfoRequest(), timeout=5)
        # Each finished episode costs one reset-only step that is not stored (except an
        # episode ending on the very last step), and n-step windows still open at the
        # end are not stored yet (at most n-1 per env).
        episodes = info.episodes_total
        open_max = 3 * (config.learner.n_step - 1)
        assert 300 - episodes - open_max <= info.size <= 300 - episodes + 3
        assert list(info.obs_shape) == list(actor.env.single_observation_space.shape)
        assert info.num_actions == actor.n_actions
        assert client.version == 1  # the actor picked up the published weights
        actor.close()
    finally:
        client.close()
        weights.stop()
        replay.stop()


def test_learner_and_replay_server_import_neither_ray_nor_gymnasium():
    """The learner and the replay server build no env: they run on a machine that has
    neither gymnasium nor the user's env code (nor Ray)."""
    code = (
        "import sys, learner.main, replay_server.server; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'gymnasium', 'pygame')]; "
        "assert not bad, bad; "
        "import deploy.cli; "
        "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; "
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
