"""A fleet of 512 simulated actors against one replay server and one weight server.

The harness is bench/fleet_scale.py's (real `dqn replay-server` and WeightServer child
processes, grpc.aio actors each watching weights and pushing batches, a learner client
sampling, polling Info and publishing a few versions). Only behaviour is asserted;
every wait is on a condition, with deadlines far above what a loaded machine needs.
"""

from __future__ import annotations

import pytest

from bench.fleet_scale import FleetSettings, run_fleet

ACTORS = 512
PUBLISHES = 5
# The fixture's waits (server start, every actor connected, every actor holding the last
# version) are deadlines for conditions, sized for a machine many times slower or busier
# than needed; pytest's default 600 s would cut a slow but healthy run short.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    settings = FleetSettings(
        actors=ACTORS,
        publishes=PUBLISHES,
        start_timeout_s=300.0,
        warmup_timeout_s=120.0,
        settle_timeout_s=120.0,
        sample_deadline_s=30.0,
        info_deadline_s=10.0,
        health_deadline_s=5.0,
    )
    return run_fleet(settings, tmp_path_factory.mktemp("fleet"))


@pytest.mark.component
def test_every_actor_gets_every_version_or_a_newer_one(fleet):
    final = fleet["final_version"]
    assert final == 1 + PUBLISHES
    assert len(fleet["actors"]) == ACTORS
    behind, unordered = [], []
    for actor in fleet["actors"]:
        versions = [v for v, _ in actor["received"]]
        if any(b <= a for a, b in zip(versions, versions[1:], strict=False)):
            unordered.append((actor["actor_id"], versions))
        if not versions or versions[-1] != final:
            behind.append((actor["actor_id"], versions[-1] if versions else None))
    assert not unordered, f"versions not increasing for {len(unordered)} actors: {unordered[:3]}"
    assert not behind, (
        f"{len(behind)} of {ACTORS} actors never held version {final} "
        f"(actor, last held): {behind[:5]}; errors {fleet['errors']}"
    )


@pytest.mark.component
def test_no_call_runs_out_of_its_deadline(fleet):
    late = {
        rpc: codes["DEADLINE_EXCEEDED"]
        for rpc, codes in fleet["errors"].items()
        if "DEADLINE_EXCEEDED" in codes
    }
    assert not late, f"DEADLINE_EXCEEDED by RPC: {late}; all errors {fleet['errors']}"


@pytest.mark.component
def test_health_answers_within_a_second(fleet):
    for server, health in fleet["health_ms"].items():
        failed = fleet["errors"].get(f"Health/{server}", {})
        assert health["n"] > 0 and not failed, f"{server} health: {health}, errors {failed}"
        assert health["max"] < 1000.0, f"{server} health took {health['max']:.0f} ms: {health}"


@pytest.mark.component
def test_every_actor_pushed_while_watching(fleet):
    silent = [a["actor_id"] for a in fleet["actors"] if a["pushed"] == 0]
    assert not silent, f"{len(silent)} actors had no batch accepted: {silent[:10]}"
    assert fleet["ingested_transitions_per_s"] and fleet["ingested_transitions_per_s"] > 0
