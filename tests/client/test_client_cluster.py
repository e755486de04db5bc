"""`Client` against a 3-node in-process cluster (real HTTP servers on 127.0.0.1, manual
clock): every method, binary data, leader routing, failover, exactly-once retries and the
typed refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import httpx
import pytest
from client_helpers import Intercept, answer_504, lose_answer, session_of

from raftkv.client import (
    ClientSettings,
    Compacted,
    DeleteResult,
    InvalidRequest,
    KeyValue,
    LimitExceeded,
    PutResult,
    RangeResult,
    StaleSequence,
    SyncClient,
    TxnResult,
    protocol,
    txn,
)
from raftkv.kv import KvSettings
from raftkv.testing.http_cluster import HttpCluster, closed_port_url, http_cluster
from raftkv.testing.local_cluster import run_scenario


def in_cluster(test: object, kv_settings: KvSettings | None = None) -> None:
    """Run `test(api)` against a fresh cluster."""

    async def scenario() -> None:
        async with http_cluster(kv_settings=kv_settings) as api:
            await test(api)  # type: ignore[operator]

    run_scenario(scenario)


# -- every method ----------------------------------------------------------------------------


def test_put_get_and_prev_kv_with_text_and_bytes() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            first = await api.run(client.put("greeting", "hello"))
            assert isinstance(first, PutResult) and first.prev_kv is None
            assert first.leader == api.leader_id() and first.revision == api.revision()
            second = await api.run(client.put(b"greeting", b"hi", prev_kv=True))
            assert second.revision == first.revision + 1
            assert second.prev_kv is not None and second.prev_kv.value == b"hello"
            kv = await api.run(client.get("greeting"))
            assert kv == KeyValue(
                key=b"greeting",
                value=b"hi",
                create_revision=first.revision,
                mod_revision=second.revision,
                version=2,
                lease=0,
            )
            old = await api.run(client.get("greeting", revision=first.revision))
            assert old is not None and old.value == b"hello"
            assert await api.run(client.get("missing")) is None
            local = await api.run(client.get("greeting", serializable=True))
            assert local is not None and local.value in (b"hello", b"hi")  # possibly stale

    in_cluster(test)


def test_binary_keys_and_values_round_trip_through_every_method() -> None:
    # '/', '+', '=' are base64's own characters; '?', '#', '%' and NUL would break a path.
    key, value = b"\x00\xff/+=?#%\xfe", bytes(range(256))

    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            await api.run(client.put(key, value))
            await api.run(client.put(key + b"\x01", b"\xff"))
            kv = await api.run(client.get(key))
            assert kv is not None and (kv.key, kv.value) == (key, value)
            listed = await api.run(client.range(key, prefix=True))
            assert [kv.key for kv in listed.kvs] == [key, key + b"\x01"]
            swapped = await api.run(
                client.txn([txn.value(key, "=", value)], [txn.put(key, b"\x80\x81")])
            )
            assert swapped.succeeded
            deleted = await api.run(client.delete(key, prefix=True, prev_kv=True))
            assert deleted.deleted == 2
            assert {kv.value for kv in deleted.prev_kvs} == {b"\x80\x81", b"\xff"}

    in_cluster(test)


def test_range_with_prefix_range_end_limit_keys_only_count_only_and_revision() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            for name in ("app/a", "app/b", "app/c", "other"):
                await api.run(client.put(name, name.upper()))
            everything = await api.run(client.range(prefix=True))
            assert [kv.key for kv in everything.kvs] == [b"app/a", b"app/b", b"app/c", b"other"]
            assert everything.revision == api.revision()
            page = await api.run(client.range("app/", prefix=True, limit=2, keys_only=True))
            assert (page.count, page.more) == (3, True)
            assert [(kv.key, kv.value) for kv in page.kvs] == [(b"app/a", b""), (b"app/b", b"")]
            counted = await api.run(client.range("app/b", "p", count_only=True))
            assert counted == RangeResult(counted.revision, counted.leader, (), 3, False)
            single = await api.run(client.range("other"))
            assert [kv.value for kv in single.kvs] == [b"OTHER"]
            before = await api.run(client.range("app/", prefix=True, revision=3))
            assert [kv.key for kv in before.kvs] == [b"app/a", b"app/b"]
            local = await api.run(client.range(prefix=True, serializable=True, count_only=True))
            assert local.count <= 4

    in_cluster(test)


def test_delete_one_key_a_prefix_and_a_missing_key() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            for name in ("dir/a", "dir/b", "dirt", "keep"):
                await api.run(client.put(name, "v"))
            one = await api.run(client.delete("keep", prev_kv=True))
            assert one.deleted == 1 and [kv.key for kv in one.prev_kvs] == [b"keep"]
            assert one.revision == api.revision()
            many = await api.run(client.delete("dir/", prefix=True))
            assert many == DeleteResult(many.revision, api.leader_id(), 2, ())
            none = await api.run(client.delete("nothing"))
            assert none.deleted == 0
            left = await api.run(client.range(prefix=True))
            assert [kv.key for kv in left.kvs] == [b"dirt"]

    in_cluster(test)


def test_txn_compare_and_swap_runs_one_branch_with_typed_responses() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            await api.run(client.put("lock", "free"))
            await api.run(client.put("tmp", "x"))
            take: tuple[list[txn.Compare], list[txn.Op], list[txn.Op]] = (
                [txn.value("lock", "=", "free"), txn.version("lock", "=", 1)],
                [txn.put("lock", "taken", prev_kv=True), txn.get("lock"), txn.delete("tmp")],
                [txn.range("lock")],
            )
            won = await api.run(client.txn(*take))
            assert won.succeeded and won.revision == api.revision()
            put, read, deleted = won.responses
            assert isinstance(put, PutResult) and put.prev_kv is not None
            assert put.prev_kv.value == b"free"
            assert isinstance(read, RangeResult) and read.kvs[0].value == b"taken"
            assert isinstance(deleted, DeleteResult) and deleted.deleted == 1
            lost = await api.run(client.txn(*take))
            assert not lost.succeeded
            (read,) = lost.responses
            assert isinstance(read, RangeResult) and read.kvs[0].value == b"taken"
            created = await api.run(
                client.txn([txn.create_revision("lock", ">", 0), txn.mod_revision("lock", "<", 99)])
            )
            assert created.succeeded and created.responses == ()
            absent = await api.run(client.txn([txn.lease("lock", "!=", 0)]))
            assert not absent.succeeded

    in_cluster(test)


def test_a_txn_compare_over_a_prefix_or_range_compares_every_key() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            await api.run(client.put("job/1", "done"))
            await api.run(client.put("job/2", "done"))
            all_done = txn.value("job/", "=", "done", prefix=True)
            assert (await api.run(client.txn([all_done]))).succeeded
            await api.run(client.put("job/3", "running"))
            assert not (await api.run(client.txn([all_done]))).succeeded
            first_two = txn.value("job/1", "=", "done", range_end="job/3")
            assert (await api.run(client.txn([first_two]))).succeeded
            no_jobs = txn.version("none/", "=", 0, prefix=True)
            assert (await api.run(client.txn([no_jobs]))).succeeded

    in_cluster(test)


def test_a_read_only_txn_is_a_read_without_a_session() -> None:
    """The server serves a txn of range ops as a read and records no session for it, so
    the client sends none: a sequence it spent there would make the lane's next write
    look like a session the store forgot (409 session_expired)."""
    request = protocol.txn([txn.version("k", "=", 0)], [txn.range("k")], [txn.get("j")], None)
    body = json.loads(request.body or b"{}")
    assert request.kind is protocol.Kind.READ
    assert (body["client_id"], body["sequence"]) == ("", 0)

    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            read = await api.run(client.txn([txn.version("k", "=", 0)], [txn.range("k")]))
            assert read.succeeded
            await api.run(client.put("k", "v"))
            found = await api.run(client.get("k"))
            assert found is not None and found.value == b"v"

    in_cluster(test)


def test_compact_then_the_old_revision_is_gone() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            first = await api.run(client.put("k", "1"))
            await api.run(client.put("k", "2"))
            compacted = await api.run(client.compact(first.revision + 1))
            assert compacted.revision == api.revision()
            with pytest.raises(Compacted) as raised:
                await api.run(client.get("k", revision=first.revision))
            assert raised.value.status == 410 and raised.value.code == "compacted"
            with pytest.raises(Compacted):
                await api.run(client.compact(first.revision))

    in_cluster(test)


def test_status_cluster_and_health() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            await api.run(client.put("k", "v"))
            for node, url in api.urls.items():
                status = await api.run(client.status(url))
                assert (status.endpoint, status.id, status.leader) == (url, node, api.leader_id())
                assert status.role == ("leader" if node == api.leader_id() else "follower")
                assert status.commit_index >= status.applied_index >= 1
                assert await api.run(client.health(url + "/")) is True
            assert (await api.run(client.status())).leader == api.leader_id()
            cluster = await api.run(client.cluster())
            # Asked of the leader, so every match index is known.
            assert cluster.id == cluster.leader == api.leader_id()
            assert cluster.endpoint == api.urls[api.leader_id()]
            assert [member.client_url for member in cluster.members] == api.endpoints()
            assert all(member.match_index is not None for member in cluster.members)
            assert [member.role for member in cluster.members].count("leader") == 1
            assert await api.run(client.health()) is True

    in_cluster(test)


def test_status_with_hash_has_the_state_hash_of_each_member() -> None:
    """`status(hash=True)` asks `/v1/status?hash=true`: members that applied the same
    index have the same SHA-256 of their KV state; without it the hash is left out."""

    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            await api.run(client.put("k", "v"))
            await api.cluster.settle()
            hashed = [await api.run(client.status(url, hash=True)) for url in api.endpoints()]
            assert len({status.applied_index for status in hashed}) == 1
            assert len({status.hash for status in hashed}) == 1
            assert len(hashed[0].hash) == 64
            assert (await api.run(client.status())).hash == ""
        with SyncClient(api.endpoints()) as blocking:
            status = await api.run_blocking(lambda: blocking.status(hash=True))
            assert status.hash and status.applied_index >= hashed[0].applied_index

    in_cluster(test)


# -- routing ---------------------------------------------------------------------------------


def test_the_client_learns_where_the_leader_is_and_sends_writes_there() -> None:
    async def test(api: HttpCluster) -> None:
        follower = api.follower_ids()[0]
        recorder = Intercept(lambda request: False)
        async with api.client(api.endpoints(follower), transport=recorder) as client:
            assert client.router.leader_id == 0
            await api.run(client.put("a", "1"))  # through the follower, which forwards it
            assert client.router.leader_id == api.leader_id()
            await api.run(client.put("b", "2"))
            assert client.router.leader_url == api.urls[api.leader_id()]
            paths = [
                (str(request.url.host), request.url.port, request.url.path)
                for request in recorder.requests
            ]
            leader_port = httpx.URL(api.urls[api.leader_id()]).port
            follower_port = httpx.URL(api.urls[follower]).port
            # put a at the follower, /v1/cluster there once, put b at the leader.
            assert [(port, path.split("/")[2]) for _, port, path in paths] == [
                (follower_port, "kv"),
                (follower_port, "cluster"),
                (leader_port, "kv"),
            ]
            await api.run(client.get("a", serializable=True))  # any node: the rotation's
            assert recorder.requests[-1].url.port == follower_port

    in_cluster(test)


def test_a_dead_endpoint_first_in_the_list_is_skipped_and_then_avoided() -> None:
    async def test(api: HttpCluster) -> None:
        dead = closed_port_url()
        recorder = Intercept(lambda request: False)
        endpoints = [dead, *api.endpoints()]
        async with api.client(endpoints, transport=recorder) as client:
            result = await api.run(client.put("k", "v"))
            assert result.revision == api.revision()
            assert [str(request.url).startswith(dead) for request in recorder.requests][:2] == [
                True,
                False,
            ]
            for _ in range(3):
                await api.run(client.status())
                await api.run(client.get("k", serializable=True))
            assert sum(str(request.url).startswith(dead) for request in recorder.requests) == 1

    in_cluster(test)


def test_a_client_given_only_a_removed_member_moves_on_to_the_live_ones() -> None:
    """Issue 14.1: the removed member answers 503 `removed` but still lists the members and
    their client URLs; the client learns them from it and goes on, and the member list it
    shows is the leader's (match indexes, lags), not the removed member's stale view."""

    async def test(api: HttpCluster) -> None:
        victim = api.follower_ids()[0]
        async with api.client() as admin:
            await api.run(admin.remove_member(victim))
        await api.cluster.run_until(lambda: api.services[victim].node.removed)
        recorder = Intercept(lambda request: False)
        async with api.client(api.endpoints(victim), transport=recorder) as client:
            put = await api.run(client.put("k", "v"))
            assert put.revision == api.revision()
            kv = await api.run(client.get("k"))
            assert kv is not None and kv.value == b"v"
            cluster = await api.run(client.cluster())
            assert cluster.id == cluster.leader == api.leader_id()
            assert victim not in [member.id for member in cluster.members]
            assert all(member.lag is not None for member in cluster.members)
            status = await api.run(client.status(api.urls[victim]))
            assert status.removed and status.id == victim
            # After the first 503 `removed`, the removed member is asked nothing but the
            # member list and its own status.
            victim_port = httpx.URL(api.urls[victim]).port
            asked = [
                request.url.path for request in recorder.requests if request.url.port == victim_port
            ]
            assert asked == ["/v1/kv/aw==", "/v1/cluster", "/v1/status"]
            await api.run(client.get("k", serializable=True))
            assert recorder.requests[-1].url.port != victim_port

    in_cluster(test)


def test_writes_fail_over_when_the_leader_stops() -> None:
    async def test(api: HttpCluster) -> None:
        async with api.client() as client:
            await api.run(client.put("k", "1"))
            await api.run(client.put("k", "2"))  # now sent to the leader's URL
            old_leader = api.leader_id()
            assert client.router.leader_url == api.urls[old_leader]
            # The node stops; its HTTP server still answers, with 503 `stopped`.
            await api.run(api.cluster.nodes[old_leader].stop(transfer_leadership=False))  # type: ignore[index]
            result = await api.run(client.put("k", "3"))
            assert result.leader not in (0, old_leader)
            kv = await api.run(client.get("k"))
            assert kv is not None and (kv.value, kv.version) == (b"3", 3)
            await api.run(client.put("k", "4"))
            assert client.router.leader_url == api.urls[result.leader]

    in_cluster(test)


# -- exactly-once ----------------------------------------------------------------------------


def is_put(request: httpx.Request) -> bool:
    return request.method == "PUT"


def is_txn(request: httpx.Request) -> bool:
    return request.url.path == "/v1/txn"


def test_a_put_retried_after_a_504_returns_the_original_revision_and_applies_once() -> None:
    async def test(api: HttpCluster) -> None:
        faults = Intercept(is_put, answer_504, lose_answer)
        async with api.client(transport=faults) as client:
            result = await api.run(client.put("k", "v"))
            # Applied by the first attempt; the second and third repeated the session.
            puts = [request for request in faults.requests if is_put(request)]
            assert len(puts) == 3 and len({session_of(put) for put in puts}) == 1
            kv = await api.run(client.get("k"))
            assert kv is not None and kv.version == 1
            assert result.revision == kv.mod_revision == api.revision()

    in_cluster(test)


def test_a_delete_retried_after_a_lost_answer_reports_the_original_deletion() -> None:
    async def test(api: HttpCluster) -> None:
        faults = Intercept(is_txn, lose_answer)
        async with api.client(transport=faults) as client:
            await api.run(client.put("k", "v"))
            revision = api.revision()
            deleted = await api.run(client.delete("k"))
            # Applied again, it would have deleted nothing (and made no revision).
            assert deleted.deleted == 1 and deleted.revision == revision + 1
            assert len([request for request in faults.requests if is_txn(request)]) == 2

    in_cluster(test)


def test_a_txn_retried_after_a_504_applies_once() -> None:
    async def test(api: HttpCluster) -> None:
        faults = Intercept(is_txn, answer_504)
        async with api.client(transport=faults) as client:
            await api.run(client.put("n", "0"))
            bump = await api.run(
                client.txn([txn.value("n", "=", "0")], [txn.put("n", "1")], [txn.put("n", "x")])
            )
            assert bump.succeeded  # the stored result of the first attempt
            kv = await api.run(client.get("n"))
            assert kv is not None and (kv.value, kv.version) == (b"1", 2)

    in_cluster(test)


@pytest.mark.parametrize("lanes", [64, 4])
def test_fifty_concurrent_writes_from_one_client_all_apply_once(lanes: int) -> None:
    async def test(api: HttpCluster) -> None:
        settings = ClientSettings(max_concurrent_writes=lanes)
        async with api.client(settings=settings) as client:
            start = api.revision()
            writes: list[Awaitable[PutResult | TxnResult]] = [
                client.put(f"key-{number % 10}", str(number)) for number in range(40)
            ]
            writes += [client.txn([], [txn.put(f"txn-{number}", "v")]) for number in range(10)]
            results = await api.run(asyncio.gather(*writes))
            revisions = sorted(result.revision for result in results)
            assert revisions == list(range(start + 1, start + 51))
            counted = await api.run(client.range(prefix=True, count_only=True))
            assert counted.count == 20
            versions = await api.run(client.range("key-", prefix=True))
            assert sum(kv.version for kv in versions.kvs) == 40

    in_cluster(test)


# -- refusals --------------------------------------------------------------------------------


def test_refusals_are_typed_and_name_the_endpoint() -> None:
    limits = KvSettings(max_value_bytes=64, max_txn_ops=4)

    async def test(api: HttpCluster) -> None:
        async with api.client(api.endpoints(1)) as client:
            cases = [
                (client.put("", "v"), InvalidRequest, "empty_key", 400),
                (client.delete(""), InvalidRequest, "empty_key", 400),
                (client.get("k", revision=999), InvalidRequest, "future_revision", 400),
                (
                    client.txn([], [txn.put("k", "1"), txn.put("k", "2")]),
                    InvalidRequest,
                    "duplicate_key",
                    400,
                ),
                (client.put("k", "v" * 65), LimitExceeded, "limit_exceeded", 413),
                (client.txn([], [txn.get("k")] * 5), LimitExceeded, "limit_exceeded", 413),
            ]
            for call, kind, code, status in cases:
                with pytest.raises(kind) as raised:
                    await api.run(call)
                assert (raised.value.code, raised.value.status) == (code, status)
                assert f"HTTP {status} from http://127.0.0.1:" in str(raised.value)
            assert api.revision() == 1  # nothing written

    in_cluster(test, limits)


def test_two_clients_sharing_a_client_id_get_stale_sequence() -> None:
    async def test(api: HttpCluster) -> None:
        shared = ClientSettings(client_id="shared")
        async with api.client(settings=shared) as first, api.client(settings=shared) as second:
            for value in ("1", "2"):
                await api.run(first.put("k", value))
            # Lane "shared-0" is at sequence 2 on the server; the second client sends 1.
            with pytest.raises(StaleSequence) as raised:
                await api.run(second.put("k", "3"))
            assert raised.value.status == 409 and "shared-0" in str(raised.value)
            kv = await api.run(first.get("k"))
            assert kv is not None and kv.value == b"2"

    in_cluster(test)
