"""etcd's JSON gateway (`POST /v3/...` on the HTTP port) on a 3-node LocalCluster: the
mapping etcd's gateway uses (base64 bytes, 64-bit integers as strings, the .proto's field
names, enums by name) and its error body, through the same servicers as the gRPC port."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from etcd_helpers import CLUSTER_ID, EtcdApi, etcd_cluster

from raftkv.etcd.gateway import ROUTES
from raftkv.server import HttpSettings, create_app
from raftkv.testing.local_cluster import run_scenario

# What every client of the API sends with a body (a body without it is refused 415).
JSON = {"Content-Type": "application/json"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@asynccontextmanager
async def gateway() -> AsyncIterator[tuple[EtcdApi, TestClient[Any, Any]]]:
    async with etcd_cluster() as api:
        leader = api.leader()
        app = create_app(api.services[leader], HttpSettings(), api.servicers[leader])
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        try:
            yield api, client
        finally:
            await client.close()


async def post(api: EtcdApi, client: TestClient[Any, Any], path: str, body: Any) -> tuple[int, Any]:
    async def request() -> tuple[int, Any]:
        kwargs = {"data": body} if isinstance(body, str) else {"json": body}
        async with client.post(path, headers=JSON, **kwargs) as response:
            return response.status, await response.json()

    return await api.cluster.complete(request())


def test_put_range_and_txn_in_etcds_json_mapping() -> None:
    async def scenario() -> None:
        async with gateway() as (api, client):
            status, put = await post(
                api, client, "/v3/kv/put", {"key": b64("foo"), "value": b64("bar")}
            )
            assert status == 200
            header = put["header"]
            assert header["cluster_id"] == str(CLUSTER_ID)  # uint64: a string
            assert header["member_id"] == str(api.leader())
            revision = int(header["revision"])
            status, found = await post(api, client, "/v3/kv/range", {"key": b64("foo")})
            assert status == 200
            assert found["count"] == "1"
            assert found["kvs"] == [
                {
                    "key": b64("foo"),
                    "value": b64("bar"),
                    "create_revision": str(revision),
                    "mod_revision": str(revision),
                    "version": "1",
                }
            ]
            txn = {
                "compare": [{"key": b64("foo"), "target": "VALUE", "value": b64("bar")}],
                "success": [{"request_put": {"key": b64("foo"), "value": b64("baz")}}],
            }
            status, answer = await post(api, client, "/v3/kv/txn", txn)
            assert status == 200
            assert answer["succeeded"] is True
            assert answer["responses"] == [
                {"response_put": {"header": {"revision": str(revision + 1)}}}
            ]

    run_scenario(scenario)


def test_refusals_answer_the_gateways_error_body_and_status() -> None:
    async def scenario() -> None:
        async with gateway() as (api, client):
            future = {"key": b64("foo"), "revision": "99"}
            status, body = await post(api, client, "/v3/kv/range", future)
            message = "etcdserver: mvcc: required revision is a future revision"
            assert (status, body) == (400, {"error": message, "code": 11, "message": message})
            status, body = await post(api, client, "/v3/kv/put", {"kee": 1})
            assert (status, body["code"]) == (400, 3)
            assert body["message"].startswith("invalid JSON for PutRequest: ")
            assert "\n" not in body["message"]
            status, body = await post(api, client, "/v3/kv/put", "{not json")
            assert (status, body["code"]) == (400, 3)
            # An empty body is the empty request, as in etcd's gateway: here, no key.
            status, body = await post(api, client, "/v3/kv/range", "")
            assert (status, body["message"]) == (400, "etcdserver: key is not provided")

    run_scenario(scenario)


def test_every_route_is_one_of_etcds_gateway_paths() -> None:
    paths = [route.path for route in ROUTES]
    assert len(paths) == len(set(paths))
    assert all(path.startswith("/v3/") for path in paths)
    for route in ROUTES:
        assert route.request.DESCRIPTOR.full_name.startswith("etcdserverpb.")


def test_version_answers_as_etcds_does() -> None:
    async def scenario() -> None:
        async with gateway() as (api, client):

            async def get() -> tuple[int, Any]:
                async with client.get("/version") as response:
                    return response.status, await response.json()

            status, body = await api.cluster.complete(get())
            assert status == 200
            assert set(body) == {"etcdserver", "etcdcluster", "raftkv"}
            # Plain numbers, as clients parse them (etcd3gw: int() of each part).
            assert [int(part) for part in body["etcdserver"].split(".")] == [3, 5, 0]
            assert body["etcdcluster"] == body["etcdserver"]
            assert body["raftkv"]

    run_scenario(scenario)


def test_etcd_calls_are_counted_and_timed_in_metrics() -> None:
    async def scenario() -> None:
        async with gateway() as (api, client):
            await post(api, client, "/v3/kv/put", {"key": b64("m"), "value": b64("1")})
            await post(api, client, "/v3/kv/range", {"key": b64("m"), "revision": "99"})

            async def scrape() -> str:
                async with client.get("/metrics") as response:
                    return await response.text()

            text = await api.cluster.complete(scrape())
            assert 'raftkv_etcd_requests_total{code="OK",method="Put"} 1.0' in text
            assert 'raftkv_etcd_requests_total{code="OUT_OF_RANGE",method="Range"} 1.0' in text
            assert 'raftkv_etcd_request_duration_seconds_count{method="Put"} 1.0' in text
            assert "raftkv_etcd_watch_streams 0.0" in text

    run_scenario(scenario)


def test_a_body_not_sent_as_json_is_refused_415_and_nothing_is_written() -> None:
    """A web page's form or text/plain post to /v3/kv/put used to be applied (etcd's own
    gateway takes any type; raftkv's needs JSON: docs/etcd.md)."""

    async def scenario() -> None:
        async with gateway() as (api, client):
            put = json.dumps({"key": b64("foo"), "value": b64("bar")})
            for content_type in ("text/plain", "application/x-www-form-urlencoded"):

                async def refused(content_type: str = content_type) -> tuple[int, Any]:
                    headers = {"Content-Type": content_type}
                    async with client.post("/v3/kv/put", data=put, headers=headers) as response:
                        return response.status, await response.json()

                status, answer = await api.cluster.complete(refused())
                assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")
            status, found = await post(api, client, "/v3/kv/range", {"key": b64("foo")})
            assert status == 200
            assert "kvs" not in found

            # No Content-Type at all (etcd3gw's txn: requests' data=): JSON, as etcd reads it.
            async def untyped() -> int:
                async with client.post(
                    "/v3/kv/put", data=put.encode(), skip_auto_headers=["Content-Type"]
                ) as response:
                    return response.status

            assert await api.cluster.complete(untyped()) == 200
            status, found = await post(api, client, "/v3/kv/range", {"key": b64("foo")})
            assert found["count"] == "1"

    run_scenario(scenario)
