"""etcd's Watch service against a real 3-node cluster (manual clock) through real gRPC:
etcd's semantics field by field (server/etcdserver/api/v3rpc/watch.go)."""

from __future__ import annotations

import grpc
import pytest
from etcd_helpers import CLUSTER_ID, EtcdApi, etcd_cluster
from etcd_watch_helpers import WatchClient

from raftkv.etcd.proto import kv_pb2, rpc_pb2
from raftkv.etcd.settings import EtcdSettings
from raftkv.etcd.watch_stream import WatchStreamSettings
from raftkv.etcd.watch_translation import DUPLICATE_ID, EMPTY_RANGE, NEGATIVE_START, fragments
from raftkv.kv.commands import Put, Txn
from raftkv.kv.watch import WatchSettings
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.testing.local_cluster import address_of, run_scenario

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE
_Create = rpc_pb2.WatchCreateRequest


async def put(api: EtcdApi, key: bytes, value: bytes) -> int:
    response = await api.call(api.leader(), "KV", "Put", rpc_pb2.PutRequest(key=key, value=value))
    return int(response.header.revision)


async def delete(api: EtcdApi, key: bytes, range_end: bytes = b"") -> int:
    request = rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end)
    response = await api.call(api.leader(), "KV", "DeleteRange", request)
    return int(response.header.revision)


def watched(api: EtcdApi, node: int) -> int:
    return api.services[node].watch_hub.active


def test_create_then_put_and_delete_events_with_etcds_fields() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.follower()
            before = await put(api, b"other", b"x")
            await api.cluster.run_until(lambda: api.services[node].current_revision() >= before)
            client = WatchClient(api, node)
            await client.create(key=b"a")
            created = await client.receive()
            assert created.created and not created.canceled
            assert created.watch_id == 0  # etcd's server-chosen ids start at 0 per stream
            assert created.header.revision == before
            assert (created.header.cluster_id, created.header.member_id) == (CLUSTER_ID, node)
            assert created.header.raft_term >= 1
            put_revision = await put(api, b"a", b"1")
            delete_revision = await delete(api, b"a")
            first, second = await client.events(2)
            assert first.type == PUT
            assert (first.kv.key, first.kv.value, first.kv.version) == (b"a", b"1", 1)
            assert first.kv.create_revision == first.kv.mod_revision == put_revision
            assert not first.HasField("prev_kv")
            assert second.type == DELETE
            assert second.kv.key == b"a"
            assert second.kv.mod_revision == delete_revision
            assert (second.kv.value, second.kv.version, second.kv.create_revision) == (b"", 0, 0)
            client.call.cancel()

    run_scenario(scenario)


def test_events_header_names_the_revision_they_reach() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"k")
            await client.receive()
            revision = await put(api, b"k", b"v")
            response = await client.receive()
            assert response.watch_id == 0
            assert response.header.revision == revision
            assert [event.kv.mod_revision for event in response.events] == [revision]
            client.call.cancel()

    run_scenario(scenario)


def test_range_prefix_and_from_key_watches() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"b", range_end=b"d", watch_id=1)  # [b, d)
            await client.create(key=b"p/", range_end=b"p0", watch_id=2)  # prefix p/
            await client.create(key=b"x", range_end=b"\0", watch_id=3)  # every key >= x
            await client.create(key=b"", range_end=b"\0", watch_id=4)  # every key
            for _ in range(4):
                assert (await client.receive()).created
            for key in (b"a", b"b", b"c", b"d", b"p/1", b"p0", b"x", b"zz"):
                await put(api, key, b"v")
            seen: dict[int, list[bytes]] = {1: [], 2: [], 3: [], 4: []}
            while len(seen[4]) < 8 or len(seen[3]) < 2 or len(seen[2]) < 1 or len(seen[1]) < 2:
                response = await client.receive()
                seen[response.watch_id] += [event.kv.key for event in response.events]
            assert seen == {
                1: [b"b", b"c"],
                2: [b"p/1"],
                3: [b"x", b"zz"],
                4: [b"a", b"b", b"c", b"d", b"p/1", b"p0", b"x", b"zz"],
            }
            client.call.cancel()

    run_scenario(scenario)


