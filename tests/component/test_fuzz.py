"""Fuzzing the replay server's input boundary with hypothesis, over real gRPC on loopback.

Every malformed Push must end the call with the precise status and a details string
that names the field, leave the buffer exactly as it was (size, inserted and a hash of
the storage arrays) and leave the server answering Info and health. Inputs that turn
out to be well-formed must be stored whole, byte for byte. The validator itself is
fuzzed directly: it returns columns that meet the spec exactly or raises BatchError.

One server serves a whole hypothesis test (the examples share it), so every example
must leave it as it found it, or re-take the baseline after an accepted batch.

Defects this fuzzing found (a numpy error escaping decode, INTERNAL and unfinished
calls for bytes that do not parse, bool bytes other than 0/1) are fixed and pinned by
the regression tests at the end of the file.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time

import grpc
import hypothesis
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dqn import codec, rpc
from dqn.config import build
from dqn.v1 import replay_pb2 as pb
from replay_server.server import SERVICE_NAME, ReplayServer
from replay_server.validation import BatchError, BatchSpec, validate_batch
from tests.component._helpers import N_ACTIONS, OBS_SHAPE, columns, info, make_batch, replay_stub

pytestmark = pytest.mark.component

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SERVING = health_pb2.HealthCheckResponse.SERVING
PUSH_METHOD = "/dqn.v1.ReplayService/Push"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

MAX_BATCH = 64  # replay.max_batch_transitions of the fuzzed server
CAPACITY = 100
N = 8  # rows of the batches the fuzz starts from
COLUMN_NAMES = ("obs", "action", "reward", "next_obs", "terminated", "discount")
FLOAT_COLUMNS = ("obs", "reward", "next_obs", "discount")
SPEC = BatchSpec(OBS_SHAPE, N_ACTIONS, MAX_BATCH)
WIRE_DTYPES = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT64: np.dtype("<f8"),
    pb.DTYPE_INT32: np.dtype("<i4"),
    pb.DTYPE_INT64: np.dtype("<i8"),
    pb.DTYPE_UINT8: np.dtype("u1"),
    pb.DTYPE_BOOL: np.dtype("?"),
}

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- oracles ----------------------------------------------------------------------------
def numpy_cannot_hold(shape, dtype) -> bool:
    """A zero-element shape numpy refuses to build (e.g. [0, 2**62, 2**62]).

    codec.decode lets numpy's ValueError escape for these; see
    test_zero_size_tensor_with_huge_dims_is_invalid_argument.
    """
    try:
        np.empty(0, dtype).reshape(shape)
    except ValueError:
        return True
    return False


def expected_error(name: str, code: int, shape, nbytes: int):
    """The (status, details) owed when column ``name`` of a good N-row batch is replaced by
    a tensor of dtype ``code``, ``shape`` and ``nbytes`` data bytes; None if well-formed.

    Checks run in the order the service documents: the action row claim first, then
    for each column dtype code, dimensions, byte count, dtype, shape and row count.
    """
    shape = [int(d) for d in shape]
    field = f"batch.{name}"
    if name == "action" and shape and shape[0] > MAX_BATCH:
        return EXHAUSTED, f"batch.action: {shape[0]} transitions, at most {MAX_BATCH} per batch"
    dtype = WIRE_DTYPES.get(code)
    if dtype is None:
        return INVALID, f"{field}: unsupported dtype ({codec.dtype_name(code)})"
    if len(shape) > codec.MAX_DIMS:
        return INVALID, f"{field}: {len(shape)} dimensions, at most {codec.MAX_DIMS} allowed"
    if any(d < 0 for d in shape):
        return INVALID, f"{field}: negative dimension in shape {shape}"
    need = math.prod(shape) * dtype.itemsize
    if need != nbytes:
        return INVALID, (
            f"{field}: {nbytes} data bytes, shape {shape} of {codec.dtype_name(code)} needs {need}"
        )
    if need == 0 and numpy_cannot_hold(shape, dtype):
        return INVALID, f"{field}: shape {shape} cannot be represented"
    want, inner = SPEC.columns[name]
    if dtype != want:
        return INVALID, (
            f"{field}: dtype {codec.dtype_name(code)}, expected {codec.proto_dtype_name(want)}"
        )
    if len(shape) != 1 + len(inner) or tuple(shape[1:]) != inner:
        return INVALID, f"{field}: shape {shape}, expected [{', '.join(['N', *map(str, inner)])}]"
    rows = shape[0]
    if name == "obs":
        if rows == 0:
            return INVALID, "batch.obs: empty batch (N = 0)"
        if rows > MAX_BATCH:
            return EXHAUSTED, f"batch.obs: {rows} transitions, at most {MAX_BATCH} per batch"
        if rows != N:  # obs sets N; the next column is the first to disagree
            return INVALID, f"batch.action: {N} rows, but batch.obs has {rows}"
    elif rows != N:
        return INVALID, f"{field}: {rows} rows, but batch.obs has {N}"
    return None


def value_error(name: str, arr: np.ndarray):
    """The (status, details) owed for the values of a well-formed column; None if fine."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return INVALID, f"batch.{name}: contains NaN or infinite values"
    if arr.dtype == np.bool_ and (arr.view(np.uint8) > 1).any():
        return INVALID, f"batch.{name}: bool bytes must be 0 or 1"
    if name == "action":
        bad = (arr < 0) | (arr >= N_ACTIONS)
        if bad.any():
            return INVALID, f"batch.action: value {int(arr[bad][0])} out of range [0, {N_ACTIONS})"
    if name == "discount" and ((arr < 0) | (arr > 1)).any():
        return INVALID, "batch.discount: values must lie in [0, 1]"
    return None


