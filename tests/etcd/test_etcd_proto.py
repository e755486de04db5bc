"""The checked-in modules generated from etcd's API (src/raftkv/etcd/proto) match the
.proto files, and the wire facts etcd's clients rely on are the ones written there."""

from __future__ import annotations

from pathlib import Path

from raftkv.etcd.proto import auth_pb2, kv_pb2, rpc_pb2
from raftkv.testing.generated_code import out_of_date

SOURCE = Path(__file__).resolve().parents[2] / "src"
PROTO = SOURCE / "raftkv" / "etcd" / "proto"


def test_the_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    stale = out_of_date(
        SOURCE, [PROTO / "auth.proto", PROTO / "kv.proto", PROTO / "rpc.proto"], tmp_path
    )
    assert stale == [], f"{', '.join(stale)} out of date: run `make proto`"


def test_the_packages_and_services_are_etcds() -> None:
    # gRPC method paths are /<package>.<Service>/<Method>: clients call these names.
    services = rpc_pb2.DESCRIPTOR.services_by_name
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert auth_pb2.DESCRIPTOR.package == "authpb"
    assert set(services) == {"KV", "Watch", "Lease", "Cluster", "Maintenance", "Auth"}
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


def test_etcds_auth_messages_decode_field_by_field() -> None:
    # An AuthRoleGrantPermissionRequest as clientv3 encodes it: name (1) "r", perm (2) a
    # Permission of permType (1) READWRITE=2, key (2) "a", range_end (3) "b".
    grant = rpc_pb2.AuthRoleGrantPermissionRequest.FromString(
        bytes.fromhex("0a0172120808021201611a0162")
    )
    assert (grant.name, grant.perm.permType, grant.perm.key, grant.perm.range_end) == (
        "r",
        auth_pb2.Permission.READWRITE,
        b"a",
        b"b",
    )
    # An AuthUserAddRequest: name (1) "u", password (2) "p", options (3) no_password (1).
    add = rpc_pb2.AuthUserAddRequest.FromString(bytes.fromhex("0a01751201701a020801"))
    assert (add.name, add.password, add.options.no_password) == ("u", "p", True)
    # AuthStatusResponse: enabled (2), authRevision (3).
    status = rpc_pb2.AuthStatusResponse.FromString(bytes.fromhex("10011807"))
    assert (status.enabled, status.authRevision) == (True, 7)
