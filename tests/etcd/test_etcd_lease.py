"""etcd's Lease service against a real 3-node cluster (manual clock) through real gRPC."""

from __future__ import annotations

import grpc
import pytest
from etcd_helpers import CLUSTER_ID, etcd_cluster

from raftkv.etcd.proto import rpc_pb2
from raftkv.kv import KvSettings
from raftkv.testing.local_cluster import LocalCluster, run_scenario


async def _status(api_call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api_call  # type: ignore[misc]
    return raised.value


async def _advance(cluster: LocalCluster, seconds: float) -> None:
    """Let `seconds` of simulated time pass."""
    until = cluster.clock.now() + seconds
    await cluster.run_until(lambda: cluster.clock.now() >= until, max_seconds=seconds + 1)


def test_grant_with_a_chosen_id_then_time_to_live_lists_the_attached_keys() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.follower()
            granted = await api.call(
                node, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=60, ID=42)
            )
            assert (granted.ID, granted.TTL, granted.error) == (42, 60, "")
            assert granted.header.cluster_id == CLUSTER_ID
            assert granted.header.member_id == node
            await api.call(node, "KV", "Put", rpc_pb2.PutRequest(key=b"k", value=b"v", lease=42))
            alive = await api.call(
                api.leader(),
                "Lease",
                "LeaseTimeToLive",
                rpc_pb2.LeaseTimeToLiveRequest(ID=42, keys=True),
            )
            assert alive.ID == 42
            assert alive.grantedTTL == 60
            assert 0 < alive.TTL <= 60
            assert list(alive.keys) == [b"k"]
            without_keys = await api.call(
                node, "Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=42)
            )
            assert list(without_keys.keys) == []

    run_scenario(scenario)


def test_grant_without_an_id_picks_one_and_leases_lists_it() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            granted = await api.call(
                leader, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=30)
            )
            assert granted.ID > 0
            listed = await api.call(leader, "Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest())
            assert [lease.ID for lease in listed.leases] == [granted.ID]

    run_scenario(scenario)


def test_a_ttl_under_the_minimum_is_raised_to_it_as_etcd_does() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            for ttl in (0, -3, 1):
                granted = await api.call(
                    api.leader(), "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl)
                )
                assert granted.TTL == KvSettings().min_lease_ttl_s == 2

    run_scenario(scenario)


def test_refusals_of_grant_carry_etcds_statuses() -> None:
    async def scenario() -> None:
        async with etcd_cluster(KvSettings(max_lease_ttl_s=3600)) as api:
            leader = api.leader()
            stub = api.stubs(leader).Lease
            too_long = await _status(
                api.cluster.complete(stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=3601)))
            )
            assert too_long.code() == grpc.StatusCode.OUT_OF_RANGE
            assert too_long.details() == "etcdserver: too large lease TTL"
            absurd = await _status(
                api.cluster.complete(stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2**63 - 1)))
            )
            assert absurd.code() == grpc.StatusCode.OUT_OF_RANGE
            await api.call(leader, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=10, ID=7))
            exists = await _status(
                api.cluster.complete(stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10, ID=7)))
            )
            assert exists.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert exists.details() == "etcdserver: lease already exists"
            negative = await _status(
                api.cluster.complete(stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10, ID=-5)))
            )
            assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT

    run_scenario(scenario)


def test_revoke_deletes_the_keys_and_an_unknown_lease_is_not_found() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.follower()
            await api.call(node, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=60, ID=9))
            await api.call(node, "KV", "Put", rpc_pb2.PutRequest(key=b"k", value=b"v", lease=9))
            revoked = await api.call(node, "Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=9))
            assert revoked.header.revision > 0
            found = await api.call(node, "KV", "Range", rpc_pb2.RangeRequest(key=b"k"))
            assert found.count == 0
            stub = api.stubs(node).Lease
            for unknown in (9, 12345, 0, -1):
                error = await _status(
                    api.cluster.complete(stub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=unknown)))
                )
                assert error.code() == grpc.StatusCode.NOT_FOUND
                assert error.details() == "etcdserver: requested lease not found"

    run_scenario(scenario)


def test_time_to_live_of_an_unknown_lease_is_minus_one() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            for unknown in (77, 0, -4):
                answer = await api.call(
                    api.leader(),
                    "Lease",
                    "LeaseTimeToLive",
                    rpc_pb2.LeaseTimeToLiveRequest(ID=unknown, keys=True),
                )
                assert (answer.ID, answer.TTL, answer.grantedTTL) == (unknown, -1, 0)
                assert answer.header.cluster_id == CLUSTER_ID

    run_scenario(scenario)


def test_keep_alive_answers_each_request_in_order_and_unknown_leases_with_ttl_0() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.follower()
            await api.call(node, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=20, ID=5))
            stream = api.stubs(node).Lease.LeaseKeepAlive()
            answers = []
            for lease_id in (5, 404, 5, 0):
                await api.cluster.complete(stream.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)))
                answers.append(await api.cluster.complete(stream.read()))
            assert [(answer.ID, answer.TTL) for answer in answers] == [
                (5, 20),
                (404, 0),
                (5, 20),
                (0, 0),
            ]
            assert all(answer.header.member_id == node for answer in answers)
            await stream.done_writing()
            end = await api.cluster.complete(stream.read())
            assert end is grpc.aio.EOF
            assert await stream.code() == grpc.StatusCode.OK

    run_scenario(scenario)


def test_keep_alive_keeps_a_lease_past_its_ttl() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.leader()
            await api.call(node, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=30, ID=8))

            # The leases' countdowns run on the cluster's manual clock, which also moves
            # while a call crosses the real gRPC socket (LocalCluster.complete advances it
            # every few loop turns): on a loaded machine a round trip can take seconds of
            # simulated time, so the margins here are tens of seconds, not one.
            stream = api.stubs(node).Lease.LeaseKeepAlive()
            for _ in range(4):
                await api.cluster.complete(stream.write(rpc_pb2.LeaseKeepAliveRequest(ID=8)))
                answer = await api.cluster.complete(stream.read())
                assert answer.TTL == 30
                # 10 s of simulated time between renewals: 40 s in all, past the TTL.
                await _advance(api.cluster, 10.0)
            alive = await api.call(
                node, "Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=8)
            )
            assert alive.TTL > 0
            # Without renewals it runs out.
            await _advance(api.cluster, 35.0)
            gone = await api.call(
                node, "Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=8)
            )
            assert gone.TTL <= 0
            await stream.done_writing()

    run_scenario(scenario)
