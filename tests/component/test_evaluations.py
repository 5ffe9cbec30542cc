"""EvaluationService.Report on the learner's server: a real grpc.aio server on loopback,
reports checked precisely, a refused one costing nothing to the others."""

from __future__ import annotations

import math
import threading
import time

import grpc
import numpy as np
import pytest

from dqn import rpc
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from learner.evaluations import SERVICE_NAME, EvaluationInbox
from learner.weight_server import WeightServer

pytestmark = pytest.mark.component


@pytest.fixture
def learner_server():
    server = WeightServer("127.0.0.1", 0)
    publisher = server.publisher
    inbox = EvaluationInbox(
        lambda: publisher.version, threshold=10.0, start_time=0.0, pin=publisher.pin
    )
    server.server.add_handlers(inbox.handler())
    server.start()
    server.publisher.publish({}, updates=5, env_steps=50)  # version 1
    server.publisher.publish({}, updates=10, env_steps=100)  # version 2
    yield server, inbox
    server.stop(grace=0.5)


def report(version=2, returns=(9.0, 11.0, 12.0), **fields):
    r = np.asarray(returns, dtype=np.float64)
    values = dict(
        version=version,
        updates=10,
        env_steps=100,
        returns=list(returns),
        mean=float(r.mean()) if r.size else 0.0,
        std=float(r.std()) if r.size else 0.0,
        wall_seconds=0.25,
        evaluator="test",
        cpu_seconds=3.0,
        uptime_seconds=12.0,
    )
    values.update(fields)
    return pb.Evaluation(**values)


def test_a_report_is_recorded_and_acked_with_whether_it_solved(learner_server):
    server, inbox = learner_server
    with rpc.channel(server.address) as ch:
        stub = pb_grpc.EvaluationServiceStub(ch)
        ack = stub.Report(report(), timeout=10)
        assert ack.solved and not ack.done  # mean 10.67 >= 10
        assert not stub.Report(report(returns=(1.0, 2.0)), timeout=10).solved
        inbox.done = True
        assert stub.Report(report(version=1, returns=(3.0,)), timeout=10).done
    records = inbox.take()
    assert [r.version for r in records] == [2, 2, 1]
    first = records[0]
    assert (first.updates, first.env_steps, first.episodes) == (10, 100, 3)
    assert math.isclose(first.mean, 32.0 / 3) and first.wall_seconds == 0.25
    assert first.seconds > 0  # arrival time, counted from the learner's start
    assert inbox.take() == []  # handed over once
    assert inbox.cpu_share == 0.25  # 3 CPU seconds in 12 s: a quarter of one core


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(version=0), "version"),
        (dict(version=3), "version"),  # newer than anything published
        (dict(version=2**64 - 1), "version"),
        (dict(returns=()), "returns"),
        (dict(returns=(1.0, float("nan"))), "returns"),
        (dict(returns=(1.0, float("inf"))), "returns"),
        (dict(mean=123.0), "mean"),
        (dict(std=-1.0), "std"),
        (dict(wall_seconds=float("nan")), "wall_seconds"),
        (dict(wall_seconds=-1.0), "wall_seconds"),
        (dict(cpu_seconds=float("inf")), "cpu_seconds"),
        (dict(uptime_seconds=-2.0), "uptime_seconds"),
    ],
)
def test_a_bad_report_is_refused_naming_the_field_and_records_nothing(learner_server, bad, field):
    server, inbox = learner_server
    with rpc.channel(server.address) as ch:
        stub = pb_grpc.EvaluationServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Report(report(**bad), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"Evaluation.{field}:"), err.value.details()
        assert stub.Report(report(), timeout=10)  # the next one is taken as ever
    assert [r.version for r in inbox.take()] == [2]
    assert inbox.refused == 1


def test_too_many_episodes_and_malformed_bytes_are_invalid_argument(learner_server):
    server, inbox = learner_server
    with rpc.channel(server.address) as ch:
        huge = ch.unary_unary(f"/{SERVICE_NAME}/Report")
        with pytest.raises(grpc.RpcError) as err:
            huge(b"\xff\xff\xff", timeout=10)  # not a protobuf message
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stub = pb_grpc.EvaluationServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Report(report(returns=(1.0,) * 100_001), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "returns" in err.value.details()
    assert inbox.take() == [] and inbox.refused == 2


def test_many_evaluators_reporting_at_once_all_land(learner_server):
    """64 clients report concurrently, half of them badly: every good report is
    recorded once, every bad one refused, none lost."""
    server, inbox = learner_server
    errors: list[grpc.StatusCode] = []

    def client(i: int) -> None:
        with rpc.channel(server.address) as ch:
            stub = pb_grpc.EvaluationServiceStub(ch)
            for k in range(5):
                bad = (i + k) % 2 == 1
                try:
                    stub.Report(
                        report(returns=(float("nan"),) if bad else (float(i), float(k))),
                        timeout=30,
                    )
                except grpc.RpcError as exc:
                    errors.append(exc.code())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    records = []
    deadline = time.monotonic() + 10
    while len(records) < 160 and time.monotonic() < deadline:
        records += inbox.take()
    assert len(records) == 160  # 64 x 5 / 2 good ones
    assert errors == [grpc.StatusCode.INVALID_ARGUMENT] * 160
    assert sorted({(r.mean * 2) for r in records}) == sorted(
        {float(i + k) for i in range(64) for k in range(5) if (i + k) % 2 == 0}
    )


def test_a_version_begun_is_kept_past_the_ring_until_unpinned(learner_server):
    """The solving version is exported however far behind the newest the evaluator is:
    Begin pins it; the ring alone keeps only the newest KEPT_VERSIONS."""
    from learner.weight_server import KEPT_VERSIONS, PINNED_VERSIONS

    server, _ = learner_server
    publisher = server.publisher
    with rpc.channel(server.address) as ch:
        stub = pb_grpc.EvaluationServiceStub(ch)
        stub.Begin(pb.EvaluationStart(version=2, evaluator="test"), timeout=10)
        for name, bad in (("version", 0), ("version", 3)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Begin(pb.EvaluationStart(version=bad), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith(f"EvaluationStart.{name}:")
    for _ in range(KEPT_VERSIONS + 10):
        publisher.publish({}, updates=1)
    assert publisher.kept(1) is None  # fell out of the ring
    pinned = publisher.kept(2)
    assert pinned is not None and pinned.updates == 10 and pinned.version == 2
    publisher.unpin(2)
    assert publisher.kept(2) is None
    newest = publisher.version
    assert publisher.pin(newest) and not publisher.pin(1)  # gone: nothing to pin
    for v in range(newest - PINNED_VERSIONS, newest):
        publisher.pin(v)
    assert publisher.kept(newest) is not None  # newest is also in the ring
    assert len(publisher._pinned) == PINNED_VERSIONS  # bounded, the oldest pin dropped
