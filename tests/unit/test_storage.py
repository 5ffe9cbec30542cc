"""replay_server.storage.RingStorage: preallocated structure-of-arrays ring."""

from __future__ import annotations

import numpy as np
import pytest

from dqn.interfaces import TRANSITION_COLUMNS as COLUMNS
from replay_server.storage import RingStorage

pytestmark = pytest.mark.unit

OBS_SHAPE = (2,)


def rows(start: int, n: int) -> dict[str, np.ndarray]:
    """``n`` transitions whose every column encodes the id ``start + k``."""
    ids = np.arange(start, start + n)
    return {
        "obs": np.stack([ids, -ids], axis=1).astype(np.float32),
        "action": ids.astype(np.int64),
        "reward": (ids * 0.5).astype(np.float32),
        "next_obs": np.stack([ids + 1, -ids - 1], axis=1).astype(np.float32),
        "terminated": (ids % 3 == 0),
        "discount": np.full(n, 0.99, np.float32),
    }


def stored_ids(storage: RingStorage) -> list[int]:
    return storage.columns["action"].tolist()


def test_preallocated_columns_have_capacity_and_dtypes():
    s = RingStorage(5, OBS_SHAPE)
    assert set(s.columns) == set(COLUMNS)
    assert s.columns["obs"].shape == (5, 2) and s.columns["obs"].dtype == np.float32
    assert s.columns["next_obs"].shape == (5, 2)
    assert s.columns["action"].dtype == np.int64
    assert s.columns["reward"].dtype == np.float32
    assert s.columns["terminated"].dtype == np.bool_
    assert s.columns["discount"].dtype == np.float32
    assert s.size == 0 and s.cursor == 0


def test_add_then_gather_returns_the_rows():
    s = RingStorage(10, OBS_SHAPE)
    s.add(rows(0, 4))
    assert (s.size, s.cursor) == (4, 4)
    out = s.gather(np.array([3, 0, 2]))
    expected = rows(0, 4)
    for name in COLUMNS:
        np.testing.assert_array_equal(out[name], expected[name][[3, 0, 2]])


def test_gather_returns_copies_not_views():
    s = RingStorage(4, OBS_SHAPE)
    s.add(rows(0, 4))
    out = s.gather(np.array([0, 1]))
    s.add(rows(100, 4))
    assert out["action"].tolist() == [0, 1]


def test_wrap_around_exact_positions():
    s = RingStorage(5, OBS_SHAPE)
    s.add(rows(0, 3))  # positions 0..2 <- 0,1,2
    assert (s.size, s.cursor) == (3, 3)
    s.add(rows(3, 4))  # 3,4 -> positions 3,4; 5,6 wrap to positions 0,1
    assert (s.size, s.cursor) == (5, 2)
    assert stored_ids(s) == [5, 6, 2, 3, 4]
    np.testing.assert_array_equal(s.columns["obs"][:, 0], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(s.columns["next_obs"][:, 1], [-6, -7, -3, -4, -5])
    np.testing.assert_array_equal(s.columns["terminated"], [False, True, False, True, False])
    s.add(rows(7, 3))  # positions 2,3,4
    assert (s.size, s.cursor) == (5, 0)
    assert stored_ids(s) == [5, 6, 7, 8, 9]


def test_exact_fill_leaves_cursor_at_zero():
    s = RingStorage(4, OBS_SHAPE)
    s.add(rows(0, 4))
    assert (s.size, s.cursor) == (4, 0)
    s.add(rows(4, 1))
    assert stored_ids(s) == [4, 1, 2, 3]
    assert (s.size, s.cursor) == (4, 1)


def test_batch_larger_than_capacity_keeps_only_newest():
    s = RingStorage(4, OBS_SHAPE)
    s.add(rows(0, 1))  # cursor 1
    s.add(rows(10, 10))  # ids 10..19, only 16..19 survive
    assert s.size == 4
    assert sorted(stored_ids(s)) == [16, 17, 18, 19]
    # written in order from the cursor, so the oldest survivor sits at the cursor
    assert stored_ids(s) == [19, 16, 17, 18]
    assert s.cursor == 1
    for name in COLUMNS:  # rows stay aligned across columns
        ids = s.columns["action"]
        np.testing.assert_array_equal(s.columns[name], rows(0, 20)[name][ids])


def test_nbytes_constant_and_arrays_not_reallocated_after_many_adds():
    s = RingStorage(64, (4,))
    before = s.nbytes
    expected = 64 * (4 * 4 * 2 + 8 + 4 + 1 + 4)
    assert before == expected
    arrays = {name: col for name, col in s.columns.items()}
    rng = np.random.default_rng(0)
    total = 0
    for _ in range(300):
        n = int(rng.integers(1, 64))
        batch = {
            "obs": rng.standard_normal((n, 4)).astype(np.float32),
            "action": rng.integers(0, 2, n),
            "reward": rng.standard_normal(n).astype(np.float32),
            "next_obs": rng.standard_normal((n, 4)).astype(np.float32),
            "terminated": rng.random(n) < 0.1,
            "discount": np.ones(n, np.float32),
        }
        s.add(batch)
        total += n
    s.add({k: np.repeat(v[:1], 200, axis=0) for k, v in batch.items()})  # > capacity
    assert s.nbytes == before
    assert s.size == 64
    assert s.cursor == total % 64  # a batch over capacity leaves the cursor in place
    for name, col in s.columns.items():
        assert col is arrays[name]


def test_state_load_state_round_trip():
    a = RingStorage(5, OBS_SHAPE)
    a.add(rows(0, 3))
    a.add(rows(3, 4))
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.state().items()}
    assert state["cursor"] == 2 and state["size"] == 5
    b = RingStorage(5, OBS_SHAPE)
    b.load_state(state)
    assert (b.size, b.cursor) == (a.size, a.cursor)
    for name in COLUMNS:
        np.testing.assert_array_equal(b.columns[name], a.columns[name])
    # the restored ring continues where the original left off
    a.add(rows(50, 2))
    b.add(rows(50, 2))
    for name in COLUMNS:
        np.testing.assert_array_equal(b.columns[name], a.columns[name])


def test_load_state_partial_buffer():
    a = RingStorage(8, OBS_SHAPE)
    a.add(rows(0, 3))
    b = RingStorage(8, OBS_SHAPE)
    b.load_state(a.state())
    assert (b.size, b.cursor) == (3, 3)
    assert stored_ids(b)[:3] == [0, 1, 2]


def test_load_state_refuses_wrong_shape():
    a = RingStorage(5, OBS_SHAPE)
    b = RingStorage(6, OBS_SHAPE)
    with pytest.raises(ValueError, match="obs"):
        b.load_state(a.state())
