"""Who may talk to the servers: a shared token on every RPC, optional TLS and mutual TLS.

* **Token.** Clients send ``authorization: Bearer <token>`` metadata on every call;
  servers compare it in constant time (:func:`hmac.compare_digest`) and answer
  ``UNAUTHENTICATED`` otherwise ("missing token", "invalid token"). A call carrying
  more than one ``authorization`` value is refused whatever the values are
  (``UNAUTHENTICATED`` "more than one authorization value"): no order of a wrong and
  a right token gets in. gRPC health checking stays open (it reveals nothing and
  lets orchestrators probe liveness without the secret). :class:`TokenAuthInterceptor`
  enforces this on every server (each is a ``grpc.aio`` ``dqn.rpc.AioServer``).
* **TLS.** With a certificate and key the server listens with TLS; with a CA it also
  verifies client certificates (mutual TLS) when ``client_auth`` is set. Clients
  verify the server against the CA and present their own certificate for mTLS.

The token itself never enters the config tree (which is saved to the run
directory): entry points read it from ``security.token_file`` or the
``DQN_AUTH_TOKEN`` environment variable and hand a :class:`Security` to the parts.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

TOKEN_ENV = "DQN_AUTH_TOKEN"
OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"
MULTIPLE_TOKENS = "more than one authorization value"


class SecurityError(ValueError):
    pass


@dataclass(frozen=True)
class Security:
    token: str | None = field(default=None, repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    ca_pem: bytes | None = field(default=None, repr=False)
    client_auth: bool = False
    server_name: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert_pem is not None or self.ca_pem is not None

    def __repr__(self) -> str:  # never print secrets
        return (
            f"Security(token={'set' if self.token else 'none'}, tls={self.tls}, "
            f"client_auth={self.client_auth})"
        )


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"security.{what}: cannot read {path}: {exc.strerror}") from None


def load(cfg, environ: Mapping[str, str] | None = None) -> Security:
    """Build a Security from a ``SecurityConfig`` (paths) and the environment (token)."""
    environ = os.environ if environ is None else environ
    token = None
    if cfg.token_file:
        token = (_read(cfg.token_file, "token_file") or b"").decode().strip()
        if not token:
            raise SecurityError(f"security.token_file: {cfg.token_file} is empty")
    elif environ.get(TOKEN_ENV):
        token = environ[TOKEN_ENV].strip()
    cert, key = _read(cfg.tls_cert, "tls_cert"), _read(cfg.tls_key, "tls_key")
    if (cert is None) != (key is None):
        raise SecurityError("security.tls_cert: tls_cert and tls_key must be given together")
    ca = _read(cfg.tls_ca, "tls_ca")
    if cfg.tls_client_auth and (ca is None or cert is None):
        raise SecurityError("security.tls_client_auth: needs tls_ca, tls_cert and tls_key")
    return Security(
        token=token,
        cert_pem=cert,
        key_pem=key,
        ca_pem=ca,
        client_auth=cfg.tls_client_auth,
        server_name=cfg.tls_server_name or None,
    )


# -- server side -----------------------------------------------------------------------
def token_denial(metadata, expected: bytes) -> str | None:
    """Why a call with ``metadata`` is refused (None: let in). ``expected`` is
    ``b"Bearer <token>"``; the comparison takes constant time."""
    values = [
        value if isinstance(value, str) else value.decode(errors="replace")
        for key, value in metadata or ()
        if key == "authorization"
    ]
    if len(values) > 1:
        return MULTIPLE_TOKENS
    got = values[0] if values else ""
    if hmac.compare_digest(got.encode(), expected):
        return None
    return "missing token" if not got else "invalid token"


def _expected(token: str) -> bytes:
    if not token:
        raise SecurityError("token: must not be empty")
    return f"Bearer {token}".encode()


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def abort(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return handler_like(handler, abort)


def handler_like(handler: grpc.RpcMethodHandler, behaviour) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind and (de)serializers that runs ``behaviour``."""
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call (but health checks) without exactly one right bearer token."""

    def __init__(self, token: str):
        self._expected = _expected(token)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHODS_PREFIX):
            return handler
        denial = token_denial(handler_call_details.invocation_metadata, self._expected)
        return handler if denial is None else _deny(handler, denial)


def server_interceptors(security: Security | None) -> list[grpc.aio.ServerInterceptor]:
    return [TokenAuthInterceptor(security.token)] if security and security.token else []


def server_credentials(security: Security) -> grpc.ServerCredentials:
    if security.cert_pem is None:
        raise SecurityError("security.tls_cert: a TLS server needs tls_cert and tls_key")
    return grpc.ssl_server_credentials(
        [(security.key_pem, security.cert_pem)],
        root_certificates=security.ca_pem if security.client_auth else None,
        require_client_auth=security.client_auth,
    )


# -- client side -----------------------------------------------------------------------
class _TokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = (
            credentials,
            wait_for_ready,
            compression,
        )


def secure_channel(address: str, options: list, security: Security | None) -> grpc.Channel:
    """A channel to ``address`` with TLS and the token, as ``security`` says."""
    if security is not None and security.tls:
        creds = grpc.ssl_channel_credentials(
            root_certificates=security.ca_pem,
            private_key=security.key_pem if security.client_auth else None,
            certificate_chain=security.cert_pem if security.client_auth else None,
        )
        if security.server_name:
            options = [*options, ("grpc.ssl_target_name_override", security.server_name)]
        channel = grpc.secure_channel(address, creds, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    if security is not None and security.token:
        channel = grpc.intercept_channel(channel, _TokenClientInterceptor(security.token))
    return channel
