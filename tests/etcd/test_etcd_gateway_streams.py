"""etcd's JSON gateway's streams (`POST /v3/watch`, `/v3/lease/keepalive`,
`/v3/maintenance/snapshot`) on a 3-node LocalCluster: newline-delimited `{"result": ...}`
lines in etcd's gateway mapping, `{"error": {...}}` last when the stream ends with a
status, through the same servicers as the gRPC port; a client that goes away or a node
that stops ends the stream and releases what it held."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from etcd_helpers import CLUSTER_ID, EtcdApi, etcd_cluster

from raftkv.etcd.context import EtcdContext
from raftkv.etcd.proto import rpc_pb2
from raftkv.etcd.servicers import EtcdServicers
from raftkv.kv import KvStateMachine
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.server import HttpSettings, create_app
from raftkv.server.backup import read_backup
from raftkv.server.backup_api import BackupHandlers
from raftkv.testing.local_cluster import address_of, run_scenario

# What every client of the API sends with a body (a body without it is refused 415).
JSON = {"Content-Type": "application/json"}


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class Gateway:
    """The JSON gateway of one node of `api`, over real HTTP."""

    def __init__(self, api: EtcdApi, node: int, client: TestClient[Any, Any]) -> None:
        self.api = api
        self.node = node
        self.client = client

    async def open(self, path: str, body: Any, headers: Any = None) -> ClientResponse:
        """POST `body` (JSON, or a str as it is); the response once its status line is in."""
        data = body if isinstance(body, str) else json.dumps(body)
        response: ClientResponse = await self.api.cluster.complete(
            self.client.post(path, data=data, headers={**JSON, **(headers or {})})
        )
        return response

    async def line(self, response: ClientResponse) -> Any:
        """The stream's next line, decoded; None once it has ended."""
        raw = await self.api.cluster.complete(response.content.readline())
        if not raw:
            return None
        assert raw.endswith(b"\n")
        return json.loads(raw)

    async def lines(self, path: str, body: Any) -> tuple[int, list[Any]]:
        """The status and every line of a stream that ends by itself."""
        response = await self.open(path, body)
        try:
            found = []
            while (line := await self.line(response)) is not None:
                found.append(line)
            return response.status, found
        finally:
            response.close()

    async def put(self, key: str, value: str) -> int:
        answer = await self.api.call(
            self.node, "KV", "Put", rpc_pb2.PutRequest(key=key.encode(), value=value.encode())
        )
        return int(answer.header.revision)


@asynccontextmanager
async def gateway(*, snapshots: bool = False, follower: bool = False) -> AsyncIterator[Gateway]:
    """The leader's gateway (a follower's with `follower`); with `snapshots`, its servicers
    are given the server's backup source, as `raftkv serve` gives it."""
    async with etcd_cluster() as api:
        node = api.follower() if follower else api.leader()
        service = api.services[node]
        servicers = api.servicers[node]
        context = None
        if snapshots:
            backups = BackupHandlers(service, timeout=5.0, max_concurrent_backups=1)
            context = EtcdContext(service, CLUSTER_ID, backup=backups.backup_file)
            servicers = EtcdServicers.of(context)
        app = create_app(service, HttpSettings(), servicers)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        try:
            yield Gateway(api, node, client)
        finally:
            await client.close()
            if context is not None:
                context.close()


def test_watch_answers_created_then_events_as_result_lines() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            body = {"create_request": {"key": b64("app/"), "range_end": b64("app0")}}
            response = await gw.open("/v3/watch", body)
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/json")
            created = await gw.line(response)
            # watch_id 0, the server's first, is a default value: left out.
            assert created["result"]["created"] is True
            assert "watch_id" not in created["result"]
            assert created["result"]["header"]["member_id"] == str(gw.node)
            revision = await gw.put("app/a", "one")
            await gw.put("other", "x")
            changed = await gw.line(response)
            assert set(changed) == {"result"}
            (event,) = changed["result"]["events"]
            assert "type" not in event  # PUT, the enum's default
            assert event["kv"] == {
                "key": b64("app/a"),
                "value": b64("one"),
                "create_revision": str(revision),
                "mod_revision": str(revision),
                "version": "1",
            }
            deleted = await gw.api.call(
                gw.node, "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"app/a")
            )
            line = await gw.line(response)
            (event,) = line["result"]["events"]
            assert event["type"] == "DELETE"
            assert event["kv"]["mod_revision"] == str(deleted.header.revision)
            response.close()

    run_scenario(scenario)


