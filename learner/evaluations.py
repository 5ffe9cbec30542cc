"""``dqn.v1.EvaluationService`` on the learner's server: evaluator actors report here.

A report is checked on the server's loop (a version the learner published, finite
returns whose mean and std are the reported ones) and refused with
``INVALID_ARGUMENT`` naming the field otherwise; a valid one is queued for the
learner's thread, which records it and decides stop-when-solved (:meth:`take`). The
ack says whether it solved and whether the run is ending, so an evaluator can stop.
``Begin`` (before playing) pins the version's weights in the publisher until its
report is recorded, so the solving version can be exported however far behind it is.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from dqn.v1 import replay_pb2 as pb
from learner.records import EvalRecord

SERVICE_NAME = "dqn.v1.EvaluationService"
MAX_EPISODES = 100_000  # returns in one report


def check_report(report: pb.Evaluation, published: int) -> str | None:
    """Why ``report`` is refused (one line naming the field), or None."""
    if not 1 <= report.version <= published:
        return f"version: {report.version} was never published (newest is {published})"
    returns = np.asarray(report.returns, dtype=np.float64)
    if not 1 <= returns.size <= MAX_EPISODES:
        return f"returns: {returns.size} episodes; 1 to {MAX_EPISODES:,} are accepted"
    if not np.isfinite(returns).all():
        return "returns: every return must be finite"
    for name, value, want in (
        ("mean", report.mean, float(returns.mean())),
        ("std", report.std, float(returns.std())),
    ):
        if not math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
            return f"{name}: {value!r} is not the {name} of returns ({want!r})"
    for name in ("wall_seconds", "cpu_seconds", "uptime_seconds"):
        value = getattr(report, name)
        if not (math.isfinite(value) and value >= 0):
            return f"{name}: must be finite and >= 0, got {value!r}"
    return None


class EvaluationInbox:
    """Reports in, on the server's loop; :meth:`take` hands them to the learner."""

    def __init__(
        self,
        published: Callable[[], int],
        threshold: float | None,
        start_time: float,
        pin: Callable[[int], bool] = lambda version: False,
    ):
        self._published = published
        self._pin = pin  # keeps a version's weights while an evaluator plays it
        self.threshold = threshold
        self.start_time = start_time
        self._queue: queue.SimpleQueue[EvalRecord] = queue.SimpleQueue()
        self.done = False  # set by the learner when its run ends
        self.refused = 0
        self.received = 0  # reports accepted: an evaluator is at work in this run
        # the latest report's CPU seconds / wall seconds: the evaluator's share of a core
        self.cpu_share: float | None = None

    def solves(self, mean: float) -> bool:
        return self.threshold is not None and mean >= self.threshold

    async def begin(self, data: bytes, context) -> pb.EvaluationAck:
        """An evaluator starts playing a version: keep its weights until the report."""
        try:
            request = pb.EvaluationStart.FromString(data)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"EvaluationStart: {exc}")
        published = self._published()
        if not 1 <= request.version <= published:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"EvaluationStart.version: {request.version} was never published "
                f"(newest is {published})",
            )
        self._pin(request.version)
        return pb.EvaluationAck(done=self.done)

    async def report(self, data: bytes, context) -> pb.EvaluationAck:
        try:  # parsed here: grpc's own deserializer would answer INTERNAL
            request = pb.Evaluation.FromString(data)
        except DecodeError as exc:
            self.refused += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Evaluation: {exc}")
        why = check_report(request, self._published())
        if why is not None:
            self.refused += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Evaluation.{why}")
        self.received += 1
        if request.uptime_seconds > 0:
            self.cpu_share = request.cpu_seconds / request.uptime_seconds
        self._queue.put(
            EvalRecord(
                version=request.version,
                updates=request.updates,
                env_steps=request.env_steps,
                seconds=time.time() - self.start_time,  # finished: as the learner saw it
                mean=request.mean,
                std=request.std,
                episodes=len(request.returns),
                wall_seconds=request.wall_seconds,
                evaluator=request.evaluator[:200],
            )
        )
        return pb.EvaluationAck(solved=self.solves(request.mean), done=self.done)

    def take(self) -> list[EvalRecord]:
        """Reports received since the last call, oldest first (learner's thread)."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Begin": grpc.unary_unary_rpc_method_handler(
                    self.begin,
                    request_deserializer=None,
                    response_serializer=pb.EvaluationAck.SerializeToString,
                ),
                "Report": grpc.unary_unary_rpc_method_handler(
                    self.report,
                    request_deserializer=None,
                    response_serializer=pb.EvaluationAck.SerializeToString,
                ),
            },
        )