def test_empty_range_is_refused_as_etcd_does() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"d", range_end=b"b")
            refused = await client.receive()
            assert (refused.watch_id, refused.created, refused.canceled) == (-1, True, True)
            assert refused.cancel_reason == EMPTY_RANGE == "mvcc: watcher range is empty"
            assert watched(api, api.leader()) == 0
            client.call.cancel()

    run_scenario(scenario)


def test_start_revision_in_the_past_replays_history() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            first = await put(api, b"h", b"1")
            await put(api, b"h", b"2")
            await delete(api, b"h")
            await put(api, b"h", b"3")
            client = WatchClient(api, api.follower())
            await client.create(key=b"h", start_revision=first + 1)
            assert (await client.receive()).created
            events = await client.events(3)
            assert [(event.type, event.kv.value) for event in events] == [
                (PUT, b"2"),
                (DELETE, b""),
                (PUT, b"3"),
            ]
            assert [event.kv.mod_revision for event in events] == [first + 1, first + 2, first + 3]
            client.call.cancel()

    run_scenario(scenario)


def test_compacted_start_is_created_then_canceled_with_compact_revision() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            first = await put(api, b"c", b"1")
            compact_at = await put(api, b"c", b"2")
            await put(api, b"c", b"3")
            leader = api.leader()
            await api.call(leader, "KV", "Compact", rpc_pb2.CompactionRequest(revision=compact_at))
            client = WatchClient(api, leader)
            await client.create(key=b"c", start_revision=first, watch_id=7)
            created = await client.receive()
            assert (created.watch_id, created.created, created.canceled) == (7, True, False)
            canceled = await client.receive()
            assert (canceled.watch_id, canceled.canceled) == (7, True)
            # The compaction revision, the oldest one a watch can start from, as etcd's.
            assert canceled.compact_revision == compact_at
            assert canceled.cancel_reason == ""
            assert canceled.header.revision == 0  # etcd's compaction notice has none
            assert watched(api, leader) == 0
            # Resuming where it says works: the put at the compaction revision, then on.
            await client.create(key=b"c", start_revision=canceled.compact_revision, watch_id=7)
            assert (await client.receive()).created
            events = await client.events(2)
            assert [(event.kv.value, event.kv.mod_revision) for event in events] == [
                (b"2", compact_at),
                (b"3", compact_at + 1),
            ]
            client.call.cancel()

    run_scenario(scenario)


def test_negative_start_revision_is_refused_as_etcd_does() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"a", start_revision=-5)
            refused = await client.receive()
            assert (refused.watch_id, refused.created, refused.canceled) == (-1, True, True)
            assert refused.cancel_reason == NEGATIVE_START
            client.call.cancel()

    run_scenario(scenario)


def test_filters_leave_out_puts_or_deletes_and_unknown_filters_are_ignored() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"f", watch_id=1, filters=[_Create.NOPUT])
            await client.create(key=b"f", watch_id=2, filters=[_Create.NODELETE])
            await client.create(key=b"f", watch_id=3, filters=[42])  # unknown: ignored
            for _ in range(3):
                assert (await client.receive()).created
            await put(api, b"f", b"1")
            await delete(api, b"f")
            seen: dict[int, list[int]] = {1: [], 2: [], 3: []}
            while sum(len(types) for types in seen.values()) < 4:
                response = await client.receive()
                seen[response.watch_id] += [event.type for event in response.events]
            assert seen == {1: [DELETE], 2: [PUT], 3: [PUT, DELETE]}
            client.call.cancel()

    run_scenario(scenario)