# -- the server under fuzz ----------------------------------------------------------------
def fingerprint(server) -> str:
    """A hash of everything the storage holds, taken under the servicer's lock."""
    storage = server.servicer.storage
    h = hashlib.blake2b(digest_size=16)
    with server.servicer.lock:
        h.update(f"{storage.cursor}/{storage.size}".encode())
        for name in sorted(storage.columns):
            h.update(name.encode())
            h.update(storage.columns[name].tobytes())
    return h.hexdigest()


class Harness:
    """One server and client for a whole hypothesis test (the examples share them)."""

    def __init__(self, server):
        self.server = server
        self.channel, self.stub = replay_stub(server.address, max_message_mb=16)
        self.raw_push = self.channel.stream_unary(
            PUSH_METHOD,
            request_serializer=lambda b: b,
            response_deserializer=pb.PushResponse.FromString,
        )
        self.health = health_pb2_grpc.HealthStub(self.channel)
        reply = self.send_all(make_batch(1, 0, N), make_batch(2, N, N))
        assert reply.accepted_batches == 2
        self.sequence = 3  # above every sequence accepted so far, from any actor
        self.stopped = False
        self._baseline()

    def close(self) -> None:
        self.channel.close()

    def _baseline(self) -> None:
        self.info = info(self.stub)
        self.fingerprint = fingerprint(self.server)

    def good_batch(self, **kw) -> pb.TransitionBatch:
        return make_batch(self.sequence, 1000, N, **kw)

    def send_all(self, *requests, timeout: float = 10.0) -> pb.PushResponse:
        if all(isinstance(r, bytes) for r in requests):
            return self.raw_push(iter(requests), timeout=timeout)
        wrapped = [
            pb.PushRequest(batch=r) if isinstance(r, pb.TransitionBatch) else r for r in requests
        ]
        return self.stub.Push(iter(wrapped), timeout=timeout)

    def refused(self, request, code, details: str, rejected: int | None = 1) -> grpc.RpcError:
        """``request`` ends the call with ``code`` and details starting ``details``, and
        changes nothing but the rejected counter (by ``rejected``; None: not checked)."""
        with pytest.raises(grpc.RpcError) as err:
            self.send_all(request)
        got = (err.value.code(), err.value.details())
        assert got[0] == code, got
        assert got[1].startswith(details), (got, details)
        if hypothesis.currently_in_test_context():
            event(f"refused: {got[0].name} {got[1].split(':', 1)[0]}")
        self.assert_untouched(rejected)
        return err.value

    def assert_untouched(self, rejected: int | None) -> None:
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == SERVING
        before, after = self.info, info(self.stub)
        assert (after.size, after.inserted, after.sampled, after.duplicate_batches) == (
            before.size,
            before.inserted,
            before.sampled,
            before.duplicate_batches,
        )
        assert [(a.actor_id, a.last_sequence) for a in after.actors] == [
            (a.actor_id, a.last_sequence) for a in before.actors
        ]
        if rejected is not None:
            assert after.rejected_batches == before.rejected_batches + rejected
        assert fingerprint(self.server) == self.fingerprint, "storage changed"
        self.info = after

    def accepted(self, request, batch: pb.TransitionBatch, cols: dict[str, np.ndarray]) -> None:
        """A well-formed ``request`` (holding ``batch``): stored whole at the ring cursor, or
        dropped as a duplicate when its (actor, incarnation, sequence) says so."""
        servicer, storage = self.server.servicer, self.server.servicer.storage
        with servicer.lock:
            cursor = storage.cursor
            duplicate = servicer.book.is_duplicate(batch)
        reply = self.send_all(request)
        n = len(cols["action"])
        event("duplicate" if duplicate else "accepted")
        if duplicate:
            assert (reply.accepted_batches, reply.duplicate_batches) == (0, 1)
            assert fingerprint(self.server) == self.fingerprint
            self._baseline()
            return
        assert (reply.accepted_batches, reply.accepted_transitions, reply.duplicate_batches) == (
            1,
            n,
            0,
        )
        after = info(self.stub)
        assert after.inserted == self.info.inserted + n
        assert after.size == min(CAPACITY, self.info.size + n)
        assert after.rejected_batches == self.info.rejected_batches
        with servicer.lock:
            stored = storage.gather((cursor + np.arange(n)) % storage.capacity)
        for name, col in cols.items():  # byte for byte: -0.0, NaN payloads, bool bytes
            assert stored[name].tobytes() == np.ascontiguousarray(col).tobytes(), name
        self.sequence = max(self.sequence, batch.sequence + 1)
        self._baseline()

    def expect(self, batch: pb.TransitionBatch, outcome, cols=None, request=None) -> None:
        """Send ``batch`` (or the raw ``request`` holding it) and check ``outcome``:
        (status, details) to be refused with, or None to be accepted holding ``cols``."""
        request = batch if request is None else request
        if outcome is None:
            self.accepted(request, batch, cols)
        else:
            self.refused(request, *outcome)


