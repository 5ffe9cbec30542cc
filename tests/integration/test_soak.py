"""The soak in its CI form: the whole stack keeps flat memory, and actor-id churn leaves
the replay server's memory and Info intact (issue 11, items 4 and 7).

``bench/soak.py stack --quick`` runs ``dqn train`` (replay server, learner, actor
processes) at a fast cadence, measures each process's RSS after warm-up until every
periodic task has run again (evaluations, curve redraws, checkpoints, the ring
overwritten once: counts, not seconds) and stops it with SIGTERM. The long form is
``bench/soak.py stack --minutes 30``.
"""

from __future__ import annotations

import json

import pytest

from bench import soak
from replay_server.bookkeeping import ACTORS_KEPT


def _table(result: dict) -> str:
    return "\n".join(
        f"{p['process']}: warm {p['warm_mb']:.1f} end {p['end_mb']:.1f} MiB "
        f"(growth {p['growth_mb']:+.1f}, allowed {p['allowed_mb']})"
        for p in result["processes"]
    )


@pytest.mark.integration
def test_whole_stack_rss_is_flat_after_warm_up(tmp_path):
    code = soak.main(["stack", "--quick", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "soak_stack.json").read_text())
    assert code == 0 and result["ok"], f"{result['why_not_ok']}\n{_table(result)}"

    # Every part was measured, each the same process throughout ...
    names = [p["process"] for p in result["processes"]]
    assert {"launcher", "replay", "learner", "actor-1", "actor-2"} <= set(names), names
    # ... over a window in which each periodic task ran again after warm-up.
    window = result["window"]
    assert window["evals"] >= 10 and window["plots"] >= 25, window
    assert window["checkpoints"] >= 5 and window["inserted"] >= result["capacity"], window
    for p in result["processes"]:
        if p["ok"] is not None:  # the parts of the stack (Ray's daemons are not checked)
            assert p["growth_mb"] <= p["allowed_mb"], _table(result)


@pytest.mark.component
def test_actor_id_churn_keeps_info_working_and_memory_bounded(tmp_path):
    # At most ACTORS_KEPT (4,096) actors are tracked; 12k ids churn well past that, and
    # the ring (5k rows) is written through before the RSS baseline at 6k ids.
    code = soak.main(
        [
            "churn",
            *("--actor-ids", "12000", "--info-every", "1000", "--warmup-ids", "6000"),
            *("--rss-growth-mib", "8", "--out", str(tmp_path)),
        ]
    )
    result = json.loads((tmp_path / "soak_churn.json").read_text())
    assert code == 0 and result["ok"], result["why_not_ok"]
    assert result["accepted_batches"] == 12_000
    assert result["push_errors"] == {} and result["info_errors"] == {}
    last = result["series"][-1]
    assert last["info"] == "OK" and last["actors_listed"] == ACTORS_KEPT
    assert last["actors_listed"] + last["actors_expired"] == 12_000
