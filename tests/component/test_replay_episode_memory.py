"""The replay server's episode log holds the episodes, not the batches that carried them.

An Episode kept as a sub-message of a parsed PushRequest keeps that whole request alive
(upb messages share their request's arena): with PixelCartPole batches (64 x 2 x 40 x 80
uint8 obs, twice; ~0.8 MB) each carrying an episode, the log of 10,000 episodes held
~0.78 MiB per episode, GBs in all.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from bench.common import ReplayServerProcess
from dqn import codec
from dqn.v1 import replay_pb2 as pb
from tests.component._helpers import replay_stub

MiB = 1 << 20
N = 64


def _requests(first: int, count: int, obs: np.ndarray):
    for sequence in range(first, first + count):
        request = pb.PushRequest()
        batch = request.batch
        batch.actor_id, batch.incarnation, batch.sequence = 1, 7, sequence
        codec.encode(obs[:-1], batch.obs)
        codec.encode(obs[1:], batch.next_obs)
        codec.encode(np.zeros(N, np.int64), batch.action)
        codec.encode(np.ones(N, np.float32), batch.reward)
        codec.encode(np.zeros(N, bool), batch.terminated)
        codec.encode(np.full(N, 0.97, np.float32), batch.discount)
        batch.episodes.add(actor_id=1, episode_return=float(sequence), length=20)
        yield request


@pytest.mark.component
def test_episode_log_does_not_keep_pushed_batches_alive(tmp_path):
    server = ReplayServerProcess(
        tmp_path,
        *("--env.id", "PixelCartPole-v1", "--replay.capacity", "1000"),
        *("--replay.min-size", "1", "--replay.metrics-port", "-1"),
    )
    try:
        rss = psutil.Process(server.proc.pid).memory_info
        channel, stub = replay_stub(server.address)
        obs = np.random.default_rng(0).integers(0, 255, (N + 1, 2, 40, 80), dtype=np.uint8)
        stub.Push(_requests(1, 100, obs), timeout=120)  # the ring (1,000 rows) written 6x
        before = rss().rss
        stub.Push(_requests(101, 400, obs), timeout=120)
        after = rss().rss
        info = stub.Info(pb.InfoRequest(episodes_after=0), timeout=30)
        channel.close()
    finally:
        server.stop()
    assert info.episodes_total == 500
    assert [e.episode_return for e in info.episodes] == [float(s) for s in range(1, 501)]
    # 400 more episodes: a few KiB each at most (each batch kept alive: ~310 MiB)
    assert after - before < 32 * MiB, f"+{(after - before) / MiB:.0f} MiB for 400 episodes"
