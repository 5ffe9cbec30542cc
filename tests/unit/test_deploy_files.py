"""The deployment files agree with the code: every service command is a real `dqn`
command, every DQN_* setting names a real config field, ports line up. (The compose
files are also checked by `docker-compose config -q` in tests/docker.)"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from deploy import cli
from dqn import config as config_mod

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_VARS = {"DQN_REPLAY_ADDRESS", "DQN_WEIGHTS_ADDRESS", "DQN_RAY_ADDRESS", "DQN_FLEET_ADDRESS"}


def _check_env(where: str, env: dict[str, str]) -> None:
    """DQN_SECTION__FIELD values must build a valid config; other DQN_ names be known."""
    settings = {k: str(v) for k, v in env.items() if k.startswith("DQN_") and "__" in k}
    for key in settings:
        section, _, name = key[4:].lower().partition("__")
        fields = {f.name for f in config_mod.dataclasses.fields(config_mod.SECTIONS[section])}
        assert name in fields, f"{where}: {key} names no config field"
    # ${VAR:-default} placeholders stand for their default.
    resolved = {k: _default(v) for k, v in settings.items()}
    config_mod.build(config_mod.from_environ(resolved))
    for key in env:
        if key.startswith("DQN_") and "__" not in key:
            assert key in ADDRESS_VARS | {"DQN_AUTH_TOKEN"}, f"{where}: unknown setting {key}"


def _default(value: str) -> str:
    if value.startswith("${") and ":-" in value:
        return value.split(":-", 1)[1].rstrip("}")
    return value


def _check_command(where: str, command: list[str], env: dict[str, str], monkeypatch) -> None:
    for key, value in env.items():
        if key in ADDRESS_VARS or key.startswith("RAY_"):
            monkeypatch.setenv(key, _default(str(value)))
    if command[0] != "dqn":
        assert command[:3] == ["python", "-m", "deploy.ray_node"], f"{where}: {command}"
        from deploy import ray_node

        if command[3] != "health":  # a probe, not a node: it would run `ray health-check`
            assert ray_node.main([*command[3:], "--dry-run"]) == 0
        return
    args = cli.build_parser().parse_args(command[1:])
    assert args.command in ("replay-server", "learner", "actors"), f"{where}: {command}"


def test_compose_services_match_the_cli_and_config(monkeypatch):
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"ray-head", "ray-worker", "replay-server", "learner", "actors"}
    for name, svc in services.items():
        env = svc.get("environment", {})
        _check_env(f"compose {name}", env)
        _check_command(f"compose {name}", svc["command"], env, monkeypatch)
        assert svc["restart"] in ("unless-stopped", "on-failure", "always")
        if name != "ray-worker":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
    # Every gRPC service's healthcheck probes the port it binds.
    for name, port in (("replay-server", "50051"), ("learner", "50052"), ("actors", "50053")):
        svc = services[name]
        port_var = {"replay-server": "DQN_REPLAY__PORT", "learner": "DQN_LEARNER__PORT"}.get(
            name, "DQN_ACTORS__CONTROL_PORT"
        )
        assert str(svc["environment"][port_var]) == port
        assert svc["healthcheck"]["test"][-1].endswith(port)
    gpu = yaml.safe_load((ROOT / "deploy/compose.gpu.yml").read_text())["services"]["learner"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_kuberay_manifest_matches_the_cli_and_config(monkeypatch):
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/dqn.yaml").read_text()))
    kinds = [(d["apiVersion"], d["kind"]) for d in docs]
    assert ("ray.io/v1", "RayCluster") in kinds
    ray = next(d for d in docs if d["kind"] == "RayCluster")["spec"]
    assert ray["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert ray["workerGroupSpecs"][0]["maxReplicas"] >= ray["workerGroupSpecs"][0]["minReplicas"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "dqn-replay-server",
        "dqn-learner",
        "dqn-actors",
    }
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"] == labels
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value", "secret") for e in container["env"]}
        _check_env(d["metadata"]["name"], env)
        _check_command(d["metadata"]["name"], container["command"], env, monkeypatch)
        for var in ("DQN_REPLAY_ADDRESS", "DQN_WEIGHTS_ADDRESS"):
            if var in env:
                host, port = env[var].split(":")
                svc = services[host]
                assert int(port) in [p["port"] for p in svc["spec"]["ports"]]
    learner = next(d for d in deployments if d["metadata"]["name"] == "dqn-learner")
    resources = learner["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1


def test_dockerfile_runs_as_non_root_and_ignores_the_rest():
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in text and "ARG TORCH_INDEX_URL" in text
    users = [shlex.split(line)[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*" and "!deploy/" in ignore


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    """.dockerignore drops everything not re-included: a COPY source it drops fails
    the image build ("not found")."""
    text = (ROOT / "deploy/Dockerfile").read_text()
    kept = {
        line[1:].rstrip("/").split("/")[0]
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = [
        src
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for src in shlex.split(line)[1:-1]
    ]
    assert sources
    for src in sources:
        assert src.split("/")[0] in kept, f"COPY {src}: excluded by .dockerignore"
