"""The ``dqn.v1.ReplayService`` servicer: validation, dedup, flow control, sampling."""

from __future__ import annotations

import collections
import threading
import time

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from dqn import codec
from dqn.interfaces import TRANSITION_COLUMNS as COLUMNS
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
EPISODES_KEPT = 10_000
# Bytes a SampleResponse spends besides its rows (field tags, shapes, counters): a
# generous bound, so an answer judged to fit always does.
SAMPLE_OVERHEAD_BYTES = 4096


class ReplayServicer(pb_grpc.ReplayServiceServicer):
    """Holds the storage; every mutation happens under one condition variable."""

    def __init__(
        self,
        storage: RingStorage,
        spec: BatchSpec,
        limiter: RateLimiter,
        rng: np.random.Generator,
        max_waiting_pushers: int = 16,
        priorities: Priorities | None = None,
        max_message_bytes: int = 64 << 20,
    ):
        self.storage = storage
        self.priorities = priorities  # None: uniform replay, and no PER cost anywhere
        self.spec = spec
        self.limiter = limiter
        self.rng = rng
        self.cond = threading.Condition()
        self.stopping = False
        self.max_waiting_pushers = max_waiting_pushers
        self.waiting_pushers = 0
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
        """Wake every waiting call so the server can shut down."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    # -- checkpoints --------------------------------------------------------------
    COUNTERS = ("inserted", "sampled", "rejected", "duplicates", "episodes_total")

    def snapshot(self) -> checkpoint.ReplayState:
        """A consistent copy of the whole state; the lock is held only while copying."""
        with self.cond:
            s = self.storage
            return checkpoint.ReplayState(
                capacity=s.capacity,
                obs_shape=s.obs_shape,
                obs_dtype=s.obs_dtype.str,
                n_actions=self.spec.n_actions,
                cursor=s.cursor,
                size=s.size,
                columns={name: col[: s.size].copy() for name, col in s.columns.items()},
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
        with self.cond:
            s.load_state({"cursor": state.cursor, "size": state.size, **state.full_columns()})
            for name in (*self.COUNTERS, "learner_version"):
                setattr(self, name, saturate(state.counters[name]))
            self.book.load_state(state.actors)
            self.episodes.clear()
            self.episodes.extend(state.episodes)
            checkpoint.load_limiter_state(self.limiter, state.limiter)
            if self.priorities is not None:
                self.priorities.load_state(state.priorities, state.size)
            self.cond.notify_all()

    # -- Push ---------------------------------------------------------------------
    def Push(self, request_iterator, context):
        accepted = transitions = duplicates = 0
        for raw in request_iterator:
            request = self._parse(pb.PushRequest, raw, context)
            batch = request.batch
            try:
                columns = validate_batch(batch, self.spec)
                n = len(columns["action"])
                self._check_admissible(n)
            except BatchError as exc:
                self._reject(context, exc.code, exc.message)
            with self.cond:
                if not self.book.is_duplicate(batch) and not self.limiter.can_insert(
                    self.storage.size, n
                ):
                    self._wait_to_insert(batch, n, context)
                if self.book.is_duplicate(batch):
                    self.duplicates += 1
                    duplicates += 1
                    continue
                slots = self.storage.add(columns)
                if self.priorities is not None:
                    raw = columns.get("priority")
                    self.priorities.on_insert(slots, None if raw is None else raw[-len(slots) :])
                self.limiter.record_insert(self.storage.size, n)
                self.inserted += n
                self.book.record(batch)
                # An actor can only hold a version the learner already published.
                self.learner_version = max(self.learner_version, batch.policy_version)
                for ep in batch.episodes:
                    self.episodes_total += 1
                    self.episodes.append((self.episodes_total, ep))
                self.cond.notify_all()
            accepted += 1
            transitions += n
        return pb.PushResponse(
            accepted_batches=accepted,
            accepted_transitions=transitions,
            duplicate_batches=duplicates,
        )

    # -- Sample -------------------------------------------------------------------
    def Sample(self, request, context):
        request = self._parse(pb.SampleRequest, request, context)
        b, k = request.batch_size, request.num_batches
        if b < 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "batch_size: must be >= 1")
        if k < 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "num_batches: must be >= 1")
        total = b * k
        if total > MAX_SAMPLE_TRANSITIONS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch_size * num_batches: {total} exceeds {MAX_SAMPLE_TRANSITIONS}",
            )
        if request.learner_version > MAX_COUNTER:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"learner_version: {request.learner_version} exceeds the largest allowed, 2**53",
            )
        answer = total * self.sample_row_bytes + SAMPLE_OVERHEAD_BYTES
        if answer > self.max_message_bytes:
            # Refused before any work: nothing is allocated, nothing counted as sampled.
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"batch_size * num_batches: {total} rows of {self.sample_row_bytes} bytes "
                f"would make a {answer:,}-byte answer, over the message limit of "
                f"{self.max_message_bytes:,} bytes (replay.max_message_mb)",
            )
        deadline = time.monotonic() + request.timeout_ms / 1000.0
        with self.cond:
            self.learner_version = max(self.learner_version, request.learner_version)
            ok = self._wait(
                lambda: self.limiter.can_sample(self.storage.size, total), context, deadline
            )
            if not ok:
                return pb.SampleResponse(
                    num_batches=0,
                    batch_size=b,
                    reason=self.limiter.why_not_sample(self.storage.size, total),
                )
            if self.priorities is None:
                idx = self.rng.integers(0, self.storage.size, size=total)
            else:
                idx, keys, prob, min_prob = self.priorities.sample(b, k, self.rng)
            columns = self.storage.gather(idx)
            self.limiter.record_sample(total)
            self.sampled += total
            self.cond.notify_all()
        response = pb.SampleResponse(num_batches=k, batch_size=b)
        for name in COLUMNS:
            codec.encode(columns[name], getattr(response, name))
        if self.priorities is not None:
            codec.encode(idx.astype(np.int64, copy=False), response.index)
            codec.encode(keys, response.key)
            codec.encode(prob, response.probability)
            response.min_probability = min_prob
        return response

    # -- UpdatePriorities ---------------------------------------------------------
    def UpdatePriorities(self, request, context):
        request = self._parse(pb.UpdatePrioritiesRequest, request, context)
        if self.priorities is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "replay.prioritized: this replay server samples uniformly",
            )
        try:
            with self.cond:
                index, key, priority = validate_priority_update(
                    request, self.storage.capacity, self.storage.size
                )
                stale = self.priorities.update(index, key, priority)
                self.priority_updates += len(index) - stale
                self.stale_priority_updates += stale
        except BatchError as exc:
            self._reject(context, exc.code, exc.message)
        return pb.UpdatePrioritiesResponse(updated=len(index) - stale, stale=stale)

    # -- Info ---------------------------------------------------------------------
    def Info(self, request, context):
        request = self._parse(pb.InfoRequest, request, context)
        with self.cond:
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
    def _parse(self, cls, raw, context):
        """Requests arrive as bytes (see server.add_replay_service): parse them here so a
        message that does not parse gets INVALID_ARGUMENT and nothing else happens."""
        if not isinstance(raw, bytes):
            return raw
        try:
            return cls.FromString(raw)
        except DecodeError:
            self._reject(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: not a valid {cls.DESCRIPTOR.full_name} message",
            )

    def _reject(self, context, code: grpc.StatusCode, message: str):
        with self.cond:
            self.rejected += 1
        context.abort(code, message)

    def _check_admissible(self, n: int) -> None:
        largest = self.limiter.largest_insert()
        if largest is not None and n > largest:
            raise BatchError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"batch.action: {n} transitions can never pass the rate limiter band "
                f"(at most {largest} per batch with these settings)",
            )

    def _wait_to_insert(self, batch: pb.TransitionBatch, n: int, context) -> None:
        """Backpressure: hold the push until the band admits it (condition held).

        At most ``max_waiting_pushers`` calls wait at once, so blocked pushers can
        never take every server thread away from Sample, which is what frees them;
        the others get UNAVAILABLE, which writers retry with backoff.
        """
        if self.waiting_pushers >= self.max_waiting_pushers:
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "replay is rate limited and enough pushers wait already; retry",
            )
        self.waiting_pushers += 1
        try:
            ok = self._wait(
                lambda: (
                    self.book.is_duplicate(batch) or self.limiter.can_insert(self.storage.size, n)
                ),
                context,
            )
        finally:
            self.waiting_pushers -= 1
        if not ok:
            context.abort(grpc.StatusCode.UNAVAILABLE, "replay server is shutting down")

    def _wait(self, ready, context, deadline: float | None = None) -> bool:
        """Wait on the condition (held) until ``ready()``; False on stop/timeout/cancel."""
        while not ready():
            if self.stopping or not context.is_active():
                return False
            timeout = 0.5
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return False
            self.cond.wait(timeout)
        return not self.stopping
