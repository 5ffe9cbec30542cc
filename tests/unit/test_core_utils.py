"""dqn.seeding, dqn.files, dqn.signals: the small shared utilities."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from dqn import files, seeding, signals

pytestmark = pytest.mark.unit


def test_derived_seeds_are_distinct_stable_and_in_range():
    seeds = {seeding.derive(0, "actor", i) for i in range(1000)}
    seeds |= {seeding.derive(0, role) for role in seeding.ROLES if role != "actor"}
    assert len(seeds) == 1000 + len(seeding.ROLES) - 1
    assert all(0 <= s < 2**31 for s in seeds)
    assert seeding.derive(7, "actor", 3) == seeding.derive(7, "actor", 3)
    assert seeding.derive(7, "actor", 3) != seeding.derive(8, "actor", 3)
    # a role's streams are apart from every other role's at every index
    assert seeding.derive(7, "actor", 2) != seeding.derive(7, "evaluator", 2)


@pytest.mark.parametrize("bad", [("nobody", 0), ("actor", -1)])
def test_derive_refuses_unknown_role_or_negative_index(bad):
    with pytest.raises(ValueError):
        seeding.derive(0, bad[0], bad[1])


def test_atomic_write_leaves_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.json"
    files.atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), files.atomic_open(path) as f:
        f.write(b"half")
        raise RuntimeError("writer died")
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]  # no temp file left behind


def test_atomic_write_with_a_file_name_writer(tmp_path):
    path = tmp_path / "curve.png"
    files.atomic_write_with(path, lambda name: Path(name).write_bytes(b"png"), suffix=".png")
    assert path.read_bytes() == b"png"
    with pytest.raises(OSError):
        files.atomic_write_with(path, lambda name: (_ for _ in ()).throw(OSError("disk")))
    assert path.read_bytes() == b"png" and os.listdir(tmp_path) == ["curve.png"]


def test_stop_on_signals_sets_the_event_and_restores():
    stop = threading.Event()
    old = signals.stop_on_signals(stop, signals=(signal.SIGUSR1,))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.wait(5)
    finally:
        signals.restore(old)
    assert signal.getsignal(signal.SIGUSR1) == old[signal.SIGUSR1]
