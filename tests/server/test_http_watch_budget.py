"""Watch memory over HTTP (issue 12, C16): what an idle watcher keeps, the node's budget of
bytes held for watch clients, and what is left of a client that stopped reading. A
3-node LocalCluster with one aiohttp server per node (`server_helpers.started_with_leases`);
clients that never read are raw sockets with a tiny receive buffer."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import cast

import msgspec
from aiohttp import web
from server_helpers import (
    metrics_text,
    real_time_until,
    started_with_leases,
    stuck_watcher,
)

from raftkv.api.watches import WatchEvents
from raftkv.kv import EventBatch, KvService, Watch, WatchSettings
from raftkv.server import HttpSettings
from raftkv.server.app import WATCHES
from raftkv.server.watch_api import WatchHandlers, _Interrupted
from raftkv.testing.local_cluster import run_scenario


def held_watch_messages(marker: bytes) -> int:
    """Watch batches and event messages carrying a value that starts with `marker` which
    anything in the process still references."""
    gc.collect()
    text = marker.decode()
    found = 0
    for holder in gc.get_objects():
        if isinstance(holder, EventBatch):
            found += any(event.kv.value.startswith(marker) for event in holder.events)
        # msgspec leaves structs holding no containers untracked: look among referents.
        for item in gc.get_referents(holder):
            if isinstance(item, WatchEvents):
                found += any(event.kv.value.startswith(text) for event in item.events)
    return found


def watches_of(service: KvService) -> list[Watch]:
    return list(service.machine.watch_hub._watches)


def test_an_idle_watcher_holds_nothing_it_has_sent() -> None:
    """Found measuring RSS: each idle watcher kept its last message (the answer object and
    the events) referenced from the stream's loop until the next one, so 100 watchers of a
    1 MB value held 100+ MB for as long as the store stayed quiet."""

    async def scenario() -> None:
        async with started_with_leases() as api:
            node = api.leader()
            watcher = await api.open_watch(node, "key=k&prev_kv=true")
            assert (await watcher.message())["type"] == "created"
            marker = b"idle-watcher-"
            value = marker + b"x" * (256 << 10)
            await api.cluster.complete(api.services[node].put(b"k", value))
            (event,) = await watcher.events(1)
            assert len(event["kv"]["value"]) == len(value)
            del event
            hub = api.services[node].machine.watch_hub
            # The stream waits for the next revision, holding nothing it sent.
            await api.cluster.run_until(
                lambda: hub.buffered_bytes == 0 and held_watch_messages(marker) == 0,
                max_seconds=5,
            )
            await api.cluster.complete(api.services[node].put(b"k", b"again"))
            (event,) = await watcher.events(1)
            assert event["kv"]["value"] == "again"
            watcher.close()

    run_scenario(scenario)


def test_watchers_that_do_not_read_are_ended_too_slow_by_bytes_not_after_the_send_timeout() -> None:
    """Two clients stop reading, each stuck holding a 200 KB message; a third watcher's
    100 KB event takes the node's total over watch_max_total_buffered_bytes: the oldest of
    the largest holders is ended too_slow at once (the send timeout is a minute away), its
    connection dropped with what it held, and the healthy watcher gets its event."""

    async def scenario() -> None:
        big = 200_000
        settings = WatchSettings(max_buffered_bytes=300_000, max_total_buffered_bytes=450_000)
        async with started_with_leases(HttpSettings(watch_send_timeout_s=60.0), settings) as api:
            node = api.leader()
            service = api.services[node]
            hub = service.machine.watch_hub
            sockets = [await stuck_watcher(api, node, "key=big/&prefix=true") for _ in range(2)]
            healthy = await api.open_watch(node, "key=small")
            assert (await healthy.message())["type"] == "created"
            await api.cluster.run_until(lambda: hub.active == 3)
            stuck = [watch for watch in watches_of(service) if watch.spec.key == b"big/"]

            def both_stuck() -> bool:
                # Holding a message whose write cannot finish, while the store moved on.
                current = service.machine.current_revision()
                return all(
                    watch.buffered_bytes and watch.next_revision <= current for watch in stuck
                )

            for number in range(200):
                await api.cluster.complete(service.put(b"big/%d" % (number % 4), b"b" * big))
                await api.cluster.complete(service.put(b"noise", b"n"))
                if both_stuck():
                    break
            assert both_stuck()
            assert hub.buffered_bytes == sum(watch.buffered_bytes for watch in stuck) > 400_000
            oldest = min(stuck, key=lambda watch: watch.buffering_since)
            watches = api.clients[node].server.app[WATCHES]
            assert watches.canceled == {}

            await api.cluster.complete(service.put(b"small", b"s" * 100_000))
            (event,) = await healthy.events(1)
            assert len(event["kv"]["value"]) == 100_000
            await real_time_until(lambda: hub.active == 2, "the oldest stuck watch to end")
            assert watches.canceled == {"too_slow": 1}
            assert oldest.released and hub.buffered_bytes <= settings.max_total_buffered_bytes
            text = await metrics_text(api.clients[node])
            assert 'raftkv_limit_hits_total{limit="watch_max_total_buffered_bytes"} 1.0' in text
            assert 'raftkv_watch_canceled_total{reason="too_slow"} 1.0' in text
            assert f"raftkv_watch_buffered_bytes {float(hub.buffered_bytes)}" in text
            healthy.close()
            for client in sockets:
                client.close()

    run_scenario(scenario)


def test_a_client_that_stopped_reading_is_dropped_with_what_it_was_sent() -> None:
    """Found measuring RSS: a watch ended too_slow closed its connection gracefully, and a
    graceful close waits for the client to take what is queued: a client that never reads
    again kept its megabytes on the server for good (1.5 GB with dead clients)."""

    async def scenario() -> None:
        async with started_with_leases(HttpSettings(watch_send_timeout_s=0.2)) as api:
            node = api.leader()
            service = api.services[node]
            hub = service.machine.watch_hub
            runner = api.clients[node].server.runner
            assert runner is not None and runner.server is not None
            connections = runner.server.connections
            client = await stuck_watcher(api, node, "key=big")
            await api.cluster.run_until(lambda: hub.active == 1)
            assert len(runner.server.connections) == len(connections) + 1
            for _ in range(100):
                await api.cluster.complete(service.put(b"big", b"x" * (512 << 10)))
                if hub.active == 0:
                    break
            await real_time_until(lambda: hub.active == 0, "the watch to end too_slow")
            assert api.clients[node].server.app[WATCHES].canceled == {"too_slow": 1}
            # The server let go of the connection and what was queued on it.
            await real_time_until(
                lambda: len(runner.server.connections) == len(connections),
                "the connection to be dropped",
            )
            assert hub.buffered_bytes == 0
            client.close()

    run_scenario(scenario)


class FakeTransport:
    """What `_last_words` uses of a connection's transport."""

    def __init__(self, unsent_bytes: int) -> None:
        self.unsent_bytes = unsent_bytes
        self.ended_by = ""

    def get_write_buffer_size(self) -> int:
        return self.unsent_bytes

    def abort(self) -> None:
        self.ended_by = "abort"

    def close(self) -> None:
        self.ended_by = "close"


