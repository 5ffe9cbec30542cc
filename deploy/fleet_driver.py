"""``dqn actors``: run a fleet against given replay and weight addresses, resizable live.

The driver holds the fleet (Ray actors placed across the cluster's workers, or plain
processes) and reconciles it every second towards a target: a fixed count, or with
``autoscale`` one actor per ``cpus_per_actor`` CPUs of the live nodes, so the fleet
follows workers as they join (``docker compose up --scale ray-worker=K``) and leave.
A small gRPC ``FleetService`` (``dqn actors scale N|auto``, ``dqn actors status``)
changes the target while training runs; the learner and replay server are untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import grpc

from dqn import rpc
from dqn.config import Config
from dqn.security import Security
from dqn.signals import stop_on_signals
from dqn.v1 import fleet_pb2 as pb
from dqn.v1 import fleet_pb2_grpc as pb_grpc

log = logging.getLogger("deploy.fleet_driver")

SERVICE_NAME = "dqn.v1.FleetService"
MAX_ACTORS = 1024


class FleetController:
    """Target bookkeeping and reconciliation; the fleet does the work.

    ``reconcile`` (the driver's loop, and every Scale request) converges the fleet and
    refreshes a status snapshot; ``status`` answers from that snapshot at once, so a
    probe never waits behind a slow resize or an unreachable node.
    """

    def __init__(self, fleet, config: Config, runner: str):
        self.fleet = fleet
        self.runner = runner
        self.cpus_per_actor = config.actors.cpus_per_actor
        self.auto = config.actors.autoscale
        self.target = 0 if self.auto else config.actors.num_actors
        self._lock = threading.Lock()  # one reconcile at a time
        self._snapshot = pb.FleetStatus(target=self.target, auto=self.auto, runner=runner)

    def scale(self, actors: int | None, auto: bool = False) -> None:
        if not auto and (actors is None or not 0 <= actors <= MAX_ACTORS):
            raise ValueError(f"actors: must be in [0, {MAX_ACTORS}], got {actors}")
        log.info("scale request: %s", "auto" if auto else actors)
        with self._lock:
            self.auto = auto
            if not auto:
                self.target = actors
            self._reconcile_locked()

    def reconcile(self) -> None:
        with self._lock:
            self._reconcile_locked()

    def _reconcile_locked(self) -> None:
        cpus = self.fleet.cluster_cpus()
        if self.auto:
            # the evaluator actor holds its share of the CPUs too
            free = max(cpus - getattr(self.fleet, "evaluator_cpus", 0.0), 0.0)
            target = min(int(free // self.cpus_per_actor + 1e-9), MAX_ACTORS)
            if target != self.target:
                log.info("autoscale: %g CPUs -> %d actors (was %d)", cpus, target, self.target)
            self.target = target
        if self.fleet.size != self.target:
            self.fleet.resize(self.target)
        self.fleet.supervise()
        states = self.fleet.states(1.0)
        self._snapshot = pb.FleetStatus(
            target=self.target,
            auto=self.auto,
            actors=len(states),
            alive=sum(st["alive"] for st in states),
            cluster_cpus=cpus,
            runner=self.runner,
            actor=[
                pb.ActorState(
                    actor_id=st["actor_id"], alive=st["alive"], node=st["node"], pid=st["pid"]
                )
                for st in states
            ],
        )

    def status(self) -> pb.FleetStatus:
        return self._snapshot


class FleetServicer(pb_grpc.FleetServiceServicer):
    """``dqn.v1.FleetService`` on the control server's event loop. ``Status`` answers
    from the controller's snapshot at once; ``Scale`` runs its reconcile (resizes, slow
    or unreachable nodes) in a worker thread, so status calls and health checks never
    wait behind it."""

    def __init__(self, controller: FleetController):
        self.controller = controller

    async def Scale(self, request: pb.ScaleRequest, context) -> pb.FleetStatus:
        try:
            await asyncio.to_thread(self.controller.scale, request.actors, request.auto)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return self.controller.status()

    async def Status(self, request: pb.StatusRequest, context) -> pb.FleetStatus:
        return self.controller.status()


def serve_control(
    controller: FleetController, config: Config, security: Security | None
) -> rpc.AioServer:
    """Start the FleetService (with health) on ``actors.control_host:control_port``;
    the server's ``port`` is the one bound."""
    server = rpc.AioServer(
        4, security, health_services=(SERVICE_NAME,), max_open_calls=64, name="fleet-control"
    )
    server.add_servicer(pb_grpc.add_FleetServiceServicer_to_server, FleetServicer(controller))
    server.start(config.actors.control_host, config.actors.control_port)
    return server


def run_fleet(
    fleet,
    config: Config,
    security: Security | None = None,
    ready_file: str | None = None,
    reconcile_seconds: float = 1.0,
) -> int:
    """Process entry (``dqn actors``): drive ``fleet`` (built by ``deploy.builder``)
    and serve its control service until SIGTERM/SIGINT."""
    stop = threading.Event()
    stop_on_signals(stop)
    runner = config.actors.runner
    fleet.start(0, evaluator=True)  # the actors come with the first reconcile
    controller = FleetController(fleet, config, runner)
    server = serve_control(controller, config, security)
    port = server.port
    address = f"{config.actors.control_host}:{port}"
    log.info(
        "fleet control on %s; runner %s; target %s",
        address,
        runner,
        f"auto (one actor per {config.actors.cpus_per_actor:g} CPUs)"
        if controller.auto
        else controller.target,
    )
    rpc.write_ready_file(ready_file, address=address, port=port, pid=os.getpid())
    last_report = 0.0
    try:
        while not stop.is_set():
            try:
                controller.reconcile()
            except Exception:  # a transient cluster error must not end the fleet
                log.exception("reconcile failed; retrying")
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                st = controller.status()
                log.info(
                    "fleet: %d/%d actors alive (target %d, %.1f CPUs)",
                    st.alive,
                    st.actors,
                    st.target,
                    st.cluster_cpus,
                )
            stop.wait(reconcile_seconds)
    finally:
        server.stop(1.0)  # health NOT_SERVING first
        fleet.stop()
        if runner != "process":
            from actors.fleet import shutdown_ray

            shutdown_ray()
    return 0


def control(
    address: str, actors: int | None, auto: bool, security: Security | None
) -> pb.FleetStatus:
    """Client side of ``dqn actors scale|status``."""
    with rpc.channel(address, security=security) as ch:
        stub = pb_grpc.FleetServiceStub(ch)
        if actors is None and not auto:
            return stub.Status(pb.StatusRequest(), timeout=30)
        return stub.Scale(pb.ScaleRequest(actors=actors or 0, auto=auto), timeout=120)
