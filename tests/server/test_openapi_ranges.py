"""/openapi.json declares the ranges the server enforces on request bodies (issue 14 item
6): every integer field of every request body has a minimum (and int64 ones a maximum),
and a value outside its declared range is refused with 400, not accepted by the document
and refused by the server."""

from __future__ import annotations

from typing import Any

from server_helpers import error_code, started

from raftkv.api.keys import MAX_INT64
from raftkv.server.openapi import openapi_document
from raftkv.testing.local_cluster import run_scenario


def request_body_schemas() -> dict[str, dict[str, Any]]:
    schemas = openapi_document()["components"]["schemas"]
    return {name: schema for name, schema in schemas.items() if name.endswith("Body")}


def test_every_integer_field_of_a_request_body_declares_its_range() -> None:
    bodies = request_body_schemas()
    assert {"PutBody", "TxnBody", "LeaseGrantBody", "AddMemberBody"} <= set(bodies)
    for name, schema in bodies.items():
        for field, declared in schema["properties"].items():
            if declared.get("type") == "integer":
                assert "minimum" in declared, (name, field)
    assert bodies["LeaseGrantBody"]["properties"]["ttl"]["minimum"] == 1
    assert bodies["LeaseGrantBody"]["properties"]["id"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_INT64,
        "default": 0,
    }
    assert bodies["AddMemberBody"]["properties"]["id"]["minimum"] == 1


OUTSIDE = [
    ("POST", "/v1/lease", {"ttl": 0}),
    ("POST", "/v1/lease", {"ttl": 5, "id": -1}),
    ("POST", "/v1/lease", {"ttl": 5, "id": MAX_INT64 + 1}),
    ("PUT", "/v1/kv/k", {"value": "v", "lease": -1}),
    ("PUT", "/v1/kv/k", {"value": "v", "client_id": "c", "sequence": -1}),
    ("POST", "/v1/compact", {"revision": -1}),
    ("POST", "/v1/txn", {"success": [{"op": "range", "key": "a", "limit": -1}]}),
    ("POST", "/v1/txn", {"success": [{"op": "range", "key": "a", "revision": MAX_INT64 + 1}]}),
    ("POST", "/v1/txn", {"success": [{"op": "put", "key": "a", "value": "b", "lease": -2}]}),
    ("POST", "/v1/members", {"id": 0, "peer_url": "127.0.0.1:1"}),
    ("POST", "/v1/leader/transfer", {"to": -1}),
]


def test_a_value_outside_its_declared_range_is_refused_with_400() -> None:
    async def scenario() -> None:
        async with started() as api:
            leader = api.cluster.leader()
            assert leader is not None
            for method, path, body in OUTSIDE:
                status, answer = await api.call(int(leader.id), method, path, json=body)
                assert (status, error_code(answer)) == (400, "invalid_request"), (path, body)
                assert "Expected `int`" in answer["error"]["message"], answer

    run_scenario(scenario)
