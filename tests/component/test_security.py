"""Token on every RPC, TLS and mutual TLS, with real servers on 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import numpy as np
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqn import codec, rpc
from dqn.config import SecurityConfig, build
from dqn.security import Security, SecurityError, load
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from learner.weight_server import WeightServer
from replay_server.server import ReplayServer

pytestmark = pytest.mark.component

TOKEN = "s3cret-token-for-tests"


def _batch(seq: int = 1, n: int = 4) -> pb.PushRequest:
    b = pb.TransitionBatch(actor_id=1, sequence=seq, incarnation=7)
    codec.encode(np.zeros((n, 4), np.float32), b.obs)
    codec.encode(np.zeros(n, np.int64), b.action)
    codec.encode(np.ones(n, np.float32), b.reward)
    codec.encode(np.zeros((n, 4), np.float32), b.next_obs)
    codec.encode(np.zeros(n, np.bool_), b.terminated)
    codec.encode(np.full(n, 0.99, np.float32), b.discount)
    return pb.PushRequest(batch=b)


def _replay(security: Security) -> ReplayServer:
    config = build({"replay": {"capacity": 100, "min_size": 1, "samples_per_insert": 0}})
    server = ReplayServer(config, (4,), 2, security=security)
    server.start()
    return server


@pytest.fixture
def token_servers():
    security = Security(token=TOKEN)
    replay = _replay(security)
    weights = WeightServer(security=security)
    weights.start()
    weights.publisher.publish({"w": torch.ones(2)}, 0)
    yield replay, weights
    replay.stop(0.2)
    weights.stop(0.2)


def _calls(replay_channel, weights_channel):
    """One call of every RPC kind: stream-unary, unary, unary-stream."""
    replay = pb_grpc.ReplayServiceStub(replay_channel)
    weights = pb_grpc.WeightServiceStub(weights_channel)
    return {
        "Push": lambda: replay.Push(iter([_batch()]), timeout=5),
        "Sample": lambda: replay.Sample(pb.SampleRequest(batch_size=1, num_batches=1), timeout=5),
        "Info": lambda: replay.Info(pb.InfoRequest(), timeout=5),
        "GetWeights": lambda: weights.GetWeights(pb.GetWeightsRequest(), timeout=5),
        "WatchWeights": lambda: next(weights.WatchWeights(pb.WatchWeightsRequest(), timeout=5)),
    }


@pytest.mark.parametrize(
    ("client_token", "message"), [(None, "missing token"), ("wrong", "invalid token")]
)
def test_every_rpc_refuses_a_missing_or_wrong_token(token_servers, client_token, message):
    replay, weights = token_servers
    security = Security(token=client_token)
    with (
        rpc.channel(replay.address, security=security) as rc,
        rpc.channel(weights.address, security=security) as wc,
    ):
        for name, call in _calls(rc, wc).items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert err.value.details() == message, name
            assert TOKEN not in (err.value.details() or "")
    servicer = replay.servicer
    assert servicer.storage.size == 0 and servicer.inserted == 0  # nothing got in


@pytest.mark.parametrize(
    "values",
    [("wrong", TOKEN), (TOKEN, "wrong"), (TOKEN, TOKEN)],
    ids=["wrong-right", "right-wrong", "right-right"],
)
def test_more_than_one_authorization_value_is_refused_in_any_order(token_servers, values):
    replay, weights = token_servers
    metadata = tuple(("authorization", f"Bearer {v}") for v in values)
    with rpc.channel(replay.address) as rc, rpc.channel(weights.address) as wc:
        replay_stub = pb_grpc.ReplayServiceStub(rc)
        weights_stub = pb_grpc.WeightServiceStub(wc)
        calls = {
            "Push": lambda: replay_stub.Push(iter([_batch()]), timeout=5, metadata=metadata),
            "Info": lambda: replay_stub.Info(pb.InfoRequest(), timeout=5, metadata=metadata),
            "GetWeights": lambda: weights_stub.GetWeights(
                pb.GetWeightsRequest(), timeout=5, metadata=metadata
            ),
            "WatchWeights": lambda: next(
                weights_stub.WatchWeights(pb.WatchWeightsRequest(), timeout=5, metadata=metadata)
            ),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert err.value.details() == "more than one authorization value", name
    assert replay.servicer.inserted == 0


def test_the_right_token_is_let_in_and_health_stays_open(token_servers):
    replay, weights = token_servers
    good = Security(token=TOKEN)
    with (
        rpc.channel(replay.address, security=good) as rc,
        rpc.channel(weights.address, security=good) as wc,
    ):
        results = {name: call() for name, call in _calls(rc, wc).items()}
    assert results["Push"].accepted_transitions == 4
    assert results["Info"].size == 4
    assert results["GetWeights"].version == 1
    for server in (replay, weights):  # orchestrator probes need no secret
        with rpc.channel(server.address) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_no_rpc_accepts_weights_from_a_client():
    """Only the learner publishes weights, in its own process: no RPC of any service takes
    Weights (or tensors named as parameters) as input, so an actor cannot write them."""
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            assert method.input_type.name != "Weights", method.full_name
            for f in method.input_type.fields:
                assert f.message_type is None or f.message_type.name not in (
                    "Weights",
                    "NamedTensor",
                ), method.full_name


# -- TLS ---------------------------------------------------------------------------
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(subject: str, key, issuer_key, issuer_name=None, ca=False, san=True):
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    """A CA, a server certificate and a client certificate, all made here."""
    ca_key = _key()
    ca = _cert("test-ca", ca_key, ca_key, ca=True, san=False)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    out = {"ca": pem(ca)}
    for who in ("server", "client"):
        key = _key()
        out[who] = (pem(_cert(who, key, ca_key, ca.subject)), _pem_key(key))
    other_ca_key = _key()
    out["other_ca"] = pem(_cert("other-ca", other_ca_key, other_ca_key, ca=True, san=False))
    return out


def _info(address: str, security: Security | None):
    with rpc.channel(address, security=security) as ch:
        return pb_grpc.ReplayServiceStub(ch).Info(pb.InfoRequest(), timeout=5)


def test_tls_server_verified_by_the_ca(pki):
    cert, key = pki["server"]
    server = _replay(Security(token=TOKEN, cert_pem=cert, key_pem=key))
    try:
        assert _info(server.address, Security(token=TOKEN, ca_pem=pki["ca"])).capacity == 100
        with pytest.raises(grpc.RpcError) as err:  # plaintext client
            _info(server.address, Security(token=TOKEN))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as err:  # server not signed by the trusted CA
            _info(server.address, Security(token=TOKEN, ca_pem=pki["other_ca"]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0.2)


def test_mutual_tls_requires_a_client_certificate(pki):
    cert, key = pki["server"]
    ccert, ckey = pki["client"]
    server = _replay(Security(cert_pem=cert, key_pem=key, ca_pem=pki["ca"], client_auth=True))
    try:
        mutual = Security(cert_pem=ccert, key_pem=ckey, ca_pem=pki["ca"], client_auth=True)
        assert _info(server.address, mutual).capacity == 100
        with pytest.raises(grpc.RpcError) as err:  # TLS, but no client certificate
            _info(server.address, Security(ca_pem=pki["ca"]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0.2)


def test_security_config_errors_name_the_field(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("not checked here")
    with pytest.raises(SecurityError, match=r"^security.tls_cert: .*together"):
        load(SecurityConfig(tls_cert=str(cert)), environ={})
    with pytest.raises(SecurityError, match=r"^security.token_file: cannot read"):
        load(SecurityConfig(token_file=str(tmp_path / "missing")), environ={})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecurityError, match=r"^security.token_file: .* is empty"):
        load(SecurityConfig(token_file=str(empty)), environ={})
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    assert load(SecurityConfig(token_file=str(token_file)), environ={}).token == "abc"
    assert load(SecurityConfig(), environ={"DQN_AUTH_TOKEN": "xyz"}).token == "xyz"
    assert load(SecurityConfig(), environ={}).token is None
    assert "xyz" not in repr(load(SecurityConfig(), environ={"DQN_AUTH_TOKEN": "xyz"}))


def test_weight_server_tls_and_mutual_tls(pki):
    """The weight server (an asyncio server) takes the same TLS settings as the replay
    server: verified by the CA, with client certificates when client_auth is set."""
    cert, key = pki["server"]
    ccert, ckey = pki["client"]
    for client_auth in (False, True):
        weights = WeightServer(
            security=Security(
                token=TOKEN, cert_pem=cert, key_pem=key, ca_pem=pki["ca"], client_auth=client_auth
            )
        )
        weights.start()
        weights.publisher.publish({"w": torch.ones(2)})
        try:
            good = Security(
                token=TOKEN, cert_pem=ccert, key_pem=ckey, ca_pem=pki["ca"], client_auth=True
            )
            with rpc.channel(weights.address, security=good) as ch:
                stub = pb_grpc.WeightServiceStub(ch)
                assert stub.GetWeights(pb.GetWeightsRequest(), timeout=5).version == 1
            refused = [Security(token=TOKEN), Security(token=TOKEN, ca_pem=pki["other_ca"])]
            if client_auth:  # TLS without a client certificate
                refused.append(Security(token=TOKEN, ca_pem=pki["ca"]))
            for bad in refused:
                with (
                    rpc.channel(weights.address, security=bad) as ch,
                    pytest.raises(grpc.RpcError) as err,
                ):
                    pb_grpc.WeightServiceStub(ch).GetWeights(pb.GetWeightsRequest(), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (client_auth, bad)
        finally:
            weights.stop(0.2)