@pytest.fixture
def harness(replay_server_factory):
    h = Harness(replay_server_factory(max_batch_transitions=MAX_BATCH, capacity=CAPACITY))
    yield h
    h.close()


@pytest.fixture
def disposable_harness():
    """Like ``harness``, for tests that send bytes that do not parse as a PushRequest.

    grpc can leave such a call unfinished, and then stopping waits for it (see
    test_server_stops_after_undecodable_pushes), so this server is stopped from a
    daemon thread and abandoned if it has not stopped in 2 s.
    """
    config = build(
        {
            "replay": {
                "capacity": CAPACITY,
                "min_size": 1,
                "max_batch_transitions": MAX_BATCH,
                "host": "127.0.0.1",
                "port": 0,
                "samples_per_insert": 0,  # pushes with nobody sampling
            }
        }
    )
    server = ReplayServer(config, OBS_SHAPE, N_ACTIONS)
    server.start()
    h = Harness(server)
    yield h
    h.close()
    if not h.stopped:
        stop_in_background(server).join(2.0)


def stop_in_background(server) -> threading.Thread:
    stopper = threading.Thread(target=server.stop, args=(0.5,), name="stop-replay", daemon=True)
    stopper.start()
    return stopper


def with_tensor(
    batch: pb.TransitionBatch, name: str, *, array=None, code=None, shape=None, data=None
):
    """``batch`` with column ``name`` re-encoded from ``array`` and/or its parts replaced."""
    tensor = getattr(batch, name)
    if array is not None:
        codec.encode(array, tensor)
    if code is not None:
        tensor.dtype = code
    if shape is not None:
        tensor.shape[:] = shape
    if data is not None:
        tensor.data = data
    return batch


def good_columns() -> dict[str, np.ndarray]:
    return columns(1000, N)


# -- wire-level fuzz ----------------------------------------------------------------------
def valid_push_bytes(sequence: int) -> bytes:
    return pb.PushRequest(batch=make_batch(sequence, 1000, N)).SerializeToString()