def test_prev_kv_carries_the_key_before_each_event() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"p", prev_kv=True)
            await client.receive()
            created = await put(api, b"p", b"1")
            await put(api, b"p", b"2")
            await delete(api, b"p")
            first, second, third = await client.events(3)
            assert not first.HasField("prev_kv")  # a create has no previous key
            assert (second.prev_kv.value, second.prev_kv.mod_revision) == (b"1", created)
            assert (third.prev_kv.key, third.prev_kv.value, third.prev_kv.version) == (
                b"p",
                b"2",
                2,
            )
            client.call.cancel()

    run_scenario(scenario)


def test_client_chosen_ids_duplicates_and_server_ids() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"a", watch_id=5)
            await client.create(key=b"b", watch_id=1)
            assert [(await client.receive()).watch_id for _ in range(2)] == [5, 1]
            await client.create(key=b"c", watch_id=5)
            duplicate = await client.receive()
            assert (duplicate.watch_id, duplicate.created, duplicate.canceled) == (-1, True, True)
            assert duplicate.cancel_reason == DUPLICATE_ID
            # Server-chosen ids: from 0, skipping the ids the client took.
            await client.create(key=b"d")
            await client.create(key=b"e")
            assert [(await client.receive()).watch_id for _ in range(2)] == [0, 2]
            assert watched(api, api.leader()) == 4
            await put(api, b"a", b"1")
            await put(api, b"b", b"1")
            response_a = await client.receive()
            response_b = await client.receive()
            assert (response_a.watch_id, response_a.events[0].kv.key) == (5, b"a")
            assert (response_b.watch_id, response_b.events[0].kv.key) == (1, b"b")
            client.call.cancel()

    run_scenario(scenario)


def test_cancel_answers_canceled_and_an_unknown_id_is_ignored() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            client = WatchClient(api, leader)
            await client.create(key=b"a", watch_id=3)
            await client.receive()
            assert watched(api, leader) == 1
            await client.cancel(3)
            canceled = await client.receive()
            assert (canceled.watch_id, canceled.canceled, canceled.created) == (3, True, False)
            assert canceled.header.revision == api.services[leader].current_revision()
            assert watched(api, leader) == 0
            await client.cancel(3)  # no longer exists: etcd answers nothing
            await client.cancel(12345)
            await client.request_progress()
            after = await client.receive()
            assert after.watch_id == -1 and not after.canceled  # the progress, nothing before
            # The freed id can be taken again.
            await client.create(key=b"b", watch_id=3)
            assert (await client.receive()).watch_id == 3
            client.call.cancel()

    run_scenario(scenario)


def test_progress_request_answers_the_current_revision_under_watch_id_minus_one() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            client = WatchClient(api, leader)
            await client.create(key=b"quiet")
            await client.receive()
            revision = await put(api, b"noise", b"1")
            await client.request_progress()
            progress = await client.receive()
            assert progress.watch_id == -1
            assert progress.header.revision == revision
            assert not (progress.created or progress.canceled or progress.events)
            client.call.cancel()

    run_scenario(scenario)


def test_progress_request_waits_until_the_watches_have_sent_everything_before_it() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            for index in range(20):
                await put(api, b"k%d" % index, b"v")
            client = WatchClient(api, leader)
            # Replays 20 revisions; the progress must come after all of them.
            await client.create(key=b"k", range_end=b"l", start_revision=2)
            await client.request_progress()
            assert (await client.receive()).created
            events = 0
            while True:
                response = await client.receive()
                if response.watch_id == -1:
                    break
                events += len(response.events)
            assert events == 20
            assert response.header.revision == api.services[leader].current_revision()
            client.call.cancel()

    run_scenario(scenario)


