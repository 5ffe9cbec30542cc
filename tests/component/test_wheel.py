"""The wheel `pip wheel .` builds from a copy of the tree: it carries the package data
(the deploy/configs presets the README runs, py.typed markers, the generated stubs with
their .pyi), no tests, the `dqn` console script and pyproject's bounds; and `make
install` applies constraints.txt to each of its installs without pinning torch."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.component

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dqn", "actors", "learner", "replay_server", "deploy")
NOT_SHIPPED = ("tests/", "bench/", "examples/", "docs/", "proto/")


def _source_files() -> list[Path]:
    """What a fresh clone holds: tracked files plus new ones git does not ignore."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [Path(p) for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


@pytest.fixture(scope="module")
def wheel():
    """(the wheel's file names, its dist-info files by name); temp dirs removed after."""
    with tempfile.TemporaryDirectory(prefix="dqn-wheel-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        for rel in _source_files():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
        assert (src / "tests").is_dir()  # present in the source, so leaving it out is tested
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index"]
            + ["--no-build-isolation", "--disable-pip-version-check", "-w", str(out), str(src)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert build.returncode == 0, build.stderr[-3000:]
        (path,) = out.glob("distributed_dqn-*-py3-none-any.whl")
        with zipfile.ZipFile(path) as whl:
            names = whl.namelist()
            info = {Path(n).name: whl.read(n).decode() for n in names if ".dist-info/" in n}
        yield names, info


def test_wheel_ships_the_package_data(wheel):
    names, _ = wheel
    configs = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("deploy/configs/*.toml"))
    assert "deploy/configs/pixel_cartpole.toml" in configs
    expected = [*configs, *(f"{p}/py.typed" for p in PACKAGES)]
    for stub in ("fleet", "replay"):
        expected += [
            f"dqn/v1/{stub}_pb2.py",
            f"dqn/v1/{stub}_pb2.pyi",
            f"dqn/v1/{stub}_pb2_grpc.py",
        ]
    assert [n for n in expected if n not in names] == []


def test_wheel_holds_every_module_and_nothing_else(wheel):
    names, _ = wheel
    modules = sorted(
        p.as_posix()
        for p in _source_files()
        if p.suffix == ".py"
        and p.parts[0] in PACKAGES
        and (ROOT / p.parent / "__init__.py").exists()
    )
    assert [m for m in modules if m not in names] == []
    assert [n for n in names if n.startswith(NOT_SHIPPED)] == []
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == set(PACKAGES)
    # nothing from the deploy folder but its modules and presets (no Dockerfile, k8s, wheels)
    deploy = [n for n in names if n.startswith("deploy/")]
    assert [n for n in deploy if not n.endswith((".py", "py.typed", ".toml"))] == []


def test_wheel_entry_point_is_the_dqn_command(wheel):
    _, info = wheel
    lines = [line.strip() for line in info["entry_points.txt"].splitlines()]
    section = lines[lines.index("[console_scripts]") + 1 :]
    assert "dqn = deploy.cli:main" in section


def test_wheel_metadata_has_pyprojects_bounds(wheel):
    _, info = wheel
    meta = email.parser.Parser().parsestr(info["METADATA"])
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    runtime = {r.name: r for r in requires if r.marker is None}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {r.name: r for r in map(Requirement, project["dependencies"])}
    assert runtime.keys() == declared.keys()
    for name, req in declared.items():
        assert runtime[name].specifier == req.specifier, name
        assert {s.operator for s in req.specifier} == {">=", "<"}, req
    assert runtime["protobuf"].specifier.contains("7.35.1")
    assert not runtime["protobuf"].specifier.contains("6.31.1")
    assert "tensorboard" not in runtime and "tensorboardX" in runtime
    assert {"tensorboard", "test", "bench"} <= set(meta.get_all("Provides-Extra"))
    viewer = sorted(str(r.marker) for r in requires if r.name == "tensorboard")
    assert viewer == ['extra == "tensorboard"', 'extra == "test"']


def test_make_install_applies_the_constraints_but_does_not_pin_torch():
    if shutil.which("make") is None:
        pytest.skip("no make")
    venv = Path(tempfile.gettempdir()) / "dqn-never-made-venv"
    dry = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    installs = [
        line
        for line in dry.stdout.splitlines()
        if " -m pip install" in line or "/pip install" in line
    ]
    assert len(installs) == 2, dry.stdout  # torch, then the project with its extras
    assert all("-c constraints.txt" in line for line in installs), installs
    torch_line, project_line = installs
    assert '"torch==' in torch_line and "+" not in torch_line, torch_line
    assert "-e '.[test,tensorboard]'" in project_line, project_line
    assert not venv.exists()  # -n ran nothing