push_mutations = st.one_of(
    st.tuples(st.just("random"), st.binary(max_size=600)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=48)),
    st.tuples(st.just("splice"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
)


def mutate_push(valid: bytes, mutation) -> bytes:
    kind, *args = mutation
    if kind == "random":
        return args[0]
    if kind == "truncate":
        return valid[: args[0] % len(valid)]
    if kind == "append":
        return valid + args[0]
    pos = args[0] % len(valid)
    return valid[:pos] + args[1] + valid[pos + len(args[1]) :]


@FUZZ
@given(mutation=push_mutations)
def test_random_bytes_as_a_serialized_push_request(disposable_harness, mutation):
    harness = disposable_harness
    raw = mutate_push(valid_push_bytes(harness.sequence), mutation)
    try:
        request = pb.PushRequest.FromString(raw)
    except DecodeError:
        # Not a PushRequest at all: refused as such, nothing stored.
        harness.refused(raw, INVALID, "request: not a valid dqn.v1.PushRequest message")
        return
    # Parses: the server must answer exactly as its validator does, batch by batch
    # (`batch`, then each of `batches`; appended bytes can add one of those).
    entries = [("batch", request.batch)] if request.HasField("batch") else []
    entries += [(f"batches[{i}]", b) for i, b in enumerate(request.batches)]
    entries = entries or [("batch", request.batch)]
    outcomes = []
    for name, batch in entries:
        try:
            outcomes.append((name, batch, validate_batch(batch, SPEC)))
        except BatchError as exc:
            assert exc.message.startswith("batch."), exc.message
            outcomes.append((name, batch, BatchError(exc.code, name + exc.message[5:])))
            break
    if len(outcomes) == 1:
        name, batch, got = outcomes[0]
        if isinstance(got, BatchError):
            harness.refused(raw, got.code, got.message)
        else:
            harness.accepted(raw, batch, {k: np.array(v) for k, v in got.items()})
        return
    # Several batches: each valid one before the first invalid one is stored (or
    # dropped as a duplicate) as if it came in a message of its own; then the call is
    # refused naming the invalid one.
    servicer = harness.server.servicer
    expected, newest = 0, {}
    for _, batch, got in outcomes:
        if isinstance(got, BatchError):
            break
        key = (batch.actor_id, batch.incarnation)
        with servicer.lock:
            duplicate = servicer.book.is_duplicate(batch)
        if not duplicate and batch.sequence > newest.get(key, 0):
            expected += len(got["action"])
            newest[key] = batch.sequence
    before = info(harness.stub)
    last = outcomes[-1][2]
    if isinstance(last, BatchError):
        with pytest.raises(grpc.RpcError) as err:
            harness.send_all(raw)
        assert (err.value.code(), err.value.details()) == (last.code, last.message)
    else:
        harness.send_all(raw)
    assert info(harness.stub).inserted - before.inserted == expected
    harness._baseline()


@FUZZ
@given(name=st.sampled_from(COLUMN_NAMES), data=st.data())
def test_random_bytes_inside_tensor_data(harness, name, data):
    dtype, inner = SPEC.columns[name]
    shape = [N, *inner]
    size = math.prod(shape) * dtype.itemsize
    exact = st.binary(min_size=size, max_size=size)
    raw = data.draw(
        st.one_of(exact, st.binary(max_size=2 * size + 9).filter(lambda b: len(b) != size)),
        label="data",
    )
    batch = with_tensor(harness.good_batch(), name, data=raw)
    outcome = expected_error(name, getattr(batch, name).dtype, shape, len(raw))
    cols = good_columns()
    if outcome is None:
        cols[name] = np.frombuffer(raw, dtype).reshape(shape)
        outcome = value_error(name, cols[name])
    harness.expect(batch, outcome, cols)


@FUZZ
@given(
    name=st.sampled_from(COLUMN_NAMES),
    code=st.one_of(
        st.sampled_from(sorted(pb.DType.values())),
        st.integers(-(2**31), 2**31 - 1),  # proto3 enums are open: any int32 arrives
    ),
    reencode=st.booleans(),
)
def test_wrong_and_unknown_dtypes(harness, name, code, reencode):
    """Any dtype code but the column's own: known codes re-encoded as real arrays of that
    type (or only relabelled), unknown codes (7.., negative) as the proto carries them."""
    want, inner = SPEC.columns[name]
    dtype = WIRE_DTYPES.get(code)
    assume(dtype != want)
    batch = harness.good_batch()
    if dtype is not None and reencode:
        with_tensor(batch, name, array=np.ones((N, *inner), dtype))
    else:
        with_tensor(batch, name, code=code)
    tensor = getattr(batch, name)
    assert tensor.dtype == code  # the open enum keeps unknown values
    outcome = expected_error(name, code, tensor.shape, len(tensor.data))
    assert outcome is not None
    harness.expect(batch, outcome)


small_shapes = st.lists(st.integers(0, 12), max_size=4)
many_dims = st.lists(st.integers(0, 2), min_size=codec.MAX_DIMS + 1, max_size=12)


@FUZZ
@given(name=st.sampled_from(COLUMN_NAMES), shape=st.one_of(small_shapes, many_dims))
def test_wrong_shape_with_consistent_bytes(harness, name, shape):
    dtype, inner = SPEC.columns[name]
    assume(shape != [N, *inner])
    array = np.zeros(shape, dtype)  # zeros are valid values in every column
    batch = with_tensor(harness.good_batch(), name, array=array)
    outcome = expected_error(name, getattr(batch, name).dtype, shape, array.nbytes)
    assert outcome is not None
    harness.expect(batch, outcome)


@FUZZ
@given(
    rows=st.integers(0, MAX_BATCH + 40),
    name=st.one_of(st.just("all"), st.sampled_from(COLUMN_NAMES)),
)
def test_wrong_row_count(harness, rows, name):
    """One column with ``rows`` rows (others have N), or every column at ``rows``: a
    batch of any size up to max_batch_transitions is fine, others are refused."""
    cols = good_columns()
    if name == "all":
        cols = columns(1000, rows)
        batch = make_batch(harness.sequence, cols=cols)
        if rows == 0:
            outcome = INVALID, "batch.obs: empty batch (N = 0)"
        elif rows > MAX_BATCH:
            outcome = EXHAUSTED, f"batch.action: {rows} transitions, at most {MAX_BATCH} per batch"
        else:
            outcome = None
    else:
        assume(rows != N)
        array = columns(1000, rows)[name]
        batch = with_tensor(harness.good_batch(), name, array=array)
        outcome = expected_error(name, getattr(batch, name).dtype, array.shape, array.nbytes)
        assert outcome is not None
    harness.expect(batch, outcome, cols)


nonfinite_bits = st.builds(
    lambda sign, mantissa: (sign << 31) | (0xFF << 23) | mantissa,  # inf (0) or a NaN payload
    st.integers(0, 1),
    st.one_of(st.just(0), st.just(1 << 22), st.integers(0, (1 << 23) - 1)),
)


@FUZZ
@given(name=st.sampled_from(FLOAT_COLUMNS), data=st.data())
def test_nan_and_inf_at_random_positions(harness, name, data):
    cols = good_columns()
    arr = cols[name].copy()
    flat = arr.view(np.uint32).reshape(-1)
    positions = data.draw(
        st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=flat.size, unique=True),
        label="positions",
    )
    bits = data.draw(
        st.lists(nonfinite_bits, min_size=len(positions), max_size=len(positions)), label="bits"
    )
    flat[positions] = bits
    assert not np.isfinite(arr).all()
    batch = with_tensor(harness.good_batch(), name, array=arr)
    harness.expect(batch, (INVALID, f"batch.{name}: contains NaN or infinite values"))


