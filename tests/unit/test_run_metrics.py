"""learner.metrics: TensorBoard tags written, and the learning curve redrawn off-thread."""

from __future__ import annotations

import time

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from learner.metrics import TB_TAGS, Metrics
from learner.records import EvalRecord

pytestmark = pytest.mark.unit


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_refresh_plot_redraws_in_the_background_atomically(tmp_path):
    metrics = Metrics(tmp_path, tensorboard=False)
    path = tmp_path / "learning_curve.png"
    try:
        metrics.episodes_finished(100, [1.0, 2.0, 3.0], [10, 20, 30])
        metrics.refresh_plot(path, "curve", threshold=2.5)
        _wait(lambda: metrics._plotter.drawn == 1)
        first = path.read_bytes()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (800, 450)
        metrics.episodes_finished(200, [5.0] * 50, [50] * 50)
        record = EvalRecord(2, 10, 200, 1.0, 5.0, 1.0, 2)
        metrics.evaluation(record)
        metrics.refresh_plot(path, "curve", threshold=2.5, evals=[record])
        _wait(lambda: metrics._plotter.drawn == 2)
        assert path.read_bytes() != first  # redrawn with the new data
        assert not list(tmp_path.glob("*.tmp.png"))  # written via temp file + rename
    finally:
        metrics.close()
    assert not metrics._plotter._thread.is_alive()


def test_final_plot_waits_for_the_refresh_and_stops_it(tmp_path):
    metrics = Metrics(tmp_path, tensorboard=False)
    path = tmp_path / "learning_curve.png"
    metrics.episodes_finished(100, [1.0], [1])
    metrics.refresh_plot(path, "curve")
    plotter = metrics._plotter
    metrics.plot(path, "curve")
    assert not plotter._thread.is_alive() and metrics._plotter is None
    assert path.is_file()
    metrics.close()


def test_tensorboard_scalars_use_the_documented_tags(tmp_path):
    metrics = Metrics(tmp_path)
    metrics.episodes_finished(64, [1.0, 3.0], [5, 7])
    metrics.evaluation(EvalRecord(1, 3, 128, 1.0, 3.0, 1.0, 2))
    metrics.scalars(128, {"loss/td": 0.5, "replay/size": 1000})
    with pytest.raises(KeyError, match="made/up"):
        metrics.scalars(128, {"made/up": 1.0})
    metrics.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {
        "episode/return",
        "episode/length",
        "eval/return_mean",
        "eval/return_std",
        "loss/td",
        "replay/size",
    }
    assert tags <= set(TB_TAGS)
    (ret,) = events.Scalars("episode/return")
    assert (ret.step, ret.value) == (64, 2.0)
    (length,) = events.Scalars("episode/length")
    assert length.value == 6.0
    (ev,) = events.Scalars("eval/return_mean")
    assert (ev.step, ev.value) == (128, 3.0)
