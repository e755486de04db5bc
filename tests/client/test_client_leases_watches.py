"""Leases, kept leases, watches and the lock/election recipes of `Client` and `SyncClient`,
against a 3-node in-process cluster (real HTTP servers on 127.0.0.1, manual clock)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import httpx
import pytest
from client_helpers import Intercept, lose_answer

from raftkv.client import (
    Client,
    Compacted,
    Election,
    LeaseExists,
    LeaseNotFound,
    Lock,
    SyncClient,
    WatchBatch,
    WatchEvent,
    txn,
)
from raftkv.client.recipes import _Contender
from raftkv.kv import ReadLimits
from raftkv.testing.http_cluster import HttpCluster, http_cluster
from raftkv.testing.local_cluster import run_scenario


def in_cluster(test: object) -> None:
    async def scenario() -> None:
        async with http_cluster() as api:
            await test(api)  # type: ignore[operator]

    run_scenario(scenario)


async def take(iterator: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    taken: list[WatchEvent] = []
    async for event in iterator:
        taken.append(event)
        if len(taken) == count:
            break
    return taken


async def take_batches(iterator: AsyncIterator[WatchBatch], count: int) -> list[WatchBatch]:
    taken: list[WatchBatch] = []
    async for batch in iterator:
        taken.append(batch)
        if len(taken) == count:
            break
    return taken


def summary(events: list[WatchEvent]) -> list[tuple[str, bytes, bytes, int]]:
    return [(event.type, event.kv.key, event.kv.value, event.revision) for event in events]


# -- leases ----------------------------------------------------------------------------------


def test_lease_grant_attach_time_to_live_list_keep_alive_and_revoke() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            granted = await api.run(client.lease_grant(30))
            assert granted.id > 0 and granted.ttl == 30 and granted.revision == api.revision()
            await api.run(client.put("service/a", "1", lease=granted.id))
            await api.run(client.put("service/b", "2", lease=granted.id))
            info = await api.run(client.lease_time_to_live(granted.id, keys=True))
            assert info.id == granted.id and info.granted_ttl == 30 and 0 < info.ttl <= 30
            assert info.keys == (b"service/a", b"service/b")
            assert (await api.run(client.lease_time_to_live(granted.id))).keys == ()
            listed = await api.run(client.leases())
            assert [(lease.id, lease.granted_ttl) for lease in listed] == [(granted.id, 30)]
            kept = await api.run(client.lease_keep_alive(granted.id))
            assert (kept.id, kept.ttl) == (granted.id, 30)
            chosen = await api.run(client.lease_grant(5, id=77))
            assert chosen.id == 77
            with pytest.raises(LeaseExists):
                await api.run(client.lease_grant(5, id=77))
            revoked = await api.run(client.lease_revoke(granted.id))
            assert revoked.revision == api.revision()
            found = await api.run(client.range("service/", prefix=True))
            assert found.kvs == ()
            for call in (
                client.lease_keep_alive(granted.id),
                client.lease_revoke(granted.id),
                client.lease_time_to_live(granted.id),
                client.put("service/c", "3", lease=granted.id),
            ):
                with pytest.raises(LeaseNotFound):
                    await api.run(call)
            with pytest.raises(ValueError):
                await client.lease_grant(0)

    in_cluster(test)


def test_a_grant_and_a_revoke_whose_answers_are_lost_apply_once() -> None:
    async def test(api: HttpCluster) -> None:
        seen: set[str] = set()

        def first_grant_or_revoke(request: httpx.Request) -> bool:
            # The first attempt of each: the grant's, then the revoke's.
            if not request.url.path.startswith("/v1/lease") or request.method == "GET":
                return False
            first = request.method not in seen
            seen.add(request.method)
            return first

        faults = Intercept(first_grant_or_revoke, lose_answer, lose_answer)
        async with api.client(transport=faults) as client:
            granted = await api.run(client.lease_grant(20))
            # The first attempt granted it; the retry was refused lease_exists; the client
            # read the granted TTL back.
            assert granted.ttl == 20
            assert [lease.id for lease in await api.run(client.leases())] == [granted.id]
            revoked = await api.run(client.lease_revoke(granted.id))
            assert revoked.revision == 0  # this call's first attempt revoked it
            assert await api.run(client.leases()) == ()
            assert faults.faults == []

    in_cluster(test)


def test_a_kept_lease_outlives_its_ttl_and_is_revoked_on_exit() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            lease = client.lease(3)
            await api.run(lease.open())
            await api.run(client.put("held", "yes", lease=lease.id))
            start = api.cluster.clock.now()
            await api.cluster.run_until(lambda: api.cluster.clock.now() - start >= 10)
            assert lease.alive and not lease.lost.is_set()
            assert lease.deadline > api.cluster.clock.now()
            info = await api.run(client.lease_time_to_live(lease.id))
            assert info.ttl >= 1
            await api.run(lease.close())
            assert await api.run(client.get("held")) is None
            assert await api.run(client.leases()) == ()

    in_cluster(test)


def test_a_kept_lease_revoked_by_someone_else_is_lost() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client, api.client() as other, client.lease(3) as lease:
            await api.run(other.lease_revoke(lease.id))
            await api.run(lease.lost.wait())
            assert not lease.alive

    async def scenario() -> None:
        async with http_cluster() as api:
            # `async with client.lease()` grants on entry: run the whole block in the cluster.
            await api.run(test(api))

    run_scenario(scenario)


# -- watches ---------------------------------------------------------------------------------


def test_watch_events_in_order_whole_revisions_prev_kv_and_filters() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            first = await api.run(client.put("app/a", "1"))
            watcher = client.watch("app/", prefix=True, start_revision=first.revision, prev_kv=True)
            batches = asyncio.ensure_future(take_batches(watcher.batches(), 3))
            await api.run(
                client.txn([], [txn.put("app/b", "2"), txn.put("app/c", "3"), txn.put("x", "0")])
            )
            await api.run(client.delete("app/a"))
            got = await api.run(batches)
            await watcher.aclose()
            events = [event for batch in got for event in batch.events]
            assert summary(events) == [
                ("put", b"app/a", b"1", first.revision),
                ("put", b"app/b", b"2", first.revision + 1),
                ("put", b"app/c", b"3", first.revision + 1),
                ("delete", b"app/a", b"", first.revision + 2),
            ]
            # One revision's events are never split between batches.
            assert [len(batch.events) for batch in got] == [1, 2, 1]
            assert events[3].prev_kv is not None and events[3].prev_kv.value == b"1"
            assert watcher.revision == first.revision + 2

            deletes_only = client.watch("app/b", start_revision=first.revision, no_put=True)
            waiting = asyncio.ensure_future(take(aiter(deletes_only), 1))
            await api.run(client.delete("app/b"))
            (deleted,) = await api.run(waiting)
            assert (deleted.type, deleted.kv.key) == ("delete", b"app/b")
            await deletes_only.aclose()

    in_cluster(test)


def test_breaking_out_of_a_watch_without_async_with_is_clean() -> None:
    """Issue 14.11: `async for event in client.watch(...): ... break` left the watch to the
    garbage collector, which closed its async generator and httpx's at once: "aclose():
    asynchronous generator is already running" on stderr."""
    problems: list[str] = []

    async def test(api: HttpCluster) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(str(context)))
        async with api.client() as client:
            first = await api.run(client.put("k", "v"))

            async def first_event() -> bytes:
                async for event in client.watch("k", start_revision=first.revision):
                    return event.kv.key
                raise AssertionError("the watch ended")

            for _ in range(3):
                assert await api.run(first_event()) == b"k"
                gc.collect()
                for _ in range(20):  # the loop runs the finalizers of what was collected
                    await asyncio.sleep(0)

    in_cluster(test)
    assert problems == []