def test_progress_notify_reports_progress_of_an_idle_watch() -> None:
    async def scenario() -> None:
        settings = EtcdSettings(watch=WatchStreamSettings(progress_notify_interval_s=5.0))
        async with etcd_cluster(settings=settings) as api:
            leader = api.leader()
            client = WatchClient(api, leader)
            # The interval can only start once the create is answered, so it is timed from
            # before the create. Simulated time moves while real gRPC calls are in flight,
            # so a slow machine may see a progress fire before the put below finished: the
            # progresses are read until one reports the put's revision.
            start = api.cluster.clock.now()
            await client.create(key=b"idle", progress_notify=True, watch_id=9)
            await client.receive()
            revision = await put(api, b"elsewhere", b"1")
            progress = await client.receive()
            assert api.cluster.clock.now() - start >= 5.0
            for _ in range(10):
                assert (progress.watch_id, progress.canceled, len(progress.events)) == (9, False, 0)
                if progress.header.revision >= revision:
                    break
                progress = await client.receive()
            assert progress.header.revision == revision
            client.call.cancel()

    run_scenario(scenario)


def test_fragment_splits_a_large_txn_and_unfragmented_watches_get_it_whole() -> None:
    async def scenario() -> None:
        # Fragments at max_request_bytes plus gRPC's 512 KiB allowance, as etcd does.
        settings = EtcdSettings(max_request_bytes=16 * 1024)
        async with etcd_cluster(settings=settings) as api:
            leader = api.leader()
            client = WatchClient(api, leader)
            await client.create(key=b"big/", range_end=b"big0", fragment=True, watch_id=1)
            await client.create(key=b"big/", range_end=b"big0", watch_id=2)
            await client.receive()
            await client.receive()
            value = b"x" * (100 * 1024)
            txn = Txn(success=[Put(key=b"big/%d" % index, value=value) for index in range(8)])
            await api.cluster.complete(api.services[leader].txn(txn, timeout=10.0))
            parts: list[rpc_pb2.WatchResponse] = []
            whole: rpc_pb2.WatchResponse | None = None
            while whole is None or not parts or parts[-1].fragment:
                response = await client.receive()
                if response.watch_id == 2:
                    whole = response
                else:
                    parts.append(response)
            assert len(parts) == 2
            assert [part.fragment for part in parts] == [True, False]
            assert [len(part.events) for part in parts] == [5, 3]
            keys = [event.kv.key for part in parts for event in part.events]
            assert keys == [b"big/%d" % index for index in range(8)]
            assert len(whole.events) == 8 and not whole.fragment
            client.call.cancel()

    run_scenario(scenario)


def test_fragments_follow_etcds_rule() -> None:
    event = kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k", value=b"v" * 100))
    response = rpc_pb2.WatchResponse(watch_id=4, events=[event] * 5)
    assert fragments(response, 10_000) == [response]  # under the limit: whole
    single = rpc_pb2.WatchResponse(watch_id=4, events=[event])
    assert fragments(single, 10) == [single]  # one event is never split
    parts = fragments(response, 250)  # two events fit under 250 bytes
    assert [len(part.events) for part in parts] == [2, 2, 1]
    assert [part.fragment for part in parts] == [True, True, False]
    assert all(part.watch_id == 4 for part in parts)


def test_too_many_watches_on_a_stream_is_refused_with_a_reason() -> None:
    async def scenario() -> None:
        settings = EtcdSettings(watch=WatchStreamSettings(max_watches_per_stream=2))
        async with etcd_cluster(settings=settings) as api:
            client = WatchClient(api, api.leader())
            for key in (b"a", b"b", b"c"):
                await client.create(key=key)
            first, second, third = [await client.receive() for _ in range(3)]
            assert (first.watch_id, second.watch_id) == (0, 1)
            assert (third.watch_id, third.created, third.canceled) == (-1, True, True)
            assert "max_watches_per_stream=2" in third.cancel_reason
            assert watched(api, api.leader()) == 2
            client.call.cancel()

    run_scenario(scenario)