negative_shapes = st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=10).filter(
    lambda s: any(d < 0 for d in s)
)
huge_shapes = st.lists(
    st.one_of(st.integers(0, 16), st.integers(2**20, INT64_MAX), st.just(INT64_MAX)),
    max_size=10,
).filter(lambda s: any(d >= 2**20 for d in s))


@FUZZ
@given(name=st.sampled_from(COLUMN_NAMES), shape=st.one_of(negative_shapes, huge_shapes))
def test_negative_dims_and_huge_claimed_counts(harness, name, shape):
    """The shape lies about the data: negative extents, or counts no message could carry."""
    batch = with_tensor(harness.good_batch(), name, shape=shape)
    tensor = getattr(batch, name)
    outcome = expected_error(name, tensor.dtype, shape, len(tensor.data))
    assert outcome is not None
    harness.expect(batch, outcome)


bad_actions = st.one_of(
    st.sampled_from([INT64_MIN, INT64_MAX, -1, N_ACTIONS]),
    st.integers(INT64_MIN, -1),
    st.integers(N_ACTIONS, INT64_MAX),
)


@FUZZ
@given(data=st.data())
def test_out_of_range_actions(harness, data):
    cols = good_columns()
    action = cols["action"].copy()
    positions = data.draw(
        st.lists(st.integers(0, N - 1), min_size=1, max_size=N, unique=True), label="positions"
    )
    action[positions] = data.draw(
        st.lists(bad_actions, min_size=len(positions), max_size=len(positions)), label="values"
    )
    first = int(action[min(positions)])
    batch = with_tensor(harness.good_batch(), "action", array=action)
    harness.expect(batch, (INVALID, f"batch.action: value {first} out of range [0, {N_ACTIONS})"))