def test_a_watch_resumes_on_another_node_without_gap_or_duplicate() -> None:
    async def test(api: HttpCluster) -> None:
        follower = api.follower_ids()[0]
        # The watch starts at the follower (the first endpoint); writes go to the leader.
        endpoints = api.endpoints(follower, *[n for n in sorted(api.urls) if n != follower])
        async with api.client(endpoints) as client:
            start = api.revision() + 1
            watcher = client.watch("k/", prefix=True, start_revision=start)
            collected = asyncio.ensure_future(take(aiter(watcher), 20))
            for number in range(10):
                await api.run(client.put(f"k/{number}", str(number)))
            await api.cluster.run_until(lambda: (watcher.revision or 0) >= start + 9)
            # The node serving it shuts its watches (as on SIGTERM), then its HTTP server.
            api.services[follower].machine.watch_hub.close()
            for number in range(10, 20):
                await api.run(client.put(f"k/{number}", str(number)))
            events = await api.run(collected)
            await watcher.aclose()
            assert [event.kv.key for event in events] == [f"k/{n}".encode() for n in range(20)]
            assert [event.revision for event in events] == list(range(start, start + 20))

    in_cluster(test)


def test_a_watch_and_requests_move_on_when_their_member_is_removed() -> None:
    """The member serving the watch (and the client's first endpoint) is removed from the
    cluster: its watch ends `removed` at once and resumes at another member from the
    watermark, with no gap; requests it refuses (503 `removed`) go elsewhere."""

    async def test(api: HttpCluster) -> None:
        victim = api.follower_ids()[0]
        endpoints = api.endpoints(victim, *[n for n in sorted(api.urls) if n != victim])
        async with api.client(endpoints) as client:
            start = api.revision() + 1
            watcher = client.watch("k/", prefix=True, start_revision=start)
            collected = asyncio.ensure_future(take(aiter(watcher), 20))
            for number in range(10):
                await api.run(client.put(f"k/{number}", str(number)))
            await api.cluster.run_until(lambda: (watcher.revision or 0) >= start + 9)
            assert api.services[victim].machine.watch_hub.active == 1
            leader = api.services[api.leader_id()].node
            await api.run(leader.remove_member(api.services[victim].node.id))
            await api.cluster.run_until(lambda: api.services[victim].node.removed)
            for number in range(10, 20):
                await api.run(client.put(f"k/{number}", str(number)))
            # Served elsewhere: the removed member never got k/19.
            latest = await api.run(client.get("k/19", serializable=True))
            assert latest is not None and latest.value == b"19"
            events = await api.run(collected)
            assert watcher.reconnections >= 1
            await watcher.aclose()
            assert [event.kv.key for event in events] == [f"k/{n}".encode() for n in range(20)]
            assert [event.revision for event in events] == list(range(start, start + 20))
            assert api.services[victim].machine.watch_hub.active == 0

    in_cluster(test)


