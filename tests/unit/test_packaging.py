"""The packaging bounds hold what the code needs: the protobuf and grpcio lower bounds are
the versions the checked-in stubs in dqn/v1 were generated for; every runtime dependency
is bounded on both sides; the tensorboard viewer is an extra that no code imports; and
constraints.txt pins the tested set inside those bounds (torch excepted, see Makefile)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "dqn" / "v1"
PACKAGES = ("dqn", "actors", "learner", "replay_server", "deploy")
PROJECT = "distributed-dqn"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _by_name(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def _dependencies() -> dict[str, Requirement]:
    return _by_name(_project()["dependencies"])


def _extra(name: str) -> dict[str, Requirement]:
    return _by_name(_project()["optional-dependencies"][name])


def _bound(req: Requirement, operator: str) -> str:
    """The version of ``req``'s single ``operator`` clause (fails if not exactly one)."""
    versions = [s.version for s in req.specifier if s.operator == operator]
    assert len(versions) == 1, f"{req}: expected one '{operator}' clause, got {versions}"
    return versions[0]


def _gencode_versions() -> dict[str, Version]:
    """file name -> the protobuf version its ValidateProtobufRuntimeVersion call names."""
    found = {}
    for path in sorted(STUBS.glob("*_pb2.py")):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "ValidateProtobufRuntimeVersion"
        ]
        assert len(calls) == 1, f"{path.name}: no single ValidateProtobufRuntimeVersion call"
        # (domain, major, minor, patch, suffix, location)
        major, minor, patch, suffix = (ast.literal_eval(a) for a in calls[0].args[1:5])
        found[path.name] = Version(f"{major}.{minor}.{patch}{suffix}")
    assert sorted(found) == ["fleet_pb2.py", "replay_pb2.py"]
    return found


def _grpc_generated_versions() -> dict[str, str]:
    found = {}
    for path in sorted(STUBS.glob("*_pb2_grpc.py")):
        match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", path.read_text(), re.M)
        assert match, f"{path.name}: no GRPC_GENERATED_VERSION"
        found[path.name] = match.group(1)
    assert sorted(found) == ["fleet_pb2_grpc.py", "replay_pb2_grpc.py"]
    return found


def test_protobuf_bounds_are_the_gencode_version_and_its_major():
    gencodes = set(_gencode_versions().values())
    assert len(gencodes) == 1, f"dqn/v1 stubs from different protoc releases: {gencodes}"
    (gencode,) = gencodes
    protobuf = _dependencies()["protobuf"]
    # A runtime older than the gencode refuses to import the stubs (VersionError).
    assert Version(_bound(protobuf, ">=")) == gencode, (
        f"pyproject says {protobuf}, the stubs in dqn/v1 need protobuf>={gencode}"
    )
    # Protobuf guarantees a runtime for gencode of its own major only.
    assert Version(_bound(protobuf, "<")) == Version(str(gencode.major + 1)), protobuf
    for path in STUBS.glob("*_pb2.py"):
        header = re.search(r"^# Protobuf Python Version: (\S+)$", path.read_text(), re.M)
        assert header and Version(header.group(1)) == gencode, path.name


def test_installed_protobuf_can_load_the_stubs():
    installed = Version(importlib.metadata.version("protobuf"))
    assert installed in _dependencies()["protobuf"].specifier
    from dqn.v1 import fleet_pb2, replay_pb2  # noqa: F401  (raises VersionError if too old)


def test_grpc_bounds_are_the_stubs_generated_version():
    generated = set(_grpc_generated_versions().values())
    assert len(generated) == 1, generated
    (version,) = generated
    deps = _dependencies()
    # the *_pb2_grpc.py stubs raise RuntimeError on import under an older grpcio
    assert _bound(deps["grpcio"], ">=") == version, deps["grpcio"]
    assert _bound(deps["grpcio-health-checking"], ">=") == version
    # grpcio-tools made them, and test_protogen compares its output byte for byte
    assert _bound(_extra("test")["grpcio-tools"], "==") == version


@pytest.mark.parametrize("group", ["dependencies", "tensorboard"])
def test_every_runtime_dependency_has_a_lower_and_an_upper_bound(group):
    reqs = _dependencies() if group == "dependencies" else _extra(group)
    assert reqs
    for req in reqs.values():
        lower, upper = Version(_bound(req, ">=")), Version(_bound(req, "<"))
        assert lower < upper, req
        # an upper bound is a major (or 1 for a 0.x series), never an arbitrary release
        assert upper.release[1:] in ((), (0,)), f"{req}: cap at a major, not {upper}"


def test_the_tensorboard_viewer_is_an_extra_that_no_shipped_code_imports():
    assert "tensorboard" not in _dependencies()
    assert "tensorboardx" in _dependencies()  # the writer stays
    assert "tensorboard" in _extra("tensorboard")
    assert "tensorboard" in _extra("test")  # tests read tb/ back with it
    importers = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                if any(n == "tensorboard" or n.startswith("tensorboard.") for n in names):
                    importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def _constraints() -> dict[str, Version]:
    pins = {}
    for number, raw in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert match, f"constraints.txt:{number}: not NAME==VERSION: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def test_constraints_pin_every_direct_dependency_inside_its_bounds():
    pins = _constraints()
    # torch comes from the Makefile's TORCH (the CPU or CUDA build for the machine); a pin
    # here, above all the venv's torch==X+cpu, would force the CPU build on a GPU user.
    for name in pins:
        assert name != "torch" and not name.startswith(("nvidia-", "triton")), name
    assert canonicalize_name(PROJECT) not in pins
    assert [str(v) for v in pins.values() if v.local] == []
    groups = {"dependencies": _dependencies()}
    groups |= {extra: _extra(extra) for extra in _project()["optional-dependencies"]}
    for group, reqs in groups.items():
        for name, req in reqs.items():
            if name == "torch":
                continue
            assert name in pins, f"constraints.txt pins no {name} ({group})"
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"constraints.txt: {name}=={pins[name]} is outside {group}'s {req}"
            )


def test_makefile_torch_is_inside_the_torch_bounds():
    match = re.search(r"^TORCH \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile: no 'TORCH ?= torch==X'"
    torch_req = _dependencies()["torch"]
    assert torch_req.specifier.contains(match.group(1)), f"TORCH {match.group(1)} vs {torch_req}"


def test_this_environment_is_the_constrained_set():
    """The suite runs on what constraints.txt says (an install by `make install`); a
    package upgraded by hand shows here: rerun the suite, then `make constraints`."""
    differ = []
    for name, pinned in _constraints().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. the [bench] extra, not installed by `make install`
        if installed != pinned:
            differ.append(f"{name}: installed {installed}, constraints.txt {pinned}")
    assert differ == []