# -- unknown fields -----------------------------------------------------------------------
def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_bytes(number: int, wire: int, payload) -> bytes:
    tag = varint(number << 3 | wire)
    if wire == 0:
        return tag + varint(payload)
    if wire == 2:
        return tag + varint(len(payload)) + payload
    return tag + payload  # 1: fixed64, 5: fixed32 (payload already 8 or 4 bytes)


unknown_numbers = st.one_of(st.integers(20, 18_999), st.integers(20_000, 2**29 - 1))
unknown_fields = st.lists(
    st.one_of(
        st.builds(field_bytes, unknown_numbers, st.just(0), st.integers(0, 2**64 - 1)),
        st.builds(field_bytes, unknown_numbers, st.just(1), st.binary(min_size=8, max_size=8)),
        st.builds(field_bytes, unknown_numbers, st.just(2), st.binary(max_size=64)),
        st.builds(field_bytes, unknown_numbers, st.just(5), st.binary(min_size=4, max_size=4)),
    ),
    max_size=4,
).map(b"".join)

TENSOR_FIELD = {
    name: pb.TransitionBatch.DESCRIPTOR.fields_by_name[name].number for name in COLUMN_NAMES
}


def push_bytes_with_unknowns(batch, in_push: bytes, in_batch: bytes, column: str, in_tensor: bytes):
    """``PushRequest{batch}`` serialized by hand, with unknown fields at three depths."""
    tensor = getattr(batch, column).SerializeToString() + in_tensor
    rest = pb.TransitionBatch()
    rest.CopyFrom(batch)
    rest.ClearField(column)
    body = rest.SerializeToString() + field_bytes(TENSOR_FIELD[column], 2, tensor) + in_batch
    return field_bytes(1, 2, body) + in_push


@FUZZ
@given(
    in_push=unknown_fields,
    in_batch=unknown_fields,
    in_tensor=unknown_fields,
    column=st.sampled_from(COLUMN_NAMES),
    poison=st.booleans(),
)
def test_unknown_fields_are_ignored(harness, in_push, in_batch, in_tensor, column, poison):
    """Unknown fields (a newer client) change nothing: a good batch is stored exactly, a
    bad one gets the same precise refusal it would get without them."""
    cols = good_columns()
    if poison:
        cols["reward"] = cols["reward"].copy()
        cols["reward"][5] = np.nan
    batch = make_batch(harness.sequence, cols=cols)
    raw = push_bytes_with_unknowns(batch, in_push, in_batch, column, in_tensor)
    parsed = pb.PushRequest.FromString(raw)
    assert parsed.ByteSize() == len(raw)  # the unknown fields were kept
    parsed.DiscardUnknownFields()
    assert parsed.batch == batch  # and every known field intact
    outcome = (INVALID, "batch.reward: contains NaN or infinite values") if poison else None
    harness.expect(batch, outcome, cols, request=raw)


# -- over the transport limit -------------------------------------------------------------
@pytest.fixture
def small_harness(replay_server_factory):
    server = replay_server_factory(
        max_message_mb=1, max_batch_transitions=100_000, capacity=CAPACITY
    )
    h = Harness(server)
    yield h
    h.close()


LIMIT = 1 << 20