def test_watch_body_may_hold_several_requests() -> None:
    """grpc-gateway sends each JSON value of the body on the stream, in order."""

    async def scenario() -> None:
        async with gateway() as gw:
            body = (
                json.dumps({"create_request": {"key": b64("a"), "watch_id": "7"}})
                + "\n"
                + json.dumps({"create_request": {"key": b64("b"), "prev_kv": True}})
            )
            response = await gw.open("/v3/watch", body)
            first, second = await gw.line(response), await gw.line(response)
            assert (first["result"]["watch_id"], first["result"]["created"]) == ("7", True)
            assert second["result"]["created"] is True and "watch_id" not in second["result"]
            await gw.put("b", "1")
            await gw.put("b", "2")
            events = []
            while len(events) < 2:
                events += (await gw.line(response))["result"]["events"]
            assert events[1]["prev_kv"]["value"] == b64("1")
            response.close()

    run_scenario(scenario)


def test_watch_from_a_compacted_revision_is_created_then_canceled() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            for index in range(4):
                revision = await gw.put("k", str(index))
            await gw.api.call(
                gw.node, "KV", "Compact", rpc_pb2.CompactionRequest(revision=revision)
            )
            body = {"create_request": {"key": b64("k"), "start_revision": "2"}}
            response = await gw.open("/v3/watch", body)
            created = await gw.line(response)
            assert created["result"]["created"] is True
            canceled = await gw.line(response)
            assert canceled["result"]["canceled"] is True
            # The compaction revision, the oldest one a watch can start from, as etcd's.
            assert canceled["result"]["compact_revision"] == str(revision)
            response.close()
            body = {"create_request": {"key": b64("k"), "start_revision": str(revision)}}
            response = await gw.open("/v3/watch", body)
            assert (await gw.line(response))["result"]["created"] is True
            (event,) = (await gw.line(response))["result"]["events"]
            assert (event["kv"]["value"], event["kv"]["mod_revision"]) == (b64("3"), str(revision))
            response.close()

    run_scenario(scenario)


def test_a_client_that_goes_away_releases_its_watches() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            hub = gw.api.services[gw.node].watch_hub
            watch = gw.api.servicers[gw.node].watch
            response = await gw.open("/v3/watch", {"create_request": {"key": b64("k")}})
            assert (await gw.line(response))["result"]["created"] is True
            assert (hub.active, watch.streams) == (1, 1)
            response.close()
            await gw.api.cluster.run_until(lambda: hub.active == 0 and watch.streams == 0)
            # A stream with no watches at all (nothing written: grpc-gateway sends the
            # status line with the first line) ends the same way.
            opening = asyncio.ensure_future(gw.client.post("/v3/watch", data=""))
            await gw.api.cluster.run_until(lambda: watch.streams == 1)
            opening.cancel()
            await gw.api.cluster.run_until(lambda: watch.streams == 0)

    run_scenario(scenario)


def test_a_stopping_node_ends_the_stream_with_etcds_server_stopped_line() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            response = await gw.open("/v3/watch", {"create_request": {"key": b64("k")}})
            assert (await gw.line(response))["result"]["created"] is True
            gw.api.services[gw.node].watch_hub.close()
            assert await gw.line(response) == {
                "error": {
                    "grpc_code": 14,
                    "http_code": 503,
                    "message": "etcdserver: server stopped",
                    "http_status": "Service Unavailable",
                }
            }
            assert await gw.line(response) is None
            assert response.status == 200  # sent with the first line
            # A stream with no watch ends too; nothing written before: the error's status.
            status, lines = await gw.lines("/v3/watch", "")
            assert status == 503
            assert lines[0]["error"]["message"] == "etcdserver: server stopped"

    run_scenario(scenario)


def test_grpc_metadata_headers_reach_the_stream_hasleader_ends_it_without_a_leader() -> None:
    """grpc-gateway passes `Grpc-Metadata-<key>` headers on as gRPC metadata: etcd's
    `hasleader` asks that the stream end once its member has no leader."""

    async def scenario() -> None:
        async with gateway(follower=True) as gw:
            body = {"create_request": {"key": b64("a")}}
            requiring = await gw.open("/v3/watch", body, {"Grpc-Metadata-Hasleader": "true"})
            plain = await gw.open("/v3/watch", body)
            for response in (requiring, plain):
                assert (await gw.line(response))["result"]["created"] is True
            gw.api.cluster.network.isolate(address_of(gw.node))
            raw = await gw.api.cluster.complete(requiring.content.readline(), max_seconds=60)
            assert json.loads(raw)["error"]["message"] == "etcdserver: no leader"
            assert json.loads(raw)["error"]["grpc_code"] == 14
            assert gw.api.services[gw.node].watch_hub.active == 1  # the other goes on
            assert not plain.content.at_eof()
            plain.close()
            requiring.close()

    run_scenario(scenario)


