"""uint8 frames through a real replay server: stored and sampled back bit-exact, wrong
dtype or shape refused naming the field, memory bounded and reported in bytes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from dqn import codec
from dqn.config import EnvConfig
from dqn.envs import make_vector_env
from learner.sampler import decode_sample as learner_decode
from tests.component._helpers import decode_sample, info, make_batch, push, replay_stub, sample

pytestmark = pytest.mark.component
ENV_ID = "PixelCartPole-v1"
OBS_SHAPE = (2, 40, 80)
CAPACITY = 64


def frames(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real (obs, next_obs) frame-stack pairs from PixelCartPole, ``[n, 2, 40, 80]``."""
    env = make_vector_env(EnvConfig(id=ENV_ID), 1, seed=seed)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    o, o2 = [], []
    while len(o) < n:
        nxt, _, term, trunc, _ = env.step(rng.integers(0, 2, size=1))
        o.append(obs[0])
        o2.append(nxt[0])
        obs = nxt
        if term[0] or trunc[0]:
            obs, _ = env.reset()
    env.close()
    return np.stack(o), np.stack(o2)


def pixel_columns(start: int, n: int, obs: np.ndarray, next_obs: np.ndarray) -> dict:
    ids = np.arange(start, start + n)
    return {
        "obs": obs,
        "action": (ids % 2).astype(np.int64),
        "reward": ids.astype(np.float32),  # tags each row with its id
        "next_obs": next_obs,
        "terminated": np.zeros(n, np.bool_),
        "discount": np.full(n, 0.99, np.float32),
    }


@pytest.fixture
def pixel_stub(replay_server_factory):
    server = replay_server_factory(OBS_SHAPE, 2, obs_dtype=np.uint8, capacity=CAPACITY)
    channel, stub = replay_stub(server.address)
    yield stub
    channel.close()


def test_uint8_frames_round_trip_bit_exact(pixel_stub):
    obs, next_obs = frames(40)
    push(
        pixel_stub,
        make_batch(1, cols=pixel_columns(0, 20, obs[:20], next_obs[:20])),
        make_batch(2, cols=pixel_columns(20, 20, obs[20:], next_obs[20:])),
    )
    response = sample(pixel_stub, batch_size=32, num_batches=2)
    assert response.obs.dtype == codec.pb.DTYPE_UINT8
    assert len(response.obs.data) == 64 * np.prod(OBS_SHAPE)  # 1 byte per pixel on the wire
    cols = decode_sample(response)
    ids = cols["reward"].astype(np.int64)
    assert len(set(ids.tolist())) > 10
    assert cols["obs"].dtype == np.uint8 and cols["obs"].shape == (64, *OBS_SHAPE)
    assert np.array_equal(cols["obs"], obs[ids])
    assert np.array_equal(cols["next_obs"], next_obs[ids])
    # The learner's decoder keeps uint8 (float conversion happens in the network).
    tensors = learner_decode(response)
    assert str(tensors["obs"].dtype) == "torch.uint8"
    assert np.array_equal(tensors["next_obs"].numpy(), next_obs[ids])


def test_memory_is_bounded_and_reported_in_bytes(pixel_stub):
    obs, next_obs = frames(30)
    for seq in range(1, 4):  # 90 transitions into a capacity of 64
        push(pixel_stub, make_batch(seq, cols=pixel_columns(30 * seq, 30, obs, next_obs)))
    reply = info(pixel_stub)
    assert (reply.size, reply.capacity, reply.inserted) == (CAPACITY, CAPACITY, 90)
    per_row = 2 * int(np.prod(OBS_SHAPE)) + 8 + 4 + 1 + 4  # obs, next_obs uint8 + scalars
    assert reply.obs_bytes == CAPACITY * per_row
    assert list(reply.obs_shape) == list(OBS_SHAPE)


@pytest.mark.parametrize(
    ("field", "array", "message"),
    [
        (
            "obs",
            np.zeros((4, *OBS_SHAPE), np.float32),
            "batch.obs: dtype DTYPE_FLOAT32, expected DTYPE_UINT8",
        ),
        (
            "next_obs",
            np.zeros((4, 2, 40, 81), np.uint8),
            "batch.next_obs: shape [4, 2, 40, 81], expected [N, 2, 40, 80]",
        ),
        (
            "obs",
            np.zeros((4, 40, 80), np.uint8),
            "batch.obs: shape [4, 40, 80], expected [N, 2, 40, 80]",
        ),
    ],
)
def test_wrong_dtype_or_shape_is_refused_naming_the_field(pixel_stub, field, array, message):
    obs, next_obs = frames(4)
    cols = pixel_columns(0, 4, obs, next_obs)
    cols[field] = array
    with pytest.raises(grpc.RpcError) as err:
        push(pixel_stub, make_batch(1, cols=cols))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert info(pixel_stub).size == 0