class CutWatch(httpx.AsyncBaseTransport):
    """Forwards to the network, but cuts the first watch stream (a lost connection: a
    ReadError) once `lines` lines of it went through."""

    def __init__(self, lines: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._lines: int | None = lines
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path != "/v1/watch":
            return response
        self.hosts.append(request.url.netloc.decode())
        if self._lines is None:
            return response
        lines, self._lines = self._lines, None
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Cut(response, lines)
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Cut(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, lines: int) -> None:
        self._response = response
        self._lines = lines

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        assert isinstance(self._response.stream, httpx.AsyncByteStream)
        async for chunk in self._response.stream:
            yield chunk
            seen += chunk.count(b"\n")
            if seen >= self._lines:
                raise httpx.ReadError("connection lost (injected)")

    async def aclose(self) -> None:
        await self._response.aclose()


def test_a_watch_whose_connection_is_lost_resumes_at_the_next_node() -> None:
    async def test(api: HttpCluster) -> None:
        cut = CutWatch(lines=3)  # created, then two events
        async with api.client(transport=cut) as client:
            start = api.revision() + 1
            watcher = client.watch("k", start_revision=start)
            collected = asyncio.ensure_future(take(aiter(watcher), 4))
            for number in range(1, 5):
                await api.run(client.put("k", str(number)))
            events = await api.run(collected)
            await watcher.aclose()
            assert [event.kv.value for event in events] == [b"1", b"2", b"3", b"4"]
            assert [event.revision for event in events] == list(range(start, start + 4))
            assert len(cut.hosts) == 2 and cut.hosts[0] != cut.hosts[1]

    in_cluster(test)


def test_a_watch_from_a_compacted_revision_fails_with_the_oldest_revision() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            for number in range(3):
                await api.run(client.put("c", str(number)))
            current = api.revision()
            await api.run(client.compact(current))
            watcher = client.watch("c", start_revision=current - 1)
            with pytest.raises(Compacted) as caught:
                await api.run(take(aiter(watcher), 1))
            assert caught.value.compact_revision == current
            assert caught.value.oldest_revision == current + 1
            with pytest.raises(ValueError):
                client.watch("")

    in_cluster(test)


def test_progress_notifications_are_handed_out_on_request() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            await api.run(client.put("p", "1"))
            watcher = client.watch("quiet", progress_notify=True, progress_interval_s=0.05)
            # Progress runs on the server's clock (the real one here), not simulated time:
            # a bounded wait, not api.run.
            got = await asyncio.wait_for(take_batches(watcher.batches(), 2), 20)
            await watcher.aclose()
            assert all(batch.events == () for batch in got)
            assert all(batch.revision == api.revision() for batch in got)

    in_cluster(test)


# -- recipes ---------------------------------------------------------------------------------


def test_a_lock_serves_contenders_in_order_with_growing_fencing_tokens() -> None:
    async def test(api: HttpCluster) -> None:
        async with (
            api.client() as client,
            client.lease(10) as first_lease,
            client.lease(10) as second_lease,
        ):
            first = Lock(client, "locks/job/", first_lease)
            second = Lock(client, "locks/job/", second_lease)
            first_token = await first.acquire()
            waiting = asyncio.ensure_future(second.acquire())
            await api.cluster.run_until(lambda: api.revision() >= first_token + 1)
            await api.cluster.settle()
            assert not waiting.done()
            await first.release()
            second_token = await waiting
            assert second_token > first_token and second.token == second_token
            assert first.token == 0
            # The holder's lease ends: the key goes, the next one in line gets it.
            third_lease = client.lease(10)
            await third_lease.open()
            third = Lock(client, "locks/job/", third_lease)
            waiting = asyncio.ensure_future(third.acquire())
            await api.cluster.settle()
            await second_lease.close()
            third_token = await waiting
            assert third_token > second_token
            await third.release()
            await third_lease.close()

    async def scenario() -> None:
        async with http_cluster() as api:
            await api.run(test(api))

    run_scenario(scenario)


def test_a_lock_queue_longer_than_one_answer_is_read_whole() -> None:
    """The server cuts a long range (`more`); the queue is read page by page at one
    revision, so the oldest waiter is found wherever it sorts in key order."""

    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            leases = [client.lease(30) for _ in range(6)]
            for lease in leases:
                await lease.open()
            contenders = sorted(
                (_Contender(client, "locks/big/", lease) for lease in leases),
                key=lambda contender: contender.key,
                reverse=True,
            )
            for contender in contenders:  # the oldest key sorts last, on the last page
                await contender.enter(b"v" * 400)
            waiting, revision = await contenders[-1].queue()
            assert [kv.key for kv in waiting] == [contender.key for contender in contenders]
            assert revision == api.revision()
            answer = await client.range("locks/big/", prefix=True)
            assert answer.more  # the server did cut it
            for lease in leases:
                await lease.close()

    async def scenario() -> None:
        async with http_cluster(read_limits=ReadLimits(max_response_bytes=1024)) as api:
            await api.run(test(api))

    run_scenario(scenario)


def test_an_election_campaign_leader_proclaim_and_resign() -> None:
    async def test(api: HttpCluster) -> None:
        async with (
            api.client() as client,
            client.lease(10) as one_lease,
            client.lease(10) as two_lease,
        ):
            one = Election(client, "election/", one_lease)
            two = Election(client, "election/", two_lease)
            token = await one.campaign("node-1")
            leader = await one.leader()
            assert leader is not None and leader.value == b"node-1"
            assert leader.create_revision == token
            waiting = asyncio.ensure_future(two.campaign("node-2"))
            await api.cluster.settle()
            await one.proclaim("node-1 at new address")
            leader = await two.leader()
            assert leader is not None and leader.value == b"node-1 at new address"
            await one.resign()
            assert await waiting > token
            leader = await one.leader()
            assert leader is not None and leader.value == b"node-2"
            await two.resign()
            assert await one.leader() is None

    async def scenario() -> None:
        async with http_cluster() as api:
            await api.run(test(api))

    run_scenario(scenario)


# -- the blocking client ---------------------------------------------------------------------


def test_sync_client_leases_kept_lease_and_watch() -> None:
    async def test(api: HttpCluster) -> None:
        def blocking() -> list[WatchEvent]:
            with SyncClient(api.endpoints()) as client:
                with client.lease(5) as lease:
                    client.put("s/held", "1", lease=lease.id)
                    info = client.lease_time_to_live(lease.id, keys=True)
                    assert info.keys == (b"s/held",) and lease.alive
                    start = client.status().revision
                    with client.watch("s/", prefix=True, start_revision=start) as watcher:
                        client.put("s/other", "2")
                        events = []
                        for event in watcher:
                            events.append(event)
                            if len(events) == 2:
                                break
                assert client.get("s/held") is None  # revoked on exit
                assert client.leases() == ()
                return events

        events = await api.run_blocking(blocking)
        assert [(event.type, event.kv.key) for event in events] == [
            ("put", b"s/held"),
            ("put", b"s/other"),
        ]

    in_cluster(test)


def test_client_rejects_a_non_positive_ttl() -> None:
    client = Client("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        client.lease(0)
    asyncio.run(client.close())
