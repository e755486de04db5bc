"""etcd's KV service against a real 3-node cluster (manual clock) through real gRPC."""

from __future__ import annotations

from etcd_helpers import CLUSTER_ID, etcd_cluster

from raftkv.etcd.proto import rpc_pb2
from raftkv.testing.local_cluster import run_scenario


def test_put_then_range_answers_etcds_fields_and_header() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            put = await api.call(leader, "KV", "Put", rpc_pb2.PutRequest(key=b"a", value=b"1"))
            assert put.header.cluster_id == CLUSTER_ID
            assert put.header.member_id == leader
            assert put.header.raft_term >= 1
            found = await api.call(api.follower(), "KV", "Range", rpc_pb2.RangeRequest(key=b"a"))
            assert found.header.revision == put.header.revision
            assert found.count == 1
            (kv,) = found.kvs
            assert (kv.key, kv.value, kv.version) == (b"a", b"1", 1)
            assert kv.create_revision == kv.mod_revision == put.header.revision

    run_scenario(scenario)
