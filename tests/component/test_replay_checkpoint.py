"""Replay checkpoints through real servers on 127.0.0.1: round trip, atomicity, refusal."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest

from dqn.config import ConfigError
from dqn.v1 import replay_pb2 as pb
from replay_server import checkpoint
from replay_server.checkpoint import CheckpointError
from tests.component._helpers import columns, info, make_batch, push, replay_stub, sample

pytestmark = pytest.mark.component


def _fill(server) -> None:
    """Two actors, episodes, a duplicate, a rejected batch, samples; the ring wraps."""
    channel, stub = replay_stub(server.address)
    try:
        ep = pb.Episode(actor_id=1, episode_return=12.5, length=12, truncated=True)
        push(stub, make_batch(1, 0, 8, policy_version=3, epsilon=0.3, actor_env_steps=40))
        push(stub, make_batch(2, 8, 8, policy_version=4, episodes=[ep], actor_env_steps=80))
        push(stub, make_batch(1, 100, 8, actor_id=2, incarnation=7, epsilon=0.01))
        push(stub, make_batch(2, 8, 8))  # duplicate
        with pytest.raises(Exception, match="action"):
            push(stub, make_batch(3, 50, 4, cols=_bad_actions()))
        sample(stub, batch_size=5, num_batches=2)
    finally:
        channel.close()


def _bad_actions():
    cols = columns(50, 4)
    cols["action"][0] = 99
    return cols


def _state(server) -> dict:
    s = server.servicer
    lim = s.limiter
    return {
        "columns": {k: v.copy() for k, v in s.storage.columns.items()},
        "cursor_size": (s.storage.cursor, s.storage.size),
        "limiter": (lim.inserted, lim.sampled, lim._started),
    }


def test_round_trip_restores_info_storage_and_dedupe(replay_server_factory, tmp_path):
    path = tmp_path / "ckpt" / "replay.npz"
    first = replay_server_factory(capacity=20, checkpoint_path=str(path))
    _fill(first)
    channel, stub = replay_stub(first.address)
    before_info = info(stub)
    channel.close()
    before = _state(first)
    first.stop(grace=0.5)  # drains, then writes the final checkpoint
    assert path.is_file() and not path.with_name("replay.npz.tmp").exists()

    second = replay_server_factory(capacity=20, checkpoint_path=str(path))
    channel, stub = replay_stub(second.address)
    try:
        assert info(stub) == before_info  # every counter, actor, episode, lag
        assert before_info.size == 20 and before_info.inserted == 24  # wrapped ring
        after = _state(second)
        assert after["cursor_size"] == before["cursor_size"]
        assert after["limiter"] == before["limiter"]
        for name, col in before["columns"].items():
            np.testing.assert_array_equal(after["columns"][name], col, err_msg=name)
        reply = push(stub, make_batch(2, 8, 8))  # re-sent after a reconnect
        assert (reply.accepted_batches, reply.duplicate_batches) == (0, 1)
        reply = push(stub, make_batch(3, 200, 8))
        assert reply.accepted_batches == 1
        assert info(stub).inserted == 32
    finally:
        channel.close()


def test_write_checkpoint_without_path_is_a_no_op(replay_server):
    assert replay_server.write_checkpoint() is None


def test_crash_mid_write_keeps_previous_checkpoint(replay_server_factory, tmp_path, monkeypatch):
    path = tmp_path / "replay.npz"
    server = replay_server_factory(checkpoint_path=str(path))
    channel, stub = replay_stub(server.address)
    try:
        push(stub, make_batch(1, 0, 8))
        assert server.write_checkpoint().size == 8
        push(stub, make_batch(2, 8, 8))

        def crash(*args, **kwargs):
            raise OSError("simulated crash before the rename")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            server.write_checkpoint()
        monkeypatch.undo()
        state = checkpoint.load(path)  # still the previous, complete checkpoint
        assert (state.size, state.counters["inserted"]) == (8, 8)
        assert not path.with_name("replay.npz.tmp").exists()
    finally:
        channel.close()


def test_torn_temp_file_from_a_kill_is_ignored_and_replaced(replay_server_factory, tmp_path):
    path = tmp_path / "replay.npz"
    server = replay_server_factory(checkpoint_path=str(path))
    channel, stub = replay_stub(server.address)
    push(stub, make_batch(1, 0, 8))
    channel.close()
    server.write_checkpoint()
    path.with_name("replay.npz.tmp").write_bytes(b"PK\x03\x04 half a zip")  # kill -9 mid-write
    assert checkpoint.load(path).size == 8
    assert server.write_checkpoint().size == 8
    assert checkpoint.load(path).size == 8


def test_mismatched_config_is_refused_naming_the_differences(replay_server_factory, tmp_path):
    path = tmp_path / "replay.npz"
    server = replay_server_factory(capacity=20, checkpoint_path=str(path))
    server.write_checkpoint()
    with pytest.raises(CheckpointError) as err:
        replay_server_factory(obs_shape=(6,), n_actions=3, capacity=30, checkpoint_path=str(path))
    message = str(err.value)
    assert message.startswith("replay.checkpoint_path:")
    for text in ("capacity 20 != 30", "obs_shape (4,) != (6,)", "n_actions 2 != 3"):
        assert text in message, message
    assert isinstance(err.value, ConfigError)  # the CLI prints it and exits 2


def test_obs_dtype_mismatch_is_refused(replay_server_factory, tmp_path):
    server = replay_server_factory(capacity=20)
    state = dataclasses.replace(server.servicer.snapshot(), obs_dtype=np.dtype(np.uint8).str)
    with pytest.raises(CheckpointError, match=r"obs_dtype '\|u1' != '<f4'"):
        server.servicer.restore(state, "x.npz")


def test_unreadable_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "replay.npz"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="replay.checkpoint_path: cannot read .*replay.npz"):
        checkpoint.load(path)


def test_periodic_checkpoints_follow_inserts(replay_server_factory, tmp_path):
    path = tmp_path / "replay.npz"
    server = replay_server_factory(checkpoint_path=str(path), checkpoint_every_seconds=0.05)
    channel, stub = replay_stub(server.address)
    try:
        push(stub, make_batch(1, 0, 8), make_batch(2, 8, 8))
        deadline = time.monotonic() + 10
        while not (path.exists() and checkpoint.load(path).size == 16):
            assert time.monotonic() < deadline, "no periodic checkpoint with 16 transitions"
            time.sleep(0.02)
    finally:
        channel.close()


def test_snapshot_taken_while_pushes_go_on_is_the_state_of_one_moment(
    replay_server_factory, monkeypatch
):
    """The checkpoint copy runs in chunks with pushes in between; what it returns must
    still be one consistent state: every slot holds the row the counters say it holds."""
    import threading

    from replay_server import service

    monkeypatch.setattr(service, "SNAPSHOT_CHUNK_BYTES", 1)  # a row per chunk: pushes interleave
    capacity = 3000
    server = replay_server_factory(capacity=capacity)
    channel, stub = replay_stub(server.address)
    push(stub, *[make_batch(seq, 64 * (seq - 1), 64) for seq in range(1, 31)])  # 1,920 rows
    stop, pushed = threading.Event(), [30]

    def pusher():
        ch, st = replay_stub(server.address)
        with ch:
            while not stop.is_set():  # until the snapshots below have seen enough
                seq = pushed[0] + 1
                push(st, make_batch(seq, 64 * (seq - 1), 64))
                pushed[0] = seq

    thread = threading.Thread(target=pusher)
    thread.start()
    # Snapshots until there are 20 and the ring has been written through twice while
    # they were taken: counts, not a fixed number of pushes, which faster snapshots (or
    # slower pushes) would finish before the ring ever wrapped.
    checked, inserted, deadline = 0, 0, time.monotonic() + 120
    try:
        while checked < 20 or inserted < 2 * capacity:
            assert thread.is_alive(), "the pusher stopped"
            assert time.monotonic() < deadline, f"{checked} snapshots, {inserted} inserted"
            state = server.servicer.snapshot()
            _assert_one_moment(state, capacity)
            checked, inserted = checked + 1, state.counters["inserted"]
    finally:
        stop.set()
        thread.join(60)
        channel.close()


def _assert_one_moment(state, capacity: int) -> None:
    """Every slot of ``state`` holds the row its counters say (rows pushed in id order)."""
    inserted, size = state.counters["inserted"], state.size
    assert size == min(inserted, capacity)
    ids = state.columns["obs"][:, 0].astype(np.int64)
    slots = np.arange(size)
    # ids 0.. were written in order from slot 0: slot j holds the newest id = j (mod C)
    expected = slots + capacity * ((inserted - 1 - slots) // capacity)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(state.columns["action"], expected % 2)  # rows intact
    assert state.cursor == inserted % capacity
