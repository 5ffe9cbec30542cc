"""The learner reads on one screen: no file over 400 lines, no function over 60, and
``Learner.step`` (sample -> update -> priorities -> publish) about 30 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
LEARNER = Path(__file__).resolve().parents[2] / "learner"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


@pytest.mark.parametrize("path", sorted(LEARNER.glob("*.py")), ids=lambda p: p.name)
def test_learner_files_and_functions_are_short(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.name}: {len(text.splitlines())} lines"
    for fn in _functions(ast.parse(text)):
        length = fn.end_lineno - fn.lineno + 1
        assert length <= 60, f"{path.name}: {fn.name} is {length} lines"


def test_learner_step_is_about_thirty_lines():
    tree = ast.parse((LEARNER / "learner.py").read_text())
    (step,) = [f for f in _functions(tree) if f.name == "step"]
    assert step.end_lineno - step.lineno + 1 <= 30
