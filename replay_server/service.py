"""The ``dqn.v1.ReplayService`` servicer: validation, dedup, flow control, sampling.

Every RPC is a coroutine on the server's one event loop (``dqn.rpc.AioServer``), so
an open Push stream, a pusher held back by the rate limiter or a Sample waiting for
data costs a coroutine, not a thread: a fleet of hundreds of actors is served by
one thread. State changes only on the loop, each in one synchronous step (no await
between a check and the change it guards); ``lock`` is held for those steps so the
checkpoint thread and ``/metrics`` scrapes, which read from other threads, see a
consistent state. CPU-bound work (batch checks, ring writes, gather) runs inline:
it stalls the loop for one call's own work, which ``AioServer.take_loop_lag``
measures; nothing waits on the loop while holding the lock.

Waiting calls are bounded (``max_waiting_pushers``, ``max_waiting_samplers``) and
refused past that with a precise status and a ``retry-after-ms`` hint, which the
project's clients honour (``dqn.retry``).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from dqn import codec
from dqn.interfaces import TRANSITION_COLUMNS as COLUMNS
from dqn.rpc import RETRY_AFTER_KEY
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from replay_server import checkpoint
from replay_server.bookkeeping import MAX_COUNTER, ActorBook, saturate
from replay_server.priorities import Priorities
from replay_server.rate_limiter import RateLimiter
from replay_server.storage import RingStorage
from replay_server.validation import (
    BatchError,
    BatchSpec,
    validate_batch,
    validate_priority_update,
)

MAX_SAMPLE_TRANSITIONS = 1 << 20
INSERTED, SAMPLED = "inserted", "sampled"  # what a waiting call waits for
DUPLICATE, ADMIT = "duplicate", "admit"  # a pushed batch's verdict (_admission)
MAX_PRIORITIZED_SAMPLE = 1 << 16  # rows per Sample on a prioritized server
EPISODES_KEPT = 10_000
# Bytes a SampleResponse spends besides its rows (field tags, shapes, counters): a
# generous bound, so an answer judged to fit always does.
SAMPLE_OVERHEAD_BYTES = 4096
SNAPSHOT_CHUNK_BYTES = 4 << 20  # a checkpoint copies this much per hold of the lock
SNAPSHOT_PASSES = 3  # catch-up passes over slots written during a checkpoint's copy
ENCODE_OFF_LOOP_BYTES = 1 << 20  # Sample answers larger than this are encoded off the loop
PUSH_IDLE_S = 30.0  # a Push stream is closed after this long without a message
MAX_SAMPLE_WAIT_S = 60.0  # a Sample waits at most this long, whatever timeout_ms says
MAX_PUSH_WAIT_S = 60.0  # a push held back by the band waits at most this long
RATE_LIMITED_RETRY_MS = 200  # the hint given to a pusher refused while others wait


class ReplayServicer(pb_grpc.ReplayServiceServicer):
    """Holds the storage; every mutation happens on the loop, under ``lock``."""

    def __init__(
        self,
        storage: RingStorage,
        spec: BatchSpec,
        limiter: RateLimiter,
        rng: np.random.Generator,
        max_waiting_pushers: int = 256,
        max_waiting_samplers: int = 64,
        priorities: Priorities | None = None,
        max_message_bytes: int = 64 << 20,
    ):
        self.storage = storage
        self.priorities = priorities  # None: uniform replay, and no PER cost anywhere
        self.spec = spec
        self.limiter = limiter
        self.rng = rng
        self.lock = threading.Lock()
        self.stopping = False
        self.max_waiting_pushers = max_waiting_pushers
        self.max_waiting_samplers = max_waiting_samplers
        self.waiting_pushers = 0
        self.waiting_samplers = 0
        # What waiting calls wait for, each event made on the loop and replaced when set
        # (see _notify): an insert can only let a Sample through (more data), a sample
        # can only let a push through (the band moves), so each wakes only its waiters.
        self._events: dict[str, asyncio.Event] = {}
        self.inserted = 0
        self.sampled = 0
        self.rejected = 0
        self.duplicates = 0
        self.learner_version = 0
        self.book = ActorBook()
        self.max_message_bytes = max_message_bytes
        # Bytes one sampled row takes in a SampleResponse (index, key, probability too
        # on a prioritized server), to refuse answers that could never be sent.
        self.sample_row_bytes = sum(col[:1].nbytes for col in storage.columns.values()) + (
            24 if priorities is not None else 0
        )
        self.episodes: collections.deque[tuple[int, pb.Episode]] = collections.deque(
            maxlen=EPISODES_KEPT
        )
        self.episodes_total = 0
        self.priority_updates = 0
        self.stale_priority_updates = 0

    def stop(self) -> None:
        """Wake every waiting call so the server can shut down (on the loop: an
        ``AioServer.on_stop`` hook)."""
        self.stopping = True
        self._notify(INSERTED, SAMPLED)

    def _notify(self, *what: str) -> None:
        """Wake the calls waiting for ``what`` (INSERTED, SAMPLED) to look again."""
        for name in what:
            event = self._events.pop(name, None)
            if event is not None:
                event.set()

    async def _wait(self, ready, on: str, deadline: float | None = None) -> bool:
        """Wait until ``ready()``, looking again each time ``on`` happens; False on stop
        or when ``deadline`` (monotonic) passes. The caller acts on a True at once,
        before it awaits anything else."""
        while not ready():
            if self.stopping:
                return False
            changed = self._events.get(on)
            if changed is None:
                changed = self._events[on] = asyncio.Event()
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return False
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                return False
        return not self.stopping

    # -- checkpoints --------------------------------------------------------------
    COUNTERS = ("inserted", "sampled", "rejected", "duplicates", "episodes_total")

    def snapshot(self) -> checkpoint.ReplayState:
        """A consistent copy of the whole state, taken without holding the lock for the
        whole copy (the loop would wait on it: health and every call with it).

        The columns are copied in chunks of about SNAPSHOT_CHUNK_BYTES, each under the
        lock; pushes go on in between. The slots written meanwhile (``inserted`` says how
        many, ending at the cursor) are copied again the same way, a few passes while
        there are more than a chunk of them; then, under the lock once more, the last
        few with everything small. The result is the state at that moment.
        """
        s = self.storage
        copy = {name: np.empty_like(col) for name, col in s.columns.items()}
        row_bytes = max(1, sum(col[:1].nbytes for col in s.columns.values()))
        chunk = max(1, SNAPSHOT_CHUNK_BYTES // row_bytes)

        def copy_rows(rows) -> None:  # under the lock, the caller holds it
            for name, col in s.columns.items():
                copy[name][rows] = col[rows]

        with self.lock:
            mark, size = self.inserted, s.size
        for lo in range(0, size, chunk):
            with self.lock:
                copy_rows(slice(lo, lo + chunk))
        for _ in range(SNAPSHOT_PASSES):  # catch up with the pushes, still in chunks
            with self.lock:
                if self.inserted - mark <= chunk:
                    break
                slots = _written_slots(s.cursor, self.inserted - mark, s.capacity)
                mark = self.inserted
            for lo in range(0, len(slots), chunk):
                with self.lock:
                    copy_rows(slots[lo : lo + chunk])
        with self.lock:
            copy_rows(_written_slots(s.cursor, self.inserted - mark, s.capacity))
            return checkpoint.ReplayState(
                capacity=s.capacity,
                obs_shape=s.obs_shape,
                obs_dtype=s.obs_dtype.str,
                n_actions=self.spec.n_actions,
                cursor=s.cursor,
                size=s.size,
                columns={name: col[: s.size] for name, col in copy.items()},
                counters={
                    **{k: getattr(self, k) for k in self.COUNTERS},
                    "learner_version": self.learner_version,
                },
                actors=self.book.state(),
                episodes=list(self.episodes),
                limiter=checkpoint.limiter_state(self.limiter),
                priorities=self.priorities.state(s.size) if self.priorities else None,
            )

    def restore(self, state: checkpoint.ReplayState, path: str = "") -> None:
        """Replace the whole state by ``state``; CheckpointError (nothing changed) if it
        was written for another capacity, obs shape/dtype or action count."""
        s = self.storage
        checkpoint.check_compatible(
            state, s.capacity, s.obs_shape, s.obs_dtype, self.spec.n_actions, path
        )
        book = ActorBook(self.book.actors_kept, self.book.lives_kept)
        try:  # first, so that a malformed actor table changes nothing
            book.load_state(state.actors)
        except (KeyError, TypeError, ValueError) as exc:
            raise checkpoint.CheckpointError(
                f"replay.checkpoint_path: {path}: actors: malformed ({exc!r})"
            ) from None
        with self.lock:
            s.load_state({"cursor": state.cursor, "size": state.size, **state.full_columns()})
            for name in (*self.COUNTERS, "learner_version"):
                setattr(self, name, saturate(state.counters[name]))
            self.book = book
            self.episodes.clear()
            self.episodes.extend(state.episodes)
            checkpoint.load_limiter_state(self.limiter, state.limiter)
            if self.priorities is not None:
                self.priorities.load_state(state.priorities, state.size)

    # -- Push ---------------------------------------------------------------------
    async def Push(self, request_iterator, context):
        accepted = transitions = duplicates = 0
        messages = aiter(request_iterator)
        while True:
            try:  # a stream that sends nothing for PUSH_IDLE_S holds nothing for long
                raw = await asyncio.wait_for(anext(messages), PUSH_IDLE_S)
            except StopAsyncIteration:
                break
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"Push stream idle for {PUSH_IDLE_S:g} s; closed (batches acknowledged "
                    "by no reply are dropped as duplicates when sent again)",
                )
            try:
                batches = _batches_of(_parse(pb.PushRequest, raw))
            except BatchError as exc:
                await self._refuse(context, exc)
            for name, batch in batches:
                try:
                    columns = validate_batch(batch, self.spec)
                    n = len(columns["action"])
                    self._check_admissible(n)
                except BatchError as exc:
                    await self._refuse(context, exc.naming(name))
                verdict = self._admission(batch, n)
                if verdict is None:
                    verdict = await self._wait_to_insert(batch, n, context)
                if verdict is DUPLICATE:
                    self.duplicates += 1
                    duplicates += 1
                    continue
                self._store(batch, columns, n)
                accepted += 1
                transitions += n
        return pb.PushResponse(
            accepted_batches=accepted,
            accepted_transitions=transitions,
            duplicate_batches=duplicates,
        )

    def _admission(self, batch: pb.TransitionBatch, n: int) -> str | None:
        """The one dedup and flow-control decision for a batch of ``n`` rows: DUPLICATE
        (its life has stored this sequence already), ADMIT (new, and the band has room),
        or None (new, no room yet: wait)."""
        if self.book.is_duplicate(batch):
            return DUPLICATE
        if self.limiter.can_insert(n):
            return ADMIT
        return None

    def _store(self, batch: pb.TransitionBatch, columns: dict, n: int) -> None:
        """Write a validated, admitted, new batch: one synchronous step."""
        with self.lock:
            slots = self.storage.add(columns)
            if self.priorities is not None:
                raw = columns.get("priority")
                self.priorities.on_insert(slots, None if raw is None else raw[-len(slots) :])
            self.limiter.record_insert(self.storage.size, n)
            self.inserted += n
            self.book.record(batch)
            # An actor can only hold a version the learner already published.
            self.learner_version = max(self.learner_version, batch.policy_version)
            env_steps = saturate(self.book.env_steps())  # this batch's steps included
            for ep in batch.episodes:
                self.episodes_total += 1
                kept = pb.Episode()
                kept.CopyFrom(ep)  # a sub-message would keep its whole request alive
                kept.env_steps = env_steps  # its place on the learning curve
                self.episodes.append((self.episodes_total, kept))
        self._notify(INSERTED)

    async def _wait_to_insert(self, batch: pb.TransitionBatch, n: int, context) -> str:
        """Backpressure: hold the push until :meth:`_admission` decides (the band admits
        it, or it turns out to be a duplicate) and return that verdict. At most
        ``max_waiting_pushers`` wait at once; the next one gets UNAVAILABLE with a retry
        hint, which the writers honour."""
        if self.waiting_pushers >= self.max_waiting_pushers:
            await _busy(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"replay is rate limited and {self.waiting_pushers} pushers wait already",
            )
        self.waiting_pushers += 1
        try:
            # A sample moves the band; a re-send waiting here beside its original is
            # dropped as a duplicate at the same wake-up.
            ok = await self._wait(
                lambda: self._admission(batch, n) is not None,
                SAMPLED,
                time.monotonic() + MAX_PUSH_WAIT_S,  # a client with no deadline holds
            )  # a waiting place for this long at most
        finally:
            self.waiting_pushers -= 1
        if not ok and self.stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replay server is shutting down")
        if not ok:
            await _busy(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"replay is rate limited: held back {MAX_PUSH_WAIT_S:g} s without room",
            )
        return self._admission(batch, n)  # decided: acted on before any other await

    # -- Sample -------------------------------------------------------------------
    async def Sample(self, request, context):
        try:
            request = _parse(pb.SampleRequest, request)
        except BatchError as exc:
            await self._refuse(context, exc)
        b, k = request.batch_size, request.num_batches
        error = self._sample_error(request)
        if error is not None:
            await context.abort(*error)
        total = b * k
        timeout = min(request.timeout_ms / 1000.0, MAX_SAMPLE_WAIT_S)
        self.learner_version = max(self.learner_version, request.learner_version)
        if not self.limiter.can_sample(self.storage.size, total):
            if timeout > 0 and self.waiting_samplers >= self.max_waiting_samplers:
                await _busy(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self.waiting_samplers} Sample calls wait already (the limit)",
                )
            self.waiting_samplers += 1
            try:
                ok = await self._wait(
                    lambda: self.limiter.can_sample(self.storage.size, total),
                    INSERTED,
                    time.monotonic() + timeout,
                )
            finally:
                self.waiting_samplers -= 1
            if not ok:
                return pb.SampleResponse(
                    num_batches=0,
                    batch_size=b,
                    reason=self.limiter.why_not_sample(self.storage.size, total),
                )
        return await self._answer(b, k)

    def _sample_error(self, request: pb.SampleRequest) -> tuple | None:
        """``(code, details)`` for a request that is refused before any work, or None."""
        b, k = request.batch_size, request.num_batches
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if b < 1:
            return invalid, "batch_size: must be >= 1"
        if k < 1:
            return invalid, "num_batches: must be >= 1"
        total = b * k
        if total > MAX_SAMPLE_TRANSITIONS:
            return invalid, f"batch_size * num_batches: {total} exceeds {MAX_SAMPLE_TRANSITIONS}"
        if self.priorities is not None and total > MAX_PRIORITIZED_SAMPLE:
            # Stratified draws walk the sum tree per row, on the loop: bounded per call.
            return (
                invalid,
                f"batch_size * num_batches: {total} exceeds {MAX_PRIORITIZED_SAMPLE} on a "
                "prioritized server",
            )
        if request.learner_version > MAX_COUNTER:
            return (
                invalid,
                f"learner_version: {request.learner_version} exceeds the largest allowed, 2**53",
            )
        answer = total * self.sample_row_bytes + SAMPLE_OVERHEAD_BYTES
        if answer > self.max_message_bytes:
            # Refused before any work: nothing is allocated, nothing counted as sampled.
            return (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"batch_size * num_batches: {total} rows of {self.sample_row_bytes} bytes "
                f"would make a {answer:,}-byte answer, over the message limit of "
                f"{self.max_message_bytes:,} bytes (replay.max_message_mb)",
            )
        return None

    def _draw(self, b: int, k: int) -> tuple:
        """Draw and gather ``k`` batches of ``b`` now (the band admits them): the part
        that needs the storage, under the lock on the loop."""
        total = b * k
        with self.lock:
            if self.priorities is None:
                idx = self.rng.integers(0, self.storage.size, size=total)
                drawn = (self.storage.gather(idx), None)
            else:
                idx, keys, prob, min_prob = self.priorities.sample(b, k, self.rng)
                drawn = (self.storage.gather(idx), (idx, keys, prob, min_prob))
            self.limiter.record_sample(total)
            self.sampled += total
        self._notify(SAMPLED)
        return drawn

    def _encode(self, b: int, k: int, columns: dict, prioritized: tuple | None) -> bytes:
        """The SampleResponse for drawn rows, serialized (no state: any thread)."""
        response = pb.SampleResponse(num_batches=k, batch_size=b)
        for name in COLUMNS:
            codec.encode(columns[name], getattr(response, name))
        if prioritized is not None:
            idx, keys, prob, min_prob = prioritized
            codec.encode(idx.astype(np.int64, copy=False), response.index)
            codec.encode(keys, response.key)
            codec.encode(prob, response.probability)
            response.min_probability = min_prob
        return response.SerializeToString()

    async def _answer(self, b: int, k: int) -> bytes:
        """Draw on the loop; encode and serialize a large answer in a worker thread, so
        the loop (health, pushes, Info) runs between the GIL's switches meanwhile
        instead of waiting for the whole serialization."""
        drawn = self._draw(b, k)
        if b * k * self.sample_row_bytes > ENCODE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(self._encode, b, k, *drawn)
        return self._encode(b, k, *drawn)

    # -- UpdatePriorities ---------------------------------------------------------
    async def UpdatePriorities(self, request, context):
        try:
            request = _parse(pb.UpdatePrioritiesRequest, request)
            if self.priorities is None:
                raise BatchError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "replay.prioritized: this replay server samples uniformly",
                )
            return self._update_priorities(request)
        except BatchError as exc:
            await self._refuse(context, exc, count=exc.code != grpc.StatusCode.FAILED_PRECONDITION)

    def _update_priorities(self, request) -> pb.UpdatePrioritiesResponse:
        with self.lock:
            index, key, priority = validate_priority_update(
                request, self.storage.capacity, self.storage.size
            )
            stale = self.priorities.update(index, key, priority)
            self.priority_updates += len(index) - stale
            self.stale_priority_updates += stale
        return pb.UpdatePrioritiesResponse(updated=len(index) - stale, stale=stale)

    # -- Info ---------------------------------------------------------------------
    async def Info(self, request, context):
        try:
            request = _parse(pb.InfoRequest, request)
        except BatchError as exc:
            await self._refuse(context, exc)
        return self.info(request)

    def info(self, request: pb.InfoRequest) -> pb.InfoResponse:
        """Counters, per-actor state and recent episodes (any thread; never blocks on
        more than the lock)."""
        with self.lock:
            reply = pb.InfoResponse(
                capacity=self.storage.capacity,
                size=self.storage.size,
                inserted=saturate(self.inserted),
                sampled=saturate(self.sampled),
                rejected_batches=saturate(self.rejected),
                duplicate_batches=saturate(self.duplicates),
                episodes_total=saturate(self.episodes_total),
                episodes_cursor=saturate(self.episodes_total),
                samples_per_insert=self.sampled / self.inserted if self.inserted else 0.0,
                obs_bytes=self.storage.nbytes,
                num_actions=self.spec.n_actions,
                obs_shape=self.spec.obs_shape,
                priority_updates=saturate(self.priority_updates),
                stale_priority_updates=saturate(self.stale_priority_updates),
            )
            self.book.fill_info(reply, self.learner_version)
            for cursor, ep in self.episodes:
                if cursor > request.episodes_after:
                    reply.episodes.append(ep)
        return reply

    # -- helpers ------------------------------------------------------------------
    async def _refuse(self, context, exc: BatchError, count: bool = True):
        """End the call with ``exc``'s status (counted in ``rejected`` unless not)."""
        if count:
            with self.lock:
                self.rejected += 1
        await context.abort(exc.code, exc.message)

    def _check_admissible(self, n: int) -> None:
        largest = self.limiter.largest_insert()
        if largest is not None and n > largest:
            raise BatchError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"batch.action: {n} transitions can never pass the rate limiter band "
                f"(at most {largest} per batch with these settings)",
            )


