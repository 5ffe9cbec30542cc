"""numpy <-> ``dqn.v1.Tensor`` conversion.

Arrays travel as raw little-endian bytes with a dtype and a shape. Decoding is one
``numpy.frombuffer`` call (no per-element Python work) and checks that the byte
count matches the shape, so a malformed message fails here with a message that
names the field instead of corrupting storage downstream.
"""

from __future__ import annotations

import numpy as np

from dqn.v1 import replay_pb2 as pb

_TO_PROTO = {
    np.dtype("<f4"): pb.DTYPE_FLOAT32,
    np.dtype("<f8"): pb.DTYPE_FLOAT64,
    np.dtype("<i4"): pb.DTYPE_INT32,
    np.dtype("<i8"): pb.DTYPE_INT64,
    np.dtype("u1"): pb.DTYPE_UINT8,
    np.dtype("?"): pb.DTYPE_BOOL,
}
_FROM_PROTO = {v: k for k, v in _TO_PROTO.items()}

MAX_DIMS = 8


class CodecError(ValueError):
    """A Tensor message that cannot be decoded; the message names the field."""


def dtype_name(code: int) -> str:
    return pb.DType.Name(code) if code in pb.DType.values() else f"unknown dtype {code}"


def encode(array: np.ndarray, out: pb.Tensor | None = None) -> pb.Tensor:
    """Encode ``array`` as a Tensor (into ``out`` when given)."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    try:
        code = _TO_PROTO[np.dtype(dtype)]
    except KeyError:
        raise CodecError(f"dtype {array.dtype} cannot travel as a Tensor") from None
    tensor = out if out is not None else pb.Tensor()
    tensor.dtype = code
    tensor.shape[:] = array.shape
    tensor.data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return tensor


def decode(tensor: pb.Tensor, field: str = "tensor") -> np.ndarray:
    """Decode a Tensor to a read-only numpy array view over its bytes."""
    dtype = _FROM_PROTO.get(tensor.dtype)
    if dtype is None:
        raise CodecError(f"{field}: unsupported dtype ({dtype_name(tensor.dtype)})")
    shape = tuple(tensor.shape[:])  # slicing first: tuple() of the field itself is ~3x slower
    if len(shape) > MAX_DIMS:
        raise CodecError(f"{field}: {len(shape)} dimensions, at most {MAX_DIMS} allowed")
    count = 1
    for d in shape:  # one pass: this runs for every column of every batch
        if d < 0:
            raise CodecError(f"{field}: negative dimension in shape {list(shape)}")
        count *= d
    data = tensor.data  # each access builds a new bytes object: read it once
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise CodecError(
            f"{field}: {len(data)} data bytes, shape {list(shape)} of "
            f"{dtype_name(tensor.dtype)} needs {expected}"
        )
    try:
        arr = np.frombuffer(data, dtype=dtype)
        return arr if len(shape) == 1 else arr.reshape(shape)
    except ValueError:  # e.g. [0, 2**62, 2**62]: zero elements, but too big for numpy
        raise CodecError(f"{field}: shape {list(shape)} cannot be represented") from None


def proto_dtype_name(dtype) -> str:
    """The wire name of a numpy dtype, e.g. ``DTYPE_FLOAT32``."""
    return pb.DType.Name(_TO_PROTO[np.dtype(dtype)])
