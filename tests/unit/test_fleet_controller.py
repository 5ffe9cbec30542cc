"""FleetController's reconciliation logic against a stand-in fleet (pure bookkeeping)."""

from __future__ import annotations

import pytest

from deploy.fleet_driver import MAX_ACTORS, FleetController
from dqn import config as config_mod

pytestmark = pytest.mark.unit


class StandInFleet:
    """Records resizes; ``cpus`` is what the cluster offers; ``dead`` ids are down."""

    def __init__(self, cpus: float):
        self.cpus = cpus
        self.size = 0
        self.resizes: list[int] = []
        self.dead: set[int] = set()
        self.supervised = 0

    def cluster_cpus(self) -> float:
        return self.cpus

    def resize(self, n: int) -> None:
        self.size = n
        self.resizes.append(n)

    def supervise(self) -> None:
        self.supervised += 1

    def states(self, timeout: float) -> list[dict]:
        return [
            {"actor_id": i, "alive": i not in self.dead, "node": "n", "pid": 100 + i}
            for i in range(self.size)
        ]


def _config(**actors) -> config_mod.Config:
    return config_mod.build({"actors": actors})


def test_fixed_count_is_reached_and_kept():
    fleet = StandInFleet(cpus=8)
    c = FleetController(fleet, _config(num_actors=3), "ray")
    c.reconcile()
    c.reconcile()
    assert fleet.resizes == [3] and fleet.supervised == 2
    st = c.status()
    assert (st.target, st.actors, st.alive, st.auto) == (3, 3, 3, False)
    fleet.dead.add(1)
    c.reconcile()
    assert c.status().alive == 2 and fleet.resizes == [3]  # restarts are the fleet's job


def test_auto_follows_the_cluster_cpus():
    fleet = StandInFleet(cpus=0)
    c = FleetController(fleet, _config(num_actors="auto", cpus_per_actor=0.5), "ray")
    c.reconcile()
    assert c.status().target == 0 and fleet.size == 0
    fleet.cpus = 2  # a worker joined
    c.reconcile()
    assert fleet.size == 4
    fleet.cpus = 3.0  # another joined
    c.reconcile()
    assert fleet.size == 6
    fleet.cpus = 1.0  # two left
    c.reconcile()
    assert fleet.size == 2 and fleet.resizes == [4, 6, 2]
    assert c.status().cluster_cpus == 1.0


def test_auto_is_capped():
    fleet = StandInFleet(cpus=10_000)
    c = FleetController(fleet, _config(num_actors="auto", cpus_per_actor=1), "ray")
    c.reconcile()
    assert fleet.size == MAX_ACTORS


def test_scale_switches_between_fixed_and_auto():
    fleet = StandInFleet(cpus=2)
    c = FleetController(fleet, _config(num_actors=1), "process")
    c.scale(5)
    assert fleet.size == 5 and not c.status().auto
    c.scale(None, auto=True)
    assert fleet.size == 4 and c.status().auto  # 2 CPUs / 0.5 (the default)
    c.scale(0)
    assert fleet.size == 0


@pytest.mark.parametrize("bad", [-1, MAX_ACTORS + 1, None])
def test_scale_refuses_out_of_range_and_changes_nothing(bad):
    fleet = StandInFleet(cpus=2)
    c = FleetController(fleet, _config(num_actors=2), "ray")
    c.reconcile()
    with pytest.raises(ValueError, match="actors: must be in"):
        c.scale(bad)
    assert c.status().target == 2 and fleet.size == 2


def test_num_actors_auto_sets_autoscale_from_every_source():
    assert config_mod.build({"actors": {"num_actors": "auto"}}).actors.autoscale
    assert config_mod.load(environ={"DQN_ACTORS__NUM_ACTORS": "AUTO"}).actors.autoscale
    assert not config_mod.build({"actors": {"num_actors": "4"}}).actors.autoscale
    with pytest.raises(config_mod.ConfigError, match="actors.num_actors"):
        config_mod.build({"actors": {"num_actors": "many"}})
