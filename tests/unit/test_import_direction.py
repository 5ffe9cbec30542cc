"""The layering: the shared core (``dqn``) imports none of the parts; each part
(``actors``, ``learner``, ``replay_server``) imports the core and itself only; the
composition root (``deploy``) may import everything. Checked on the source, so a
lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("actors", "learner", "replay_server")
ALLOWED = {
    "dqn": {"dqn"},
    **{part: {"dqn", part} for part in PARTS},
}
# dqn/__init__.py exports the Python API (dqn.train, ...) lazily from the composition
# root: a module-level __getattr__ imports deploy.api by name on first use (decision
# 30); the import statement is importlib's, so no exception is needed here, and
# tests/unit/test_api.py checks that `import dqn` imports no part.
EXCEPTIONS: set[tuple[str, str]] = set()
PROJECT = {"dqn", "deploy", *PARTS}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _modules(package: str):
    return sorted(p for p in (ROOT / package).rglob("*.py") if "v1" not in p.parts)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_may(package):
    wrong = []
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        for line, top in _imports(path):
            if top in PROJECT and top not in ALLOWED[package] and (rel, top) not in EXCEPTIONS:
                wrong.append(f"{rel}:{line} imports {top}")
    assert not wrong, "layering broken:\n" + "\n".join(wrong)


def test_the_check_sees_imports():
    """The scanner itself finds module-level and function-level imports."""
    found = {top for _, top in _imports(ROOT / "deploy" / "local.py")}
    assert {"dqn", "actors"} <= found
