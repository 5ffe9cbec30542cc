"""Edge values for the replay server's batch checks, which take fast paths (one
reduction per column): extreme finite values pass, every non-finite value and every
out-of-range action or discount is caught wherever it sits."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from replay_server.validation import BatchError, BatchSpec, validate_batch
from tests.component._helpers import N_ACTIONS, OBS_SHAPE, columns, make_batch

# A bad batch is refused quietly: no numpy RuntimeWarning in the server log.
pytestmark = pytest.mark.filterwarnings("error")

SPEC = BatchSpec(OBS_SHAPE, N_ACTIONS, max_transitions=4096)
BIG = np.finfo(np.float32).max


def batch_with(n=256, **overrides):
    cols = columns(0, n)
    cols.update(overrides)
    return make_batch(1, cols=cols)


def refused(batch) -> str:
    with pytest.raises(BatchError) as err:
        validate_batch(batch, SPEC)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return err.value.message


def test_extreme_finite_values_pass():
    n = 4096  # the most per batch, every value at the float32 limits
    obs = np.full((n, 4), BIG, np.float32)
    obs[::2] = -BIG
    out = validate_batch(
        batch_with(
            n,
            obs=obs,
            next_obs=np.full((n, 4), BIG, np.float32),
            reward=np.full(n, -BIG, np.float32),
            discount=np.ones(n, np.float32),
        ),
        SPEC,
    )
    assert np.array_equal(out["obs"], obs)


@pytest.mark.parametrize("name", ["obs", "next_obs", "reward", "discount"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 137, -1])
def test_any_non_finite_value_is_refused(name, value, where):
    cols = columns(0, 256)
    cols[name] = cols[name].copy()
    cols[name][where] = value
    assert refused(make_batch(1, cols=cols)).startswith(f"batch.{name}: contains NaN")


def test_opposite_infinities_are_refused():
    obs = columns(0, 256)["obs"].copy()
    obs[3, 0], obs[9, 2] = np.inf, -np.inf
    assert "batch.obs: contains NaN" in refused(batch_with(obs=obs))


@pytest.mark.parametrize("bad", [-1, N_ACTIONS, np.iinfo(np.int64).min, np.iinfo(np.int64).max])
def test_out_of_range_action_is_named(bad):
    action = columns(0, 256)["action"].copy()
    action[200] = bad
    assert refused(batch_with(action=action)) == (
        f"batch.action: value {bad} out of range [0, {N_ACTIONS})"
    )


@pytest.mark.parametrize("bad", [-1e-7, 1.0000001, -BIG, BIG])
def test_discount_outside_unit_interval_is_refused(bad):
    discount = np.full(256, 0.99, np.float32)
    discount[255] = bad
    assert refused(batch_with(discount=discount)) == "batch.discount: values must lie in [0, 1]"


def test_bool_bytes_other_than_0_1_are_refused():
    batch = batch_with()
    raw = bytearray(batch.terminated.data)
    raw[100] = 2
    batch.terminated.data = bytes(raw)
    assert refused(batch) == "batch.terminated: bool bytes must be 0 or 1"