def test_a_watch_over_the_nodes_byte_budget_is_canceled_with_a_reason() -> None:
    async def scenario() -> None:
        budget = WatchSettings(max_buffered_bytes=4096, max_total_buffered_bytes=4096)
        async with etcd_cluster(watch_settings=budget) as api:
            leader = api.leader()
            client = WatchClient(api, leader)
            await client.create(key=b"big", watch_id=1)
            await client.create(key=b"small", watch_id=2)
            await client.receive()
            await client.receive()
            await put(api, b"big", b"x" * 10_000)
            canceled = await client.receive()
            assert (canceled.watch_id, canceled.canceled, len(canceled.events)) == (1, True, 0)
            assert canceled.cancel_reason.startswith("raftkv: too_slow: ")
            assert "watch_max_total_buffered_bytes" in canceled.cancel_reason
            # The stream and its other watch go on.
            await put(api, b"small", b"1")
            response = await client.receive()
            assert (response.watch_id, response.events[0].kv.value) == (2, b"1")
            assert watched(api, leader) == 1
            client.call.cancel()

    run_scenario(scenario)


def test_a_stream_whose_client_stops_reading_is_ended_not_grown() -> None:
    async def scenario() -> None:
        settings = EtcdSettings(watch=WatchStreamSettings(send_timeout_s=5.0))
        async with etcd_cluster(settings=settings) as api:
            leader = api.leader()
            hub = api.services[leader].watch_hub
            client = WatchClient(api, leader)
            await client.create(key=b"s", range_end=b"t")
            await client.receive()
            # The client reads nothing more; the server writes until gRPC's flow control
            # stops it, and then no longer than send_timeout_s.
            value = b"v" * (512 * 1024)
            for index in range(24):
                await put(api, b"s%d" % index, value)
            await api.cluster.run_until(lambda: hub.active == 0, max_seconds=60)
            assert hub.buffered_bytes == 0
            # What gRPC had taken before it blocked comes first, then the status.
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                for _ in range(100):
                    await client.receive()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "read nothing for 5 s" in str(ended.value.details())

    run_scenario(scenario)


def test_closing_the_stream_releases_every_watch() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            servicer = api.servicers[leader].watch
            assert servicer is not None
            client = WatchClient(api, leader)
            for key in (b"a", b"b", b"c"):
                await client.create(key=key, progress_notify=True)
            for _ in range(3):
                await client.receive()
            assert watched(api, leader) == 3 and servicer.streams == 1
            client.call.cancel()
            await api.cluster.run_until(lambda: watched(api, leader) == 0 and not servicer.streams)

    run_scenario(scenario)


def test_a_half_closed_stream_keeps_watching_as_etcds() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            client = WatchClient(api, api.leader())
            await client.create(key=b"a")
            await client.receive()
            await api.cluster.complete(client.call.done_writing())
            await put(api, b"a", b"1")
            (event,) = await client.events(1)
            assert event.kv.value == b"1"
            client.call.cancel()

    run_scenario(scenario)


def test_a_stopping_node_ends_the_stream_unavailable_so_clients_resume_elsewhere() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            client = WatchClient(api, leader)
            await client.create(key=b"a")
            await client.receive()
            api.services[leader].watch_hub.close()
            code = await api.cluster.complete(client.call.code())
            assert code == grpc.StatusCode.UNAVAILABLE
            assert await client.call.details() == "etcdserver: server stopped"
            assert watched(api, leader) == 0

    run_scenario(scenario)


def test_watch_stream_settings_are_validated() -> None:
    with pytest.raises(ConfigInvalid):
        WatchStreamSettings(max_watches_per_stream=0)
    with pytest.raises(ConfigInvalid):
        WatchStreamSettings(send_timeout_s=0)
    with pytest.raises(ConfigInvalid):
        WatchStreamSettings(no_leader_timeout_s=-1)


def test_a_stream_requiring_a_leader_ends_no_leader_on_a_cut_off_member() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            follower = api.follower()
            requiring = WatchClient(api, follower, metadata=(("hasleader", "true"),))
            plain = WatchClient(api, follower)
            for client in (requiring, plain):
                await client.create(key=b"a")
                await client.receive()
            api.cluster.network.isolate(address_of(follower))
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await requiring.receive(max_seconds=60)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert ended.value.details() == "etcdserver: no leader"
            assert watched(api, follower) == 1  # the other stream goes on, as etcd's
            assert not plain.call.done()
            plain.call.cancel()

    run_scenario(scenario)
