"""Prometheus /metrics of the replay server: real server, real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dqn import rpc
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
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


def test_learner_metrics_during_and_after_a_short_run(replay_server_factory, tmp_path):
    """An in-process learner on Probe4 against a real replay server, with a real
    evaluator actor in a thread: /metrics counts its updates, publications and the
    evaluations reported."""
    import threading
    import time

    from actors.evaluator import run_evaluator
    from dqn.config import build
    from learner.learner import Learner
    from tests.component._helpers import columns

    replay = replay_server_factory(obs_shape=(1,), n_actions=2)
    channel, stub = replay_stub(replay.address)
    with channel:
        push(stub, make_batch(1, cols=columns(0, 64, obs_shape=(1,)), policy_version=1))
    config = build(
        {
            "env": {"id": "Probe4-v0", "obs_shape": (1,), "n_actions": 2},
            "network": {"hidden": (8,)},
            "learner": {"batch_size": 8, "batches_per_call": 2, "publish_every": 10},
            "eval": {"every_versions": 2, "episodes": 2, "final_wait_seconds": 60},
            "run": {
                "dir": str(tmp_path / "run"),
                "max_updates": 40,
                "progress_every_seconds": 0.05,
                "stop_when_solved": False,
            },
        }
    )
    learner = Learner(config, replay.address)
    stop_evaluator = threading.Event()
    evaluator = None
    try:
        learner.start()
        url = learner.telemetry.url
        assert url.startswith("http://127.0.0.1:")
        before = scrape(url)
        assert before["dqn_learner_updates_total"] == 0
        assert before["dqn_learner_weights_version"] == 1  # published at start
        assert before["dqn_learner_evaluations_total"] == 0
        assert before["dqn_learner_weight_subscribers"] == 0
        with rpc.channel(learner.weights.address) as wch:  # one subscriber during the run
            watch = pb_grpc.WeightServiceStub(wch).WatchWeights(
                pb.WatchWeightsRequest(), timeout=120
            )
            assert next(watch).version == 1
            evaluator = threading.Thread(
                target=run_evaluator, args=(config, learner.weights.address, stop_evaluator)
            )
            evaluator.start()
            deadline = time.monotonic() + 120  # its first report: version 1, at once
            while not learner.inbox.received:
                assert time.monotonic() < deadline and evaluator.is_alive()
                time.sleep(0.02)
            summary = learner.run()
            after = scrape(url)
            watch.cancel()
    finally:
        stop_evaluator.set()
        if evaluator is not None:
            evaluator.join(30)
        learner.close()
    size = after["dqn_learner_weights_bytes"]
    # two subscribers: the test's stream and the evaluator's
    assert size > 0 and after["dqn_learner_weight_subscribers"] == 2
    assert after["dqn_learner_weights_publish_bytes"] == 2 * size
    assert after["dqn_learner_weights_sent_bytes_total"] >= size
    assert summary["updates"] == 40
    assert after["dqn_learner_updates_total"] == 40
    # versions 1..5, and one more for the final evaluation unless the evaluator had
    # already played the last one
    assert after["dqn_learner_weights_version"] in (5, 6)
    # at least the final weights' evaluation (the learner waits for it)
    assert after["dqn_learner_evaluations_total"] >= 1
    assert summary["evaluations"] == after["dqn_learner_evaluations_total"]
    assert after["dqn_learner_eval_return"] in (-1.0, 0.0, 1.0)
    assert after["dqn_learner_env_steps_total"] == 0  # the pushed batch reported none
    assert after["dqn_learner_replay_size"] == 64
    assert 0 <= after["dqn_learner_policy_lag"] <= 5 - 1  # versions 1..5, actor at 1
    for name in ("dqn_learner_loss", "dqn_learner_q_mean", "dqn_learner_updates_per_second"):
        assert after[name] == after[name], name  # a progress report filled it (not NaN)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)  # closed with the learner