def _written_slots(cursor: int, written: int, capacity: int) -> np.ndarray:
    """The ring slots the last ``written`` inserts went to (all of them past a lap)."""
    if written >= capacity:
        return np.arange(capacity)
    return (cursor - written + np.arange(written)) % capacity


async def _busy(context, code: grpc.StatusCode, why: str) -> None:
    """Refuse a call the server has no room to hold, with a ``retry-after-ms`` hint."""
    await context.abort(
        code,
        f"{why}; retry in {RATE_LIMITED_RETRY_MS} ms",
        trailing_metadata=((RETRY_AFTER_KEY, str(RATE_LIMITED_RETRY_MS)),),
    )


def _batches_of(request: pb.PushRequest) -> list[tuple[str, pb.TransitionBatch]]:
    """The batches of one Push message, in order, with the field each is named by in
    errors: ``batch``, then ``batches[i]``. A message with neither is the empty batch
    (refused by validation as such)."""
    out = [("batch", request.batch)] if request.HasField("batch") else []
    out += [(f"batches[{i}]", b) for i, b in enumerate(request.batches)]
    return out or [("batch", request.batch)]


def _parse(cls, raw):
    """Requests arrive as bytes (see server.replay_handler): parse them here so a
    message that does not parse gets INVALID_ARGUMENT and nothing else happens."""
    if not isinstance(raw, bytes):
        return raw
    try:
        return cls.FromString(raw)
    except DecodeError:
        raise BatchError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request: not a valid {cls.DESCRIPTOR.full_name} message",
        ) from None