class FakeResponse:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.lines.append(data)


def ended(unsent_bytes: int) -> tuple[WatchHandlers, FakeTransport, FakeResponse]:
    """A watch interrupted too_slow at watermark 7, over a transport holding
    `unsent_bytes` its client has not taken."""
    handlers = WatchHandlers(cast(KvService, None), 10.0, 10.0)
    transport, response = FakeTransport(unsent_bytes), FakeResponse()
    request = cast(web.Request, SimpleNamespace(transport=transport))
    interrupted = _Interrupted("too_slow", "over the byte budget")
    asyncio.run(handlers._last_words(request, cast(web.StreamResponse, response), interrupted, 7))
    return handlers, transport, response


def test_a_client_that_has_not_taken_what_it_was_sent_is_dropped_at_once() -> None:
    """Found measuring RSS with 150 unread watchers: the budget's cancels come in a burst,
    and each waited half a second for last words its client could not take, keeping its
    unsent megabytes, which the budget no longer counted (408 MiB in 2 runs of 9)."""
    handlers, transport, response = ended(unsent_bytes=1 << 20)
    assert (transport.ended_by, response.lines) == ("abort", [])
    assert handlers.canceled == {"too_slow": 1}


def test_a_client_that_took_everything_gets_the_last_line_then_a_close() -> None:
    handlers, transport, response = ended(unsent_bytes=0)
    assert transport.ended_by == "close"
    assert [msgspec.json.decode(line) for line in response.lines] == [
        {
            "type": "canceled",
            "revision": 7,
            "error": {"code": "too_slow", "message": "over the byte budget"},
        }
    ]
    assert handlers.canceled == {"too_slow": 1}
