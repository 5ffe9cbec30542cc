"""gRPC plumbing every server and client shares: options, health, addresses, readiness."""

from __future__ import annotations

import json
import os
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dqn.security import Security, secure_channel, server_credentials, server_interceptors

MiB = 1 << 20


def channel_options(max_message_mb: int = 64) -> list[tuple[str, int]]:
    size = max_message_mb * MiB
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Reconnect within a second or two after a server restart; gRPC's default
        # backoff grows to 120 s, which would stall a fleet long after recovery.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def make_server(
    max_message_mb: int = 64, max_workers: int = 32, security: Security | None = None
) -> grpc.Server:
    """A gRPC server; with ``security.token`` every call but health needs the token."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=server_interceptors(security),
        options=[
            *channel_options(max_message_mb),
            ("grpc.so_reuseport", 0),
            # Accept the clients' 20 s keepalive pings even on idle channels; the default
            # (one per 5 min) answers them with GOAWAY "too_many_pings".
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            # and never close a transport over pings: an idle client's keepalives are
            # not an attack worth a GOAWAY that fails its next call.
            ("grpc.http2.max_ping_strikes", 0),
        ],
        maximum_concurrent_rpcs=max_workers * 4,
    )


def add_health(server: grpc.Server, *service_names: str) -> health.HealthServicer:
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", *service_names):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def bind(server: grpc.Server, host: str, port: int, security: Security | None = None) -> int:
    """Bind ``host:port`` (port 0 picks a free one), with TLS if configured; the port."""
    address = f"{host}:{port}"
    if security is not None and security.cert_pem is not None:
        bound = server.add_secure_port(address, server_credentials(security))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return bound


def channel(
    address: str, max_message_mb: int = 64, security: Security | None = None
) -> grpc.Channel:
    """A client channel; TLS and the token are added as ``security`` says."""
    return secure_channel(address, channel_options(max_message_mb), security)


def wait_ready(address: str, timeout: float = 30.0, security: Security | None = None) -> None:
    """Block until the server at ``address`` reports SERVING on gRPC health."""
    deadline = time.monotonic() + timeout
    with channel(address, security=security) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no healthy gRPC server at {address} after {timeout:.0f}s")
            time.sleep(0.05)


def write_ready_file(path: str | os.PathLike | None, **info) -> None:
    """Atomically write ``info`` as JSON (temp file + rename), telling a parent we are up."""
    if not path:
        return
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def read_ready_file(path: str | os.PathLike, timeout: float, alive=lambda: True) -> dict:
    """Wait for a ready file written by :func:`write_ready_file` and return its JSON."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not alive():
            raise RuntimeError(f"process exited before writing {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:.0f}s")
        time.sleep(0.02)
    return json.loads(path.read_text())
