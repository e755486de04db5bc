"""The lease and watch routes on a 3-node LocalCluster (real Nodes, manual clock), one
aiohttp server per node. Lease countdowns and watch progress run on the cluster's clock;
every request runs inside `cluster.complete`, which advances simulated time until done."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from typing import Any

from server_helpers import metrics_text, started_with_leases

from raftkv.kv import WatchSettings
from raftkv.raft.core.types import NodeId
from raftkv.server import HttpSettings
from raftkv.server.app import WATCHES
from raftkv.testing.local_cluster import address_of, run_scenario

Json = Any


def error_of(body: Json) -> str:
    code: str = body["error"]["code"]
    return code


# -- leases ----------------------------------------------------------------------------------


def test_a_lease_is_granted_kept_alive_listed_and_revoked_with_its_keys() -> None:
    async def scenario() -> None:
        async with started_with_leases() as api:
            follower = api.follower()
            status, body = await api.call(follower, "POST", "/v1/lease", json={"ttl": 30, "id": 5})
            assert status == 200 and (body["id"], body["ttl"]) == (5, 30)
            status, body = await api.call(follower, "POST", "/v1/lease", json={"ttl": 1})
            assert status == 200 and body["id"] >= 1 and body["ttl"] == 2  # min_lease_ttl_s
            other = body["id"]
            for key in ("a", "b"):
                status, _ = await api.call(
                    follower, "PUT", f"/v1/kv/{key}", json={"value": "v", "lease": 5}
                )
                assert status == 200
            status, body = await api.call(follower, "GET", "/v1/lease/5?keys=true")
            assert status == 200
            assert body["keys"] == ["a", "b"] and body["granted_ttl"] == 30
            assert 28 <= body["ttl"] <= 30
            status, body = await api.call(follower, "GET", "/v1/lease/5?keys=true&encoding=base64")
            assert [base64.b64decode(key) for key in body["keys"]] == [b"a", b"b"]
            await api.cluster.run_until(lambda: api.cluster.clock.now() > 10)
            status, body = await api.call(follower, "POST", "/v1/lease/5/keepalive")
            assert status == 200 and (body["id"], body["ttl"]) == (5, 30)
            status, body = await api.call(api.leader(), "GET", "/v1/lease/5")
            assert body["ttl"] >= 29
            status, body = await api.call(follower, "GET", "/v1/leases")
            assert status == 200
            assert sorted(lease["id"] for lease in body["leases"]) == sorted([5, other])
            before = api.services[follower].machine.current_revision()
            status, body = await api.call(follower, "DELETE", "/v1/lease/5")
            assert status == 200 and body["header"]["revision"] == before + 1
            for key in ("a", "b"):
                status, body = await api.call(follower, "GET", f"/v1/kv/{key}")
                assert status == 404 and error_of(body) == "not_found"
            status, body = await api.call(follower, "GET", "/v1/lease/5")
            assert status == 404 and error_of(body) == "lease_not_found"

    run_scenario(scenario)


def test_lease_refusals_are_clear_errors_and_change_nothing() -> None:
    async def scenario() -> None:
        async with started_with_leases() as api:
            node = api.leader()
            await api.call(node, "POST", "/v1/lease", json={"ttl": 10, "id": 7})
            revision = api.services[node].machine.current_revision()
            cases: list[tuple[str, str, Any, int, str]] = [
                ("POST", "/v1/lease", {"ttl": 10, "id": 7}, 409, "lease_exists"),
                ("POST", "/v1/lease", {"ttl": 0}, 400, "invalid_request"),
                ("POST", "/v1/lease", {"ttl": 10**12}, 400, "invalid_request"),
                ("POST", "/v1/lease", {"ttl": 10, "id": -3}, 400, "invalid_request"),
                ("POST", "/v1/lease", {"ttl": "10"}, 400, "invalid_request"),
                ("POST", "/v1/lease", {"ttl": 10, "extra": 1}, 400, "invalid_request"),
                ("POST", "/v1/lease/8/keepalive", None, 404, "lease_not_found"),
                ("POST", "/v1/lease/0/keepalive", None, 400, "invalid_request"),
                ("GET", "/v1/lease/abc", None, 400, "invalid_request"),
                ("GET", "/v1/lease/99999999999999999999", None, 400, "invalid_request"),
                ("DELETE", "/v1/lease/8", None, 404, "lease_not_found"),
                ("PUT", "/v1/kv/k", {"value": "v", "lease": 8}, 404, "lease_not_found"),
            ]
            for method, path, body, status, code in cases:
                got_status, got = await api.call(node, method, path, json=body)
                assert (got_status, error_of(got)) == (status, code), (method, path, body)
            status, body = await api.call(
                node,
                "POST",
                "/v1/lease",
                data=b"{not json",
                headers={"Content-Type": "application/json"},
            )
            assert status == 400 and error_of(body) == "invalid_json"
            assert api.services[node].machine.current_revision() == revision
            status, body = await api.call(node, "GET", "/v1/leases")
            assert [lease["id"] for lease in body["leases"]] == [7]

    run_scenario(scenario)


def test_an_expired_lease_deletes_its_keys_and_watchers_see_the_deletes() -> None:
    async def scenario() -> None:
        async with started_with_leases(keepers=True) as api:
            node = api.follower()
            status, _ = await api.call(node, "POST", "/v1/lease", json={"ttl": 3, "id": 11})
            granted_at = api.cluster.clock.now()
            await api.call(node, "PUT", "/v1/kv/session/a", json={"value": "1", "lease": 11})
            await api.call(node, "PUT", "/v1/kv/session/b", json={"value": "2", "lease": 11})
            await api.call(node, "PUT", "/v1/kv/other", json={"value": "3"})
            start = api.services[node].machine.current_revision() + 1
            watcher = await api.open_watch(node, f"key=session/&prefix=true&start_revision={start}")
            created = await watcher.message()
            assert created["type"] == "created" and created["start_revision"] == start
            message = await watcher.message(max_seconds=10)
            expired_at = api.cluster.clock.now()
            assert message["type"] == "events"
            assert [(event["type"], event["kv"]["key"]) for event in message["events"]] == [
                ("delete", "session/a"),
                ("delete", "session/b"),
            ]
            # Both deletes at one revision: the expiry's.
            assert {event["kv"]["mod_revision"] for event in message["events"]} == {start}
            assert 3.0 <= expired_at - granted_at <= 3.0 + 1.0
            status, _ = await api.call(node, "GET", "/v1/kv/other")
            assert status == 200
            status, body = await api.call(node, "GET", "/v1/lease/11")
            assert status == 404 and error_of(body) == "lease_not_found"
            leader = api.leader()
            leader_keeper = api.keepers[leader]
            assert leader_keeper.expired == 1 and len(leader_keeper.expiry_delays) == 1
            metrics = await api.cluster.complete(metrics_text(api.clients[leader]))
            assert "raftkv_lease_expired_total 1.0" in metrics
            assert "raftkv_leases 0.0" in metrics
            assert 'raftkv_lease_expiry_delay_seconds{quantile="1.0"}' in metrics
            watching = await api.cluster.complete(metrics_text(api.clients[node]))
            assert "raftkv_watches 1.0" in watching
            assert "raftkv_watch_events_sent_total 2.0" in watching
            watcher.close()

    run_scenario(scenario)


# -- watches ---------------------------------------------------------------------------------


def test_a_watch_streams_every_change_in_order_with_whole_revisions() -> None:
    async def scenario() -> None:
        async with started_with_leases() as api:
            leader, follower = api.leader(), api.follower()
            await api.call(leader, "PUT", "/v1/kv/app/x", json={"value": "0"})
            start = api.services[leader].machine.current_revision()
            watcher = await api.open_watch(
                follower, f"key=app/&prefix=true&prev_kv=true&start_revision={start}"
            )
            assert (await watcher.message())["type"] == "created"
            txn = {
                "success": [
                    {"op": "put", "key": "app/y", "value": "1"},
                    {"op": "put", "key": "app/z", "value": "2"},
                    {"op": "put", "key": "zzz", "value": "not watched"},
                ]
            }
            await api.call(leader, "POST", "/v1/txn", json=txn)
            await api.call(leader, "PUT", "/v1/kv/app/x", json={"value": "3"})
            await api.call(leader, "DELETE", "/v1/kv/app/?prefix=true")
            events = await watcher.events(7)
            described = [
                (event["type"], event["kv"]["key"], event["kv"]["mod_revision"]) for event in events
            ]
            assert described == [
                ("put", "app/x", start),
                ("put", "app/y", start + 1),
                ("put", "app/z", start + 1),
                ("put", "app/x", start + 2),
                ("delete", "app/x", start + 3),
                ("delete", "app/y", start + 3),
                ("delete", "app/z", start + 3),
            ]
            assert events[3]["prev_kv"]["value"] == "0"
            assert events[4]["prev_kv"]["value"] == "3"
            assert "prev_kv" not in events[1]
            watcher.close()

    run_scenario(scenario)


def test_watch_filters_progress_and_resume_from_a_watermark() -> None:
    async def scenario() -> None:
        async with started_with_leases() as api:
            node = api.leader()
            watcher = await api.open_watch(
                node, "key=k&no_put=true&progress_notify=true&progress_interval_s=1"
            )
            created = await watcher.message()
            await api.call(node, "PUT", "/v1/kv/k", json={"value": "1"})
            await api.call(node, "DELETE", "/v1/kv/k")
            message = await watcher.message()
            while message["type"] == "progress":
                message = await watcher.message()
            assert [event["type"] for event in message["events"]] == ["delete"]
            progress = await watcher.message()
            assert progress == {"type": "progress", "revision": message["revision"]}
            watcher.close()
            # Resuming from a watermark replays what came after it, nothing before.
            resumed = await api.open_watch(node, f"key=k&start_revision={created['revision'] + 1}")
            assert (await resumed.message())["start_revision"] == created["revision"] + 1
            events = await resumed.events(2)
            assert [event["type"] for event in events] == ["put", "delete"]
            resumed.close()

    run_scenario(scenario)


def test_a_watch_from_a_compacted_revision_is_410_with_the_oldest_revision() -> None:
    async def scenario() -> None:
        async with started_with_leases() as api:
            node = api.leader()
            for value in range(4):
                await api.call(node, "PUT", "/v1/kv/k", json={"value": str(value)})
            await api.call(node, "POST", "/v1/compact", json={"revision": 4})
            status, body = await api.call(node, "GET", "/v1/watch?key=k&start_revision=3")
            assert status == 410
            assert body["error"]["code"] == "compacted"
            assert (body["error"]["compact_revision"], body["error"]["oldest_revision"]) == (4, 5)
            watcher = await api.open_watch(node, "key=k&start_revision=5")
            assert (await watcher.message())["type"] == "created"
            assert [event["kv"]["value"] for event in await watcher.events(1)] == ["3"]
            watcher.close()

    run_scenario(scenario)


def test_watch_refusals_and_stopping() -> None:
    async def scenario() -> None:
        async with started_with_leases(watch_settings=WatchSettings(max_watches=1)) as api:
            node = api.leader()
            for query, code in [
                ("", "empty_key"),
                ("key=a&prefix=true&range_end=b", "invalid_request"),
                ("key=a&start_revision=-1", "invalid_request"),
                ("key=a&progress_notify=true&progress_interval_s=0", "invalid_request"),
                ("key=a&progress_notify=maybe", "invalid_request"),
                ("key=!!&encoding=base64", "invalid_base64"),
            ]:
                status, body = await api.call(node, "GET", f"/v1/watch?{query}")
                assert status == 400 and error_of(body) == code, query
            watcher = await api.open_watch(node, "key=a")
            await watcher.message()
            status, body = await api.call(node, "GET", "/v1/watch?key=b")
            assert status == 503 and error_of(body) == "too_many_watches"
            api.services[node].machine.watch_hub.close()
            canceled = await watcher.message()
            assert canceled["type"] == "canceled" and canceled["error"]["code"] == "stopping"
            status, body = await api.call(node, "GET", "/v1/watch?key=b")
            assert status == 503 and error_of(body) == "stopped"

    run_scenario(scenario)


def test_a_value_that_is_not_utf8_ends_a_text_watch_with_not_utf8() -> None:
    async def scenario() -> None:
        async with started_with_leases() as api:
            node = api.leader()
            watcher = await api.open_watch(node, "key=bin")
            await watcher.message()
            await api.services[node].put(b"bin", b"\xff\xfe")
            canceled = await watcher.message()
            assert canceled["type"] == "canceled" and canceled["error"]["code"] == "not_utf8"
            watcher = await api.open_watch(node, "key=Ymlu&encoding=base64&start_revision=2")
            await watcher.message()
            (event,) = await watcher.events(1)
            assert base64.b64decode(event["kv"]["value"]) == b"\xff\xfe"
            watcher.close()

    run_scenario(scenario)


def test_a_watch_whose_client_stops_reading_is_ended_too_slow() -> None:
    """The client opens a watch on a raw socket with a small receive buffer and never reads;
    the server's writes block, and after watch_send_timeout_s it ends the watch instead of
    holding it (and what it would buffer) forever."""

    async def scenario() -> None:
        settings = HttpSettings(watch_send_timeout_s=0.2)
        async with started_with_leases(settings=settings) as api:
            node = api.leader()
            server = api.clients[node].server
            _reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            writer.write(b"GET /v1/watch?key=big HTTP/1.1\r\nHost: test\r\n\r\n")
            await writer.drain()
            hub = api.services[node].machine.watch_hub
            await api.cluster.run_until(lambda: hub.active == 1)
            value = b"x" * (512 << 10)
            for _ in range(40):
                await api.cluster.complete(api.services[node].put(b"big", value))
                if hub.active == 0:
                    break
            # Bounded wait (real time: the send timeout is on the event loop's clock).
            for _ in range(200):
                if hub.active == 0:
                    break
                await asyncio.sleep(0.05)
            assert hub.active == 0
            watches = api.clients[node].server.app[WATCHES]
            assert watches.canceled == {"too_slow": 1}
            writer.close()

    run_scenario(scenario)


def test_a_watch_on_a_member_cut_off_from_its_leader_ends_no_leader() -> None:
    async def scenario() -> None:
        async with started_with_leases(HttpSettings(watch_no_leader_timeout_s=2.0)) as api:
            follower = api.follower()
            watcher = await api.open_watch(follower, "key=k")
            assert (await watcher.message())["type"] == "created"
            api.cluster.network.isolate(address_of(NodeId(follower)))
            node = api.services[follower].node
            await api.cluster.run_until(lambda: node.leaderless_seconds() >= 2.0)
            # The watch's next liveness check (every second of real time, on the event
            # loop's clock) ends it: a bounded wait for the line.
            line = await asyncio.wait_for(watcher.response.content.readline(), 10)
            canceled = json.loads(line)
            assert canceled["type"] == "canceled", canceled
            assert canceled["error"]["code"] == "no_leader"
            assert api.services[follower].node.leader_id == 0
            watcher.close()
            assert api.clients[follower].app[WATCHES].canceled == {"no_leader": 1}
            # A member with a leader keeps its watches.
            api.cluster.network.heal()
            leader = api.leader()
            steady = await api.open_watch(
                leader, "key=k&progress_notify=true&progress_interval_s=1"
            )
            assert (await steady.message())["type"] == "created"
            assert (await steady.message())["type"] == "progress"
            steady.close()

    run_scenario(scenario)
