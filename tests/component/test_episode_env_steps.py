"""Each Episode carries the fleet's env steps at the moment the server stored the batch
that brought it (Episode.env_steps), through Info and through a replay checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dqn.v1 import replay_pb2 as pb
from replay_server import checkpoint
from replay_server.checkpoint import CheckpointError
from tests.component._helpers import info, make_batch, push, replay_stub

pytestmark = pytest.mark.component


def _episode(ret: float, **fields) -> pb.Episode:
    return pb.Episode(actor_id=1, episode_return=ret, length=int(ret), **fields)


def _push_two_rounds(stub) -> None:
    """Round 1: actor 1 at 100 steps finishes episode 10. Between: actor 2 reaches 50
    steps, no episode. Round 2: actor 1 at 250 steps finishes episodes 20 and 30."""
    push(stub, make_batch(1, 0, 8, episodes=[_episode(10.0)], actor_env_steps=100))
    push(stub, make_batch(1, 8, 8, actor_id=2, incarnation=5, actor_env_steps=50))
    # a stamp sent by a pusher is not trusted: the server's own count replaces it
    late = [_episode(20.0, env_steps=999_999), _episode(30.0)]
    push(stub, make_batch(2, 16, 8, episodes=late, actor_env_steps=250))


def test_episodes_pushed_in_two_rounds_carry_the_env_steps_of_their_insert(replay_server):
    channel, stub = replay_stub(replay_server.address)
    try:
        _push_two_rounds(stub)
        reply = info(stub)
        assert reply.env_steps == 300  # 250 + 50
        got = [(ep.episode_return, ep.env_steps) for ep in reply.episodes]
        assert got == [(10.0, 100), (20.0, 300), (30.0, 300)]
        later = info(stub, after=1).episodes  # the cursor still pages the same records
        assert [ep.env_steps for ep in later] == [300, 300]
    finally:
        channel.close()


def test_a_duplicate_does_not_stamp_or_repeat_its_episodes(replay_server):
    channel, stub = replay_stub(replay_server.address)
    try:
        push(stub, make_batch(1, 0, 8, episodes=[_episode(5.0)], actor_env_steps=40))
        reply = push(stub, make_batch(1, 0, 8, episodes=[_episode(5.0)], actor_env_steps=40))
        assert reply.duplicate_batches == 1
        assert [(ep.episode_return, ep.env_steps) for ep in info(stub).episodes] == [(5.0, 40)]
    finally:
        channel.close()


def _rewrite_meta(path, edit) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    edit(meta)
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def test_checkpoints_keep_the_stamps_and_older_files_still_load(replay_server_factory, tmp_path):
    path = tmp_path / "replay.npz"
    server = replay_server_factory(checkpoint_path=str(path))
    channel, stub = replay_stub(server.address)
    try:
        _push_two_rounds(stub)
    finally:
        channel.close()
    server.stop(grace=0.5)  # writes the final checkpoint

    stamps = [(ep.episode_return, ep.env_steps) for _, ep in checkpoint.load(path).episodes]
    assert stamps == [(10.0, 100), (20.0, 300), (30.0, 300)]

    def as_format_2(meta):  # what a server before the stamp wrote: 4 fields per episode
        meta["format"] = 2
        meta["episodes"] = [row[:-1] for row in meta["episodes"]]

    _rewrite_meta(path, as_format_2)
    old = checkpoint.load(path).episodes
    assert [(c, ep.actor_id, ep.episode_return, ep.length, ep.env_steps) for c, ep in old] == [
        (1, 1, 10.0, 10, 0),
        (2, 1, 20.0, 20, 0),
        (3, 1, 30.0, 30, 0),
    ]
    restored = replay_server_factory(checkpoint_path=str(path))  # a server takes it too
    channel, stub = replay_stub(restored.address)
    try:
        assert [ep.env_steps for ep in info(stub).episodes] == [0, 0, 0]
    finally:
        channel.close()

    def torn_row(meta):
        meta["format"] = 3
        meta["episodes"][0] = meta["episodes"][0][:3]

    _rewrite_meta(path, torn_row)
    with pytest.raises(CheckpointError, match="replay.checkpoint_path: cannot read"):
        checkpoint.load(path)
