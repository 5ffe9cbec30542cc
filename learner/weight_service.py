"""The learner's WeightSource: hosts ``dqn.v1.WeightService`` and publishes versions."""

from __future__ import annotations

import threading

import grpc

from dqn import rpc
from dqn import weights as weights_codec
from dqn.security import Security
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc

SERVICE_NAME = "dqn.v1.WeightService"


class WeightPublisher(pb_grpc.WeightServiceServicer):
    """Latest-wins: watchers always get the newest version, never a backlog."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: pb.Weights | None = None
        self._stopping = False

    @property
    def version(self) -> int:
        latest = self._latest
        return latest.version if latest is not None else 0

    def publish(self, state_dict: dict, updates: int = 0, env_steps: int = 0) -> int:
        version = self.version + 1
        msg = weights_codec.to_proto(state_dict, version, updates, env_steps)
        with self._cond:
            self._latest = msg
            self._cond.notify_all()
        return version

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def WatchWeights(self, request, context):
        last = request.after_version
        while True:
            with self._cond:
                while not self._stopping and context.is_active() and self.version <= last:
                    self._cond.wait(0.5)
                if self._stopping or not context.is_active():
                    return
                msg = self._latest
            last = msg.version
            yield msg

    def GetWeights(self, request, context):
        msg = self._latest
        if msg is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "no weights published yet")
        return msg


class WeightServer:
    """gRPC server for the publisher, with health checking. ``start()`` returns the port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_mb: int = 64,
        security: Security | None = None,
    ):
        self.host, self._port, self._security = host, port, security
        self.publisher = WeightPublisher()
        self._server = rpc.make_server(max_message_mb, security=security)
        pb_grpc.add_WeightServiceServicer_to_server(self.publisher, self._server)
        self._health = rpc.add_health(self._server, SERVICE_NAME)
        self.port: int | None = None

    def start(self) -> int:
        self.port = rpc.bind(self._server, self.host, self._port, self._security)
        self._server.start()
        return self.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float = 1.0) -> None:
        self._health.enter_graceful_shutdown()
        self.publisher.stop()
        self._server.stop(grace).wait()