@settings(FUZZ, max_examples=16)
@given(
    how=st.sampled_from(["rows", "unknown field", "tensor data", "episodes"]),
    extra=st.integers(1, LIMIT),
)
def test_payload_over_max_message_size_is_resource_exhausted(small_harness, how, extra):
    h = small_harness
    if how == "rows":  # a valid batch, just too big (49 bytes a transition)
        batch = make_batch(h.sequence, 0, (LIMIT + extra) // 49 + 1)
        raw = pb.PushRequest(batch=batch).SerializeToString()
    elif how == "unknown field":
        raw = pb.PushRequest(batch=h.good_batch()).SerializeToString()
        raw += field_bytes(77, 2, b"\x00" * (LIMIT + extra))
    elif how == "tensor data":
        batch = with_tensor(h.good_batch(), "obs", data=b"\x01" * (LIMIT + extra))
        raw = pb.PushRequest(batch=batch).SerializeToString()
    else:
        ep = pb.Episode(actor_id=1, episode_return=1.5, length=3)
        count = (LIMIT + extra) // (ep.ByteSize() + 2) + 1  # + tag and length bytes
        batch = h.good_batch(episodes=[ep] * count)
        raw = pb.PushRequest(batch=batch).SerializeToString()
    assert len(raw) > LIMIT
    err = h.refused(raw, EXHAUSTED, "", rejected=0)
    assert "larger than max" in err.details() and str(LIMIT) in err.details(), err.details()


# -- the validator on its own -------------------------------------------------------------
@st.composite
def batch_specs(draw):
    return BatchSpec(
        obs_shape=draw(st.lists(st.integers(1, 3), max_size=3)),
        n_actions=draw(st.integers(1, 6)),
        max_transitions=draw(st.integers(1, 24)),
    )


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def spec_columns(draw, spec: BatchSpec) -> dict[str, np.ndarray]:
    n = draw(st.integers(1, spec.max_transitions))
    obs_shape = (n, *spec.obs_shape)
    return {
        "obs": draw(hnp.arrays(np.float32, obs_shape, elements=finite32)),
        "action": draw(hnp.arrays(np.int64, n, elements=st.integers(0, spec.n_actions - 1))),
        "reward": draw(hnp.arrays(np.float32, n, elements=finite32)),
        "next_obs": draw(hnp.arrays(np.float32, obs_shape, elements=finite32)),
        "terminated": draw(hnp.arrays(np.bool_, n)),
        "discount": draw(hnp.arrays(np.float32, n, elements=st.floats(0, 1, width=32))),
    }


any_shape = st.lists(
    st.one_of(st.integers(0, 6), st.integers(0, 40), st.integers(INT64_MIN, INT64_MAX)),
    max_size=codec.MAX_DIMS + 2,
)


def mutations():
    name = st.sampled_from(COLUMN_NAMES)
    float_name = st.sampled_from(FLOAT_COLUMNS)
    return st.one_of(
        st.tuples(st.just("clear"), name),
        st.tuples(
            st.just("dtype"), name, st.integers(-(2**31), 2**31 - 1) | st.sampled_from(range(7))
        ),
        st.tuples(st.just("shape"), name, any_shape),
        st.tuples(st.just("data"), name, st.binary(max_size=256)),
        st.tuples(
            st.just("reencode"),
            name,
            st.sampled_from(list(WIRE_DTYPES.values())).flatmap(
                lambda dt: hnp.arrays(
                    dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)
                )
            ),
        ),
        st.tuples(st.just("value"), float_name, st.integers(0, 10**6), st.floats(width=32)),
        st.tuples(
            st.just("value"),
            st.just("action"),
            st.integers(0, 10**6),
            st.integers(INT64_MIN, INT64_MAX),
        ),
        st.tuples(st.just("sequence"), st.integers(0, 2**64 - 1)),
    )


