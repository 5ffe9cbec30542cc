"""The checked-in gRPC stubs in dqn/v1 are what `python -m dqn.protogen` generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from dqn import protogen

pytestmark = pytest.mark.unit

CHECKED_IN = Path(protogen.ROOT) / "dqn" / "v1"


def test_generated_code_is_current(tmp_path):
    generated = protogen.generate(tmp_path)
    names = sorted(p.name for p in generated)
    assert names == [
        f"{proto}{suffix}"
        for proto in ("fleet", "replay")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    ]
    checked_in = sorted(p.name for p in CHECKED_IN.glob("*_pb2*.py*"))
    assert checked_in == names, "stale or missing stub files in dqn/v1"
    for path in generated:
        assert path.read_bytes() == (CHECKED_IN / path.name).read_bytes(), (
            f"dqn/v1/{path.name} is stale: run `make proto` (python -m dqn.protogen)"
        )


def test_proto_sources_found():
    files = protogen.proto_files()
    assert [p.relative_to(protogen.PROTO_DIR).as_posix() for p in files] == [
        "dqn/v1/fleet.proto",
        "dqn/v1/replay.proto",
    ]
