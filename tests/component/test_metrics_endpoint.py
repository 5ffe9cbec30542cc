"""Prometheus /metrics of the replay server: real server, real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dqn.v1 import replay_pb2 as pb
from tests.component._helpers import info, make_batch, push, replay_stub, sample

pytestmark = pytest.mark.component


def scrape(url: str) -> dict[str, float]:
    """GET ``url`` and return ``{sample name: value}`` (unlabelled samples)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def test_replay_metrics_follow_pushes_samples_and_rejections(replay_server):
    url = replay_server.metrics.url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    before = scrape(url)
    assert before["dqn_replay_size"] == 0
    assert before["dqn_replay_capacity"] == 1000
    assert before["dqn_replay_inserted_total"] == 0
    assert before["process_resident_memory_bytes"] > 0  # the process collector is on

    channel, stub = replay_stub(replay_server.address)
    with channel:
        push(stub, make_batch(1, 0, 8, policy_version=3), make_batch(2, 8, 8, policy_version=5))
        push(stub, make_batch(2, 8, 8, policy_version=5))  # a re-sent duplicate
        with pytest.raises(grpc.RpcError) as err:
            push(stub, _bad_batch())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        sample(stub, batch_size=4, num_batches=3, learner_version=9)
        expected = info(stub)

    after = scrape(url)
    assert after["dqn_replay_size"] == 16
    assert after["dqn_replay_inserted_total"] == 16
    assert after["dqn_replay_sampled_total"] == 12
    assert after["dqn_replay_duplicate_batches_total"] == 1
    assert after["dqn_replay_push_errors_total"] == 1
    assert after["dqn_replay_samples_per_insert"] == pytest.approx(12 / 16)
    assert after["dqn_replay_actors"] == 1
    # learner at version 9, the actor's newest batch acted with version 5
    assert after["dqn_replay_policy_lag"] == pytest.approx(4.0)
    assert after["dqn_replay_policy_lag"] == pytest.approx(expected.policy_lag)


def _bad_batch() -> pb.TransitionBatch:
    batch = make_batch(3, 16, 8)
    batch.reward.shape[:] = [7]  # 8 rows in the other columns
    return batch


def test_metrics_port_off_and_busy(replay_server_factory):
    off = replay_server_factory(metrics_port=-1)
    assert off.metrics.port is None and off.metrics.url is None
    on = replay_server_factory()
    with pytest.raises(OSError, match=f"cannot serve /metrics on 127.0.0.1:{on.metrics.port}"):
        replay_server_factory(metrics_port=on.metrics.port)


def test_metrics_stop_with_the_server(replay_server_factory):
    server = replay_server_factory()
    url = server.metrics.url
    scrape(url)
    server.stop(grace=0.1)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
