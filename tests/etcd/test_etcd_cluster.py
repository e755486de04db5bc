"""etcd's Cluster service against a real 3-node cluster (manual clock) through real gRPC."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from etcd_helpers import CLUSTER_ID, EtcdApi, etcd_cluster

from raftkv.etcd.proto import rpc_pb2
from raftkv.raft.core.types import NodeId
from raftkv.testing.local_cluster import run_scenario


async def _refused(api: EtcdApi, call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.cluster.complete(call)
    return raised.value


def _summary(members: Any) -> list[tuple[int, str, list[str], bool]]:
    return [(m.ID, m.name, list(m.peerURLs), m.isLearner) for m in members]


def test_member_list_answers_every_member_with_its_urls() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            for linearizable in (False, True):
                listed = await api.call(
                    api.follower(),
                    "Cluster",
                    "MemberList",
                    rpc_pb2.MemberListRequest(linearizable=linearizable),
                )
                assert listed.header.cluster_id == CLUSTER_ID
                # No member of the harness publishes a client URL: all are "unstarted".
                assert _summary(listed.members) == [
                    (member, "", [f"http://node-{member}"], False) for member in (1, 2, 3)
                ]
                assert all(list(m.clientURLs) == [] for m in listed.members)

    run_scenario(scenario)


def test_member_list_names_a_member_once_it_published_its_urls() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            service = api.services[leader]
            await api.cluster.complete(service.publish_member(2, "http://127.0.0.1:8081"))
            await api.cluster.complete(
                service.publish_member(3, "http://127.0.0.1:8082", etcd_url="http://h:2381")
            )
            listed = await api.call(
                leader, "Cluster", "MemberList", rpc_pb2.MemberListRequest(linearizable=True)
            )
            second, third = (m for m in listed.members if m.ID in (2, 3))
            assert (second.name, third.name) == ("node-2", "node-3")
            # The etcd gRPC URL, the one etcd's clients can use; none without it.
            assert list(second.clientURLs) == []
            assert list(third.clientURLs) == ["http://h:2381"]

    run_scenario(scenario)


def test_member_add_adds_a_learner_under_a_new_id_then_remove_removes_it() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.follower()
            for is_learner in (True, False):
                added = await api.call(
                    node,
                    "Cluster",
                    "MemberAdd",
                    rpc_pb2.MemberAddRequest(
                        peerURLs=[f"http://10.0.0.{int(is_learner)}:2380"], isLearner=is_learner
                    ),
                )
                # raftkv adds learners only, and says so.
                assert added.member.isLearner
                assert added.member.ID in {m.ID for m in added.members if m.isLearner}
                assert list(added.member.peerURLs) == [f"http://10.0.0.{int(is_learner)}:2380"]
            listed = await api.call(node, "Cluster", "MemberList", rpc_pb2.MemberListRequest())
            assert [(m.ID, m.isLearner) for m in listed.members] == [
                (1, False),
                (2, False),
                (3, False),
                (4, True),
                (5, True),
            ]
            removed = await api.call(
                node, "Cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=4)
            )
            assert [m.ID for m in removed.members] == [1, 2, 3, 5]
            # A removed id is never reused: the next member gets 6.
            added = await api.call(
                node,
                "Cluster",
                "MemberAdd",
                rpc_pb2.MemberAddRequest(peerURLs=["https://10.0.0.9:2380"]),
            )
            assert added.member.ID == 6
            gone = await _refused(
                api, api.stubs(node).Cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=4))
            )
            assert gone.code() == grpc.StatusCode.NOT_FOUND
            assert gone.details() == "etcdserver: member not found"

    run_scenario(scenario)


def test_member_add_refuses_bad_or_taken_peer_urls() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            stub = api.stubs(api.leader()).Cluster
            for urls in (
                [],
                ["10.0.0.1:2380"],
                ["ftp://10.0.0.1:2380"],
                ["http://10.0.0.1"],
                ["http://10.0.0.1:99999"],
                ["http://10.0.0.1:2380/path"],
                ["http://" + "a" * 300 + ":1"],
            ):
                bad = await _refused(api, stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=urls)))
                assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert bad.details() == "etcdserver: given member URLs are invalid"
            two = await _refused(
                api,
                stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["http://a:1", "http://b:1"])),
            )
            assert two.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "exactly one peer URL" in two.details()
            await api.call(
                api.leader(),
                "Cluster",
                "MemberAdd",
                rpc_pb2.MemberAddRequest(peerURLs=["http://10.0.0.1:2380"]),
            )
            taken = await _refused(
                api, stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["http://10.0.0.1:2380"]))
            )
            assert taken.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert taken.details() == "etcdserver: Peer URLs already exists"

    run_scenario(scenario)


def test_member_promote_refuses_voters_unknown_ids_and_lagging_learners() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.follower()
            stub = api.stubs(node).Cluster
            voter = await _refused(api, stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=1)))
            assert voter.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert voter.details() == "etcdserver: can only promote a learner member"
            for unknown in (0, 99, 2**64 - 1):
                missing = await _refused(
                    api, stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=unknown))
                )
                assert missing.code() == grpc.StatusCode.NOT_FOUND
            # A learner nobody runs never catches up.
            await api.call(
                node,
                "Cluster",
                "MemberAdd",
                rpc_pb2.MemberAddRequest(peerURLs=["http://10.0.0.1:2380"], isLearner=True),
            )
            lagging = await _refused(api, stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=4)))
            assert lagging.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert lagging.details() == (
                "etcdserver: can only promote a learner member which is in sync with leader"
            )

    run_scenario(scenario)


def test_member_promote_makes_a_caught_up_learner_a_voter() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            joiner = await api.cluster.add_joiner(NodeId(4))
            leader = api.leader()
            await api.cluster.complete(api.services[leader].add_learner(NodeId(4), "node-4"))
            await api.cluster.run_until(
                lambda: joiner.status().applied_index >= api.services[leader].status().commit_index
            )
            promoted = await api.call(
                api.follower(), "Cluster", "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=4)
            )
            assert [(m.ID, m.isLearner) for m in promoted.members] == [
                (1, False),
                (2, False),
                (3, False),
                (4, False),
            ]

    run_scenario(scenario)


def test_member_update_moves_a_member_to_a_new_peer_url() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.leader()
            stub = api.stubs(node).Cluster
            await api.call(
                node,
                "Cluster",
                "MemberAdd",
                rpc_pb2.MemberAddRequest(peerURLs=["http://10.0.0.1:2380"]),
            )
            same = await api.call(
                node,
                "Cluster",
                "MemberUpdate",
                rpc_pb2.MemberUpdateRequest(ID=4, peerURLs=["http://10.0.0.1:2380"]),
            )
            assert 4 in [m.ID for m in same.members]
            moved = await api.call(
                node,
                "Cluster",
                "MemberUpdate",
                rpc_pb2.MemberUpdateRequest(ID=4, peerURLs=["http://10.0.0.2:2380"]),
            )
            (four,) = [m for m in moved.members if m.ID == 4]
            assert list(four.peerURLs) == ["http://10.0.0.2:2380"]
            # Another member's URL: etcd's refusal.
            await api.call(
                node,
                "Cluster",
                "MemberAdd",
                rpc_pb2.MemberAddRequest(peerURLs=["http://10.0.0.5:2380"]),
            )
            taken = await _refused(
                api,
                stub.MemberUpdate(
                    rpc_pb2.MemberUpdateRequest(ID=4, peerURLs=["http://10.0.0.5:2380"])
                ),
            )
            assert taken.code() == grpc.StatusCode.FAILED_PRECONDITION
            unknown = await _refused(
                api,
                stub.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=42, peerURLs=["http://a:1"])),
            )
            assert unknown.code() == grpc.StatusCode.NOT_FOUND

    run_scenario(scenario)
