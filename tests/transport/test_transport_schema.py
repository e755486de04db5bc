"""The checked-in generated code matches raft.proto, and protobuf stays in transport/ (and
in etcd/, the etcd API's own wire layer: tests/etcd/test_etcd_proto.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from raftkv.testing.generated_code import out_of_date

SOURCE = Path(__file__).resolve().parents[2] / "src"
TRANSPORT = SOURCE / "raftkv" / "raft" / "transport"


def test_the_generated_code_matches_raft_proto(tmp_path: Path) -> None:
    stale = out_of_date(SOURCE, [TRANSPORT / "raft.proto"], tmp_path)
    assert stale == [], f"{', '.join(stale)} out of date: run `make proto`"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


ETCD = SOURCE / "raftkv" / "etcd"
OUTSIDE_TRANSPORT = sorted(
    path for path in (SOURCE / "raftkv").rglob("*.py") if TRANSPORT not in path.parents
)


@pytest.mark.parametrize(
    "path", OUTSIDE_TRANSPORT, ids=lambda path: str(path.relative_to(SOURCE / "raftkv"))
)
def test_protobuf_stays_inside_the_transport_package(path: Path) -> None:
    for module in imports_of(path):
        assert "raft_pb2" not in module, f"{path} imports {module}"
        if ETCD not in path.parents:
            assert not module.startswith(("google.protobuf", "grpc")), f"{path} imports {module}"
            assert not module.startswith("raftkv.etcd.proto"), f"{path} imports {module}"
