"""The checked-in modules generated from etcd's API (src/raftkv/etcd/proto) match the
.proto files, and the wire facts etcd's clients rely on are the ones written there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from raftkv.etcd.proto import kv_pb2, rpc_pb2

SOURCE = Path(__file__).resolve().parents[2] / "src"
PROTO = SOURCE / "raftkv" / "etcd" / "proto"
GENERATED = (
    "kv_pb2.py",
    "kv_pb2.pyi",
    "kv_pb2_grpc.py",
    "rpc_pb2.py",
    "rpc_pb2.pyi",
    "rpc_pb2_grpc.py",
)


def test_the_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    # The same command as `make proto`, into a scratch directory.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{SOURCE}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(PROTO / "kv.proto"),
            str(PROTO / "rpc.proto"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    regenerated = tmp_path / "raftkv" / "etcd" / "proto"
    for name in GENERATED:
        assert (regenerated / name).read_bytes() == (PROTO / name).read_bytes(), (
            f"{name} is out of date: run `make proto`"
        )


def test_the_packages_and_services_are_etcds() -> None:
    # gRPC method paths are /<package>.<Service>/<Method>: clients call these names.
    services = rpc_pb2.DESCRIPTOR.services_by_name
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert set(services) == {"KV", "Watch", "Lease", "Cluster", "Maintenance"}
    assert services["KV"].full_name == "etcdserverpb.KV"


def test_a_known_etcd_encoding_decodes_field_by_field() -> None:
    # A PutRequest as etcd's clients encode it: key (1) "k", value (2) "v", lease (3) 5,
    # prev_kv (4) true; then a KeyValue with every field, numbered as in mvccpb.
    put = rpc_pb2.PutRequest.FromString(bytes.fromhex("0a016b12017618052001"))
    assert (put.key, put.value, put.lease, put.prev_kv) == (b"k", b"v", 5, True)
    kv = kv_pb2.KeyValue.FromString(bytes.fromhex("0a016b1002180320042a01763006"))
    assert (kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease) == (
        b"k",
        2,
        3,
        4,
        b"v",
        6,
    )
