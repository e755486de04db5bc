"""Membership over HTTP on a LocalCluster (manual clock): add a learner, promote it once
caught up, remove a member, transfer leadership; each refusal as a typed JSON error."""

from __future__ import annotations

from server_helpers import error_code, started

from raftkv.raft.core.types import NodeId
from raftkv.testing.local_cluster import address_of, run_scenario


def test_add_promote_remove_and_transfer() -> None:
    async def scenario() -> None:
        async with started() as api:
            cluster = api.cluster
            follower = api.follower()
            joiner = await cluster.add_joiner(NodeId(4))
            assert joiner.id == 4
            status, body = await api.call(
                follower, "POST", "/v1/members", json={"id": 4, "peer_url": address_of(NodeId(4))}
            )
            assert status == 200, body
            roles = {member["id"]: member["role"] for member in body["members"]}
            assert roles[4] == "learner"
            # Adding it again at the same address is a no-op (a retried request).
            status, _ = await api.call(
                1, "POST", "/v1/members", json={"id": 4, "peer_url": address_of(NodeId(4))}
            )
            assert status == 200
            await cluster.run_until(
                lambda: joiner.status().applied_index >= cluster.leader().status().commit_index  # type: ignore[union-attr]
            )
            status, body = await api.call(follower, "POST", "/v1/members/4/promote")
            assert status == 200, body
            assert {m["id"]: m["role"] for m in body["members"]}[4] == "voter"

            leader = cluster.leader()
            assert leader is not None
            other = next(node for node in (1, 2, 3) if node not in (leader.id, follower))
            status, body = await api.call(
                leader.id, "POST", "/v1/leader/transfer", json={"to": other}
            )
            assert (status, body) == (200, {"leader": other})
            # Any member forwards a transfer to the leader, as it forwards changes.
            await cluster.run_until(lambda: cluster.nodes[NodeId(follower)].leader_id == other)
            status, body = await api.call(
                follower, "POST", "/v1/leader/transfer", json={"to": leader.id}
            )
            assert (status, body) == (200, {"leader": leader.id})
            await cluster.run_until(lambda: cluster.nodes[NodeId(other)].leader_id == leader.id)
            other = leader.id
            status, body = await api.call(other, "DELETE", "/v1/members/4")
            assert status == 200 and 4 not in {m["id"] for m in body["members"]}

    run_scenario(scenario)


def test_a_transfer_to_the_leader_itself_answers_at_once() -> None:
    # docs/operations.md's `raftkv transfer-leader 3` after `member remove 1`: 3 had just
    # been elected, and the transfer waited for another leader until a 500 TimeoutError.
    async def scenario() -> None:
        async with started() as api:
            leader = api.cluster.leader()
            assert leader is not None
            for asked in (leader.id, api.follower()):
                status, body = await api.call(
                    asked, "POST", "/v1/leader/transfer", json={"to": leader.id}
                )
                assert (status, body) == (200, {"leader": leader.id}), asked

    run_scenario(scenario)


def test_a_transfer_that_sees_no_new_leader_in_time_is_a_504_not_a_500() -> None:
    async def scenario() -> None:
        async with started() as api:
            leader = api.cluster.leader()
            assert leader is not None
            down = api.follower()
            await api.cluster.crash(NodeId(down))
            status, body = await api.call(
                leader.id, "POST", "/v1/leader/transfer", json={"to": down}
            )
            assert (status, error_code(body)) == (504, "timeout"), body

    run_scenario(scenario)


def test_membership_refusals() -> None:
    async def scenario() -> None:
        async with started() as api:
            follower = api.follower()
            cases = [
                ("POST", "/v1/members", {"id": 0, "peer_url": "h:1"}, 400, "invalid_request"),
                ("POST", "/v1/members", {"id": 9, "peer_url": ""}, 400, "invalid_request"),
                ("POST", "/v1/members", {"id": 9}, 400, "invalid_request"),
                ("POST", "/v1/members", {"id": 2, "peer_url": "h:1"}, 400, "invalid_member_change"),
                ("POST", "/v1/members/9/promote", None, 400, "invalid_member_change"),
                ("POST", "/v1/members/x/promote", None, 400, "invalid_request"),
                ("DELETE", "/v1/members/9", None, 400, "invalid_member_change"),
            ]
            for method, path, body, status, code in cases:
                kwargs = {} if body is None else {"json": body}
                answer_status, answer = await api.call(follower, method, path, **kwargs)
                assert (answer_status, error_code(answer)) == (status, code), (path, answer)

    run_scenario(scenario)