def test_watch_refusals_are_result_lines_as_on_the_grpc_port() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            response = await gw.open(
                "/v3/watch", {"create_request": {"key": b64("k"), "start_revision": "-1"}}
            )
            refused = (await gw.line(response))["result"]
            assert (refused["created"], refused["canceled"], refused["watch_id"]) == (
                True,
                True,
                "-1",
            )
            assert refused["cancel_reason"]
            response.close()

    run_scenario(scenario)


def test_a_body_that_is_not_the_request_message_is_refused_before_the_stream() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            for path, body in (
                ("/v3/watch", '{"create_request": {"key": "a"}} {"nope": 1}'),
                ("/v3/watch", "{not json"),
                ("/v3/lease/keepalive", '[{"ID": "1"}]'),
                ("/v3/maintenance/snapshot", "{} {}"),
                ("/v3/maintenance/snapshot", b"\xff".decode("latin-1")),
            ):
                async with gw.client.post(path, data=body, headers=JSON) as response:
                    assert response.status == 400, (path, body)
                    answer = await response.json()
                assert answer["code"] == 3
                assert answer["message"].startswith("invalid JSON for "), answer
            assert gw.api.servicers[gw.node].watch.streams == 0

    run_scenario(scenario)


def test_keepalive_answers_each_request_of_the_body_then_ends() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            granted = await gw.api.call(
                gw.node, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=30)
            )
            status, lines = await gw.lines("/v3/lease/keepalive", {"ID": str(granted.ID)})
            assert status == 200
            (line,) = lines
            assert line["result"]["ID"] == str(granted.ID)
            assert line["result"]["TTL"] == "30"
            assert line["result"]["header"]["cluster_id"] == str(CLUSTER_ID)
            # Several requests: one answer each, in order; an unknown lease answers TTL 0
            # (left out) and the stream goes on.
            body = json.dumps({"ID": "999"}) + json.dumps({"ID": str(granted.ID)})
            status, lines = await gw.lines("/v3/lease/keepalive", body)
            assert [line["result"]["ID"] for line in lines] == ["999", str(granted.ID)]
            assert [line["result"].get("TTL") for line in lines] == [None, "30"]
            # No request: nothing to answer.
            assert await gw.lines("/v3/lease/keepalive", "") == (200, [])

    run_scenario(scenario)


def test_snapshot_lines_concatenate_to_a_backup_raftkv_restores() -> None:
    async def scenario() -> None:
        async with gateway(snapshots=True) as gw:
            noise = random.Random(0)
            for index in range(40):
                await gw.api.call(
                    gw.node,
                    "KV",
                    "Put",
                    rpc_pb2.PutRequest(key=b"key-%d" % index, value=noise.randbytes(8000)),
                )
            status, lines = await gw.lines("/v3/maintenance/snapshot", "")
            assert status == 200
            assert len(lines) > 1
            blobs = [base64.b64decode(line["result"]["blob"]) for line in lines]
            data = b"".join(blobs)
            remaining = [int(line["result"].get("remaining_bytes", "0")) for line in lines]
            assert remaining[-1] == 0
            assert remaining[0] == len(data) - len(blobs[0])
            header, payload = read_backup(data)
            assert header.node_id == gw.node
            copy = KvStateMachine(MemoryAppData())
            copy.restore(payload, header.index, header.term)
            assert copy.state_hash() == gw.api.services[gw.node].machine.state_hash()

    run_scenario(scenario)


def test_snapshot_refused_before_any_line_answers_the_errors_status() -> None:
    async def scenario() -> None:
        # etcd_cluster's servicers have no backup source: Snapshot is UNIMPLEMENTED.
        async with gateway() as gw:
            status, lines = await gw.lines("/v3/maintenance/snapshot", "{}")
            assert status == 501
            assert lines == [
                {
                    "error": {
                        "grpc_code": 12,
                        "http_code": 501,
                        "message": "raftkv: this server makes no snapshots",
                        "http_status": "Not Implemented",
                    }
                }
            ]

    run_scenario(scenario)