def apply(batch: pb.TransitionBatch, cols: dict[str, np.ndarray], mutation) -> None:
    kind, *args = mutation
    if kind == "sequence":
        batch.sequence = args[0]
        return
    name, *args = args
    tensor = getattr(batch, name)
    if kind == "clear":
        batch.ClearField(name)
    elif kind == "dtype":
        tensor.dtype = args[0]
    elif kind == "shape":
        tensor.shape[:] = args[0]
    elif kind == "data":
        tensor.data = args[0]
    elif kind == "reencode":
        codec.encode(args[0], tensor)
    else:  # "value": one element of the column as sent, rewritten
        arr = cols[name].copy()
        if arr.size:
            arr.reshape(-1)[args[0] % arr.size] = args[1]
        codec.encode(arr, tensor)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_validator_returns_spec_arrays_or_raises_batch_error(data):
    spec = data.draw(batch_specs(), label="spec")
    cols = data.draw(spec_columns(spec), label="columns")
    batch = pb.TransitionBatch(
        actor_id=1, sequence=data.draw(st.integers(1, 2**53))
    )  # 2**53: the largest counter a batch may carry
    for name, arr in cols.items():
        codec.encode(arr, getattr(batch, name))
    count = data.draw(st.sampled_from([1, 2, 1, 3, 1, 2, 0]), label="count")
    todo = data.draw(st.lists(mutations(), min_size=count, max_size=count), label="mutations")
    for mutation in todo:
        apply(batch, cols, mutation)
    try:
        out = validate_batch(batch, spec)
    except BatchError as exc:
        event(f"BatchError: {exc.code.name} {exc.message.split(':', 1)[0]}")
        assert todo, f"a batch that meets the spec was refused: {exc.message}"
        assert exc.code in (INVALID, EXHAUSTED), exc.code
        field = exc.message.split(":", 1)[0]
        assert field in {"batch.sequence", *(f"batch.{n}" for n in spec.columns)}, exc.message
        assert exc.message.startswith(f"{field}: ") and len(exc.message) > len(field) + 2
        if exc.code == EXHAUSTED:
            assert f"transitions, at most {spec.max_transitions} per batch" in exc.message
        return
    # Accepted: exactly the spec, and exactly the bytes that were sent.
    event("accepted" if todo else "accepted (unmutated)")
    assert batch.sequence >= 1
    assert list(out) == list(spec.columns)
    n = len(out["action"])
    assert 1 <= n <= spec.max_transitions
    for name, (dtype, inner) in spec.columns.items():
        arr = out[name]
        assert arr.dtype == dtype and arr.shape == (n, *inner), (name, arr.dtype, arr.shape)
        assert arr.tobytes() == getattr(batch, name).data, name
        if dtype.kind == "f":
            assert np.isfinite(arr).all(), name
    assert ((out["action"] >= 0) & (out["action"] < spec.n_actions)).all()
    assert ((out["discount"] >= 0) & (out["discount"] <= 1)).all()
    if not todo:
        for name, arr in cols.items():
            assert out[name].tobytes() == arr.tobytes(), name


# -- regressions: defects this fuzzing found ---------------------------------------------
def test_zero_size_tensor_with_huge_dims_is_invalid_argument(harness):
    for shape in ([0, 2**62, 2**62], [INT64_MAX, 0]):
        with pytest.raises(BatchError):
            validate_batch(with_tensor(harness.good_batch(), "obs", shape=shape, data=b""), SPEC)
        batch = with_tensor(harness.good_batch(), "obs", shape=shape, data=b"")
        harness.refused(batch, INVALID, "batch.obs: ")


def test_undecodable_push_request_is_invalid_argument(disposable_harness):
    disposable_harness.refused(b"\xff\xff\xff", INVALID, "request: not a valid", rejected=1)


def test_server_stops_after_undecodable_pushes(disposable_harness):
    h = disposable_harness
    for _ in range(50):  # about one in four such calls is left unfinished
        with pytest.raises(grpc.RpcError):
            h.send_all(b"\xff\xff\xff")
    h.assert_untouched(rejected=None)
    h.stopped = True
    start = time.monotonic()
    stopper = stop_in_background(h.server)
    stopper.join(30)
    elapsed = time.monotonic() - start
    assert not stopper.is_alive(), "ReplayServer.stop(grace=0.5) never returned"
    # Unfinished calls are cut at the grace: stop() is bounded by it plus the
    # server's own slack (rpc.STOP_SLACK_S), not by the calls.
    assert elapsed < 0.5 + rpc.STOP_SLACK_S, f"ReplayServer.stop(grace=0.5) took {elapsed:.1f} s"


def test_non_canonical_bool_bytes_are_refused(harness):
    batch = with_tensor(harness.good_batch(), "terminated", data=bytes([0, 1, 2, 0, 0, 0, 0, 255]))
    harness.refused(batch, INVALID, "batch.terminated: ")
