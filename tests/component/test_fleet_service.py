"""The fleet driver's FleetService on a real server (127.0.0.1, port 0), with a stand-in
fleet whose resize blocks until the test lets it go."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.fleet_driver import MAX_ACTORS, SERVICE_NAME, FleetController, control, serve_control
from dqn import config as config_mod
from dqn import rpc
from dqn.security import Security
from dqn.v1 import fleet_pb2 as pb
from dqn.v1 import fleet_pb2_grpc as pb_grpc

pytestmark = pytest.mark.component

TOKEN = "fleet-token"


class SlowFleet:
    """A fleet whose resize waits on ``gate`` (a slow node, a Ray placement)."""

    def __init__(self):
        self.size = 0
        self.gate = threading.Event()
        self.resizing = threading.Event()

    def cluster_cpus(self) -> float:
        return 4.0

    def resize(self, n: int) -> None:
        self.resizing.set()
        assert self.gate.wait(60), "the test never opened the gate"
        self.size = n

    def supervise(self) -> None:
        pass

    def states(self, timeout: float) -> list[dict]:
        return [{"actor_id": i, "alive": True, "node": "n", "pid": 1} for i in range(self.size)]


@pytest.fixture
def fleet_service():
    fleet = SlowFleet()
    config = config_mod.build({"actors": {"num_actors": 1, "control_port": 0}})
    controller = FleetController(fleet, config, "process")
    server = serve_control(controller, config, Security(token=TOKEN))
    yield fleet, f"127.0.0.1:{server.port}", server
    fleet.gate.set()
    server.stop(0.5)


def test_status_and_health_answer_while_a_scale_is_resizing(fleet_service):
    fleet, address, _ = fleet_service
    security = Security(token=TOKEN)
    with rpc.channel(address, security=security) as ch:
        stub = pb_grpc.FleetServiceStub(ch)
        scaling = stub.Scale.future(pb.ScaleRequest(actors=3), timeout=60)
        assert fleet.resizing.wait(30)
        # the resize holds a worker thread, not the loop: these answer within their
        # own deadlines although it cannot finish until the gate opens
        st = stub.Status(pb.StatusRequest(), timeout=10)
        assert (st.target, st.actors, st.runner) == (1, 0, "process")  # the old snapshot
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert not scaling.done()
        fleet.gate.set()
        done = scaling.result(timeout=30)
    assert (done.target, done.actors, done.alive) == (3, 3, 3)
    assert control(address, None, False, security).actors == 3  # the CLI's client side


def test_scale_refuses_an_impossible_count_and_a_missing_token(fleet_service):
    fleet, address, _ = fleet_service
    fleet.gate.set()
    with pytest.raises(grpc.RpcError) as err:
        control(address, MAX_ACTORS + 1, False, Security(token=TOKEN))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"actors: must be in [0, {MAX_ACTORS}], got {MAX_ACTORS + 1}"
    with pytest.raises(grpc.RpcError) as err:
        control(address, None, False, None)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_stop_turns_health_off_and_ends_the_server(fleet_service):
    fleet, address, server = fleet_service
    fleet.gate.set()
    server.stop(0.5)
    assert not server.running and not server._thread.is_alive()
    with rpc.channel(address) as ch, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
