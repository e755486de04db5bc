"""`/v1/cluster`, `/ready`, `/v1/status?hash=true` and `/openapi.json` on a 3-node
LocalCluster (the harness of test_http_api)."""

from __future__ import annotations

import re

import msgspec
from server_helpers import started

from raftkv.api.cluster import ClusterAnswer, ReadyAnswer, StatusAnswer
from raftkv.raft.core.types import NodeId
from raftkv.server.openapi import openapi_document
from raftkv.server.routes import ROUTES
from raftkv.testing.local_cluster import address_of, run_scenario


def test_cluster_lists_members_with_published_client_urls_and_leader_indexes() -> None:
    async def scenario() -> None:
        async with started() as api:
            for node, service in api.services.items():
                await api.cluster.complete(service.publish_member(node, f"http://kv{node}:80"))
            leader = api.cluster.leader()
            assert leader is not None
            await api.cluster.run_until(
                lambda: all(len(s.machine.member_client_urls()) == 3 for s in api.services.values())
            )
            status, body = await api.call(leader.id, "GET", "/v1/cluster")
            assert status == 200
            answer = msgspec.convert(body, ClusterAnswer)
            assert answer.leader == leader.id and answer.id == leader.id
            assert [member.id for member in answer.members] == [1, 2, 3]
            for member in answer.members:
                assert member.client_url == f"http://kv{member.id}:80"
                assert member.peer_url == address_of(NodeId(member.id))
                assert member.role == ("leader" if member.id == leader.id else "voter")
                assert member.match_index is not None and member.match_index >= 1
                assert member.lag is not None and member.lag >= 0
                assert member.active is True
            follower = api.follower()
            status, body = await api.call(follower, "GET", "/v1/cluster")
            answer = msgspec.convert(body, ClusterAnswer)
            assert answer.id == follower and answer.leader == leader.id
            assert all(
                (member.match_index, member.lag, member.active) == (None, None, None)
                for member in answer.members
            )
            assert {member.client_url for member in answer.members} == {
                "http://kv1:80",
                "http://kv2:80",
                "http://kv3:80",
            }

    run_scenario(scenario)


def test_ready_when_a_leader_is_known_and_not_when_stopped() -> None:
    async def scenario() -> None:
        async with started() as api:
            status, body = await api.call(1, "GET", "/ready")
            assert (status, msgspec.convert(body, ReadyAnswer)) == (200, ReadyAnswer(True, ""))
            follower = api.follower()
            await api.cluster.complete(api.cluster.nodes[follower].stop())
            status, body = await api.call(follower, "GET", "/ready")
            assert status == 503
            assert body == {"ready": False, "reason": "the node is stopped"}

    run_scenario(scenario)


def test_status_hash_is_equal_on_every_member_and_changes_with_the_data() -> None:
    async def scenario() -> None:
        async with started() as api:
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "1"})
            await api.cluster.run_until(
                lambda: all(s.machine.current_revision() == 2 for s in api.services.values())
            )
            hashes = set()
            for node in (1, 2, 3):
                status, body = await api.call(node, "GET", "/v1/status?hash=true")
                assert status == 200
                answer = msgspec.convert(body, StatusAnswer)
                hashes.add((answer.hash, answer.data_hash))
            assert len(hashes) == 1
            state_hash, data_hash = hashes.pop()
            assert len(state_hash) == len(data_hash) == 64
            status, body = await api.call(1, "GET", "/v1/status")
            assert "hash" not in body and "data_hash" not in body  # a full scan only when asked

    run_scenario(scenario)


def test_openapi_document_is_served_and_lists_every_route() -> None:
    async def scenario() -> None:
        async with started() as api:
            status, body = await api.call(2, "GET", "/openapi.json")
            assert status == 200
            assert body == msgspec.json.decode(msgspec.json.encode(openapi_document()))
            routes = {
                (method.upper(), path) for path, item in body["paths"].items() for method in item
            }
            registered = {
                (route.method, route.resource.canonical.replace("{key:[\\s\\S]*}", "{key}"))
                for route in api.clients[1].app.router.routes()  # type: ignore[union-attr]
                if route.resource is not None
            }
            assert routes == registered
            for schema in body["components"]["schemas"].values():
                assert schema["type"] == "object"

    run_scenario(scenario)


def test_every_route_documents_its_path_parameters_and_its_answers() -> None:
    """The route table is the one description of the routes: each row's template names
    exactly the path parameters it documents, and each row says what it answers with 200."""
    document = openapi_document()
    for route in ROUTES:
        in_path = set(re.findall(r"\{(\w+)\}", route.template))
        documented = {p.name for p in route.parameters if p.location == "path"}
        assert in_path == documented, route
        assert 200 in route.responses, route
        operation = document["paths"][route.template][route.method.lower()]
        assert operation["summary"] == route.summary
    templates = [(route.method, route.template) for route in ROUTES]
    assert len(templates) == len(set(templates))
