"""The learner's run metrics hold bounded memory however long the run (issue 11, item 7)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from learner.metrics import EVALS_KEPT, Metrics, plot_curve, thin_history


@pytest.mark.unit
@pytest.mark.parametrize("kept", [2, 3, 10, 100])
def test_thin_history_keeps_an_even_grid_the_first_and_the_latest(kept):
    history: list[int] = []
    stride = 1
    for total in range(1, 20_000):
        history.append(total - 1)  # entry i is the i-th appended
        thin_history(history, total, kept)
        assert len(history) <= kept
        while total > kept and (total - 2) // stride + 1 > kept - 1:
            stride *= 2  # the grid spans entries 0..total-2, evenly, over the whole run
        assert history == [*range(0, total - 1, stride), total - 1], total
    assert len(history) > kept // 2


@pytest.mark.unit
def test_thin_history_leaves_short_histories_alone_and_spreads_other_layouts():
    history = list(range(10))
    thin_history(history, 10, kept=10)
    assert history == list(range(10))
    # e.g. 500 unthinned entries restored from an old checkpoint, then one more
    history = [*range(500), 500]
    thin_history(history, 501, kept=10)
    assert len(history) <= 10 and history[0] == 0 and history[-1] == 500
    gaps = np.diff(history[:-1])
    assert gaps.min() > 0 and gaps.max() - gaps.min() <= 1, gaps
    with pytest.raises(ValueError, match="kept"):
        thin_history([1], 5, kept=1)


@pytest.mark.unit
def test_evaluations_kept_are_bounded(tmp_path):
    from learner.records import EvalRecord, Progress

    progress, metrics = Progress(), Metrics(tmp_path, tensorboard=False)
    try:
        for i in range(3 * EVALS_KEPT):
            record = EvalRecord(i + 1, i, i * 100, float(i), float(i) + 1.0, 1.0, 2)
            progress.add_eval(record)
            metrics.evaluation(record)
    finally:
        metrics.close()
    assert len(progress.evals) <= EVALS_KEPT
    assert progress.evaluations == 3 * EVALS_KEPT
    assert progress.evals[0].env_steps == 0 and progress.evals[0].mean == 1.0
    assert progress.evals[-1].env_steps == (3 * EVALS_KEPT - 1) * 100
    # metrics.jsonl still has every evaluation
    assert (tmp_path / "metrics.jsonl").read_text().count('"kind": "eval"') == 3 * EVALS_KEPT
    # a checkpoint round trip keeps the records, old tuples included
    restored = Progress.restore({**progress.to_state(), "evals": [(5, 6, 7.0, 8.0, 9.0)]})
    assert restored.evals == [EvalRecord(0, 6, 5, 7.0, 8.0, 9.0, 0)]
    assert restored.evaluations == 3 * EVALS_KEPT


@pytest.mark.unit
def test_drawing_the_curve_frees_its_figure(tmp_path):
    """A Figure is freed only by a full collection (it is full of reference cycles); with
    automatic collection off, none of the drawn figures may stay alive."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    episodes = [(i * 20, float(r)) for i, r in enumerate(rng.uniform(0, 500, 5_000))]
    evals = [(i * 1_000, 300.0, 20.0) for i in range(50)]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            plot_curve(tmp_path / "curve.png", episodes, evals, "t", 475.0)
        alive = sum(issubclass(type(o), Figure) for o in gc.get_objects())
    finally:
        if was_enabled:
            gc.enable()
    assert alive == 0
    assert (tmp_path / "curve.png").stat().st_size > 0
