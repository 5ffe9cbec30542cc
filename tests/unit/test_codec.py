"""dqn.codec: numpy <-> dqn.v1.Tensor."""

from __future__ import annotations

import numpy as np
import pytest

from dqn import codec
from dqn.v1 import replay_pb2 as pb

pytestmark = pytest.mark.unit

DTYPES = {
    np.float32: pb.DTYPE_FLOAT32,
    np.float64: pb.DTYPE_FLOAT64,
    np.int32: pb.DTYPE_INT32,
    np.int64: pb.DTYPE_INT64,
    np.uint8: pb.DTYPE_UINT8,
    np.bool_: pb.DTYPE_BOOL,
}
SHAPES = [(), (0,), (3, 0), (1,), (5,), (2, 3), (2, 1, 3, 1)]


def _sample(dtype, shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    size = int(np.prod(shape, dtype=np.int64))
    if dtype == np.bool_:
        values = rng.integers(0, 2, size).astype(bool)
    elif np.issubdtype(dtype, np.floating):
        values = rng.standard_normal(size).astype(dtype)
    else:
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size, dtype=dtype, endpoint=True)
    return values.reshape(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: np.dtype(d).name)
def test_round_trip(dtype, shape):
    array = _sample(dtype, shape)
    tensor = codec.encode(array)
    assert tensor.dtype == DTYPES[dtype]
    assert list(tensor.shape) == list(shape)
    assert len(tensor.data) == array.size * np.dtype(dtype).itemsize
    # survive real serialisation, not only the in-memory message
    wire = pb.Tensor.FromString(tensor.SerializeToString())
    out = codec.decode(wire, "x")
    assert out.dtype == np.dtype(dtype)
    assert out.shape == shape
    np.testing.assert_array_equal(out, array)


def test_round_trip_extreme_float_values_bit_exact():
    array = np.array(
        [0.0, -0.0, np.finfo(np.float32).max, np.finfo(np.float32).tiny, np.inf], np.float32
    )
    out = codec.decode(codec.encode(array))
    assert out.tobytes() == array.tobytes()


def test_big_endian_and_non_contiguous_input_are_normalised():
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    tensor = codec.encode(big)
    assert tensor.data == np.arange(6, dtype="<i4").tobytes()
    np.testing.assert_array_equal(codec.decode(tensor), big)
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    np.testing.assert_array_equal(codec.decode(codec.encode(strided)), strided)


def test_encode_into_existing_message():
    batch = pb.TransitionBatch()
    codec.encode(np.ones((2, 4), np.float32), batch.obs)
    assert batch.HasField("obs")
    assert list(batch.obs.shape) == [2, 4]


def test_encode_refuses_unsupported_dtype():
    with pytest.raises(codec.CodecError, match="float16"):
        codec.encode(np.zeros(3, np.float16))


def test_proto_dtype_name():
    assert codec.proto_dtype_name(np.float32) == "DTYPE_FLOAT32"
    assert codec.proto_dtype_name(np.bool_) == "DTYPE_BOOL"


def _tensor(dtype=pb.DTYPE_FLOAT32, shape=(2, 3), nbytes=24) -> pb.Tensor:
    return pb.Tensor(dtype=dtype, shape=list(shape), data=b"\0" * nbytes)


def test_decode_wrong_byte_count_names_field():
    with pytest.raises(codec.CodecError) as err:
        codec.decode(_tensor(nbytes=23), "batch.obs")
    msg = str(err.value)
    assert msg.startswith("batch.obs:")
    assert "23" in msg and "24" in msg


def test_decode_too_many_bytes_also_refused():
    with pytest.raises(codec.CodecError, match=r"^batch\.reward:"):
        codec.decode(_tensor(shape=(2,), nbytes=12), "batch.reward")


def test_decode_negative_dimension_names_field():
    with pytest.raises(codec.CodecError, match=r"^batch\.obs: negative dimension"):
        codec.decode(_tensor(shape=(-2, -3), nbytes=24), "batch.obs")


@pytest.mark.parametrize("code", [0, 7, 99])
def test_decode_unknown_dtype_names_field(code):
    with pytest.raises(codec.CodecError, match=r"^batch\.action: unsupported dtype"):
        codec.decode(_tensor(dtype=code), "batch.action")


def test_decode_too_many_dims_names_field():
    shape = (1,) * (codec.MAX_DIMS + 1)
    with pytest.raises(codec.CodecError, match=r"^batch\.next_obs: 9 dimensions"):
        codec.decode(_tensor(shape=shape, nbytes=4), "batch.next_obs")
    # exactly MAX_DIMS is fine
    out = codec.decode(_tensor(shape=(1,) * codec.MAX_DIMS, nbytes=4), "x")
    assert out.ndim == codec.MAX_DIMS


def test_decode_huge_shape_refused_without_allocating():
    # shape claims 2**62 elements; must fail on the byte count, not try to allocate
    with pytest.raises(codec.CodecError, match=r"^obs:"):
        codec.decode(_tensor(shape=(2**31, 2**31), nbytes=8), "obs")


def test_codec_error_is_value_error():
    assert issubclass(codec.CodecError, ValueError)
