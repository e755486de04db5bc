"""etcd's KV service against a real 3-node cluster (manual clock) through real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import grpc
import grpc.aio
import pytest
from etcd_helpers import CLUSTER_ID, EtcdApi, etcd_cluster

from raftkv.etcd.proto import rpc_pb2
from raftkv.etcd.settings import EtcdSettings
from raftkv.kv import KvSettings
from raftkv.testing.local_cluster import run_scenario


def test_put_then_range_answers_etcds_fields_and_header() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            put = await api.call(leader, "KV", "Put", rpc_pb2.PutRequest(key=b"a", value=b"1"))
            assert put.header.cluster_id == CLUSTER_ID
            assert put.header.member_id == leader
            assert put.header.raft_term >= 1
            found = await api.call(api.follower(), "KV", "Range", rpc_pb2.RangeRequest(key=b"a"))
            assert found.header.revision == put.header.revision
            assert found.count == 1
            (kv,) = found.kvs
            assert (kv.key, kv.value, kv.version) == (b"a", b"1", 1)
            assert kv.create_revision == kv.mod_revision == put.header.revision

    run_scenario(scenario)


async def _put(api: EtcdApi, key: bytes, value: bytes, **fields: Any) -> Any:
    request = rpc_pb2.PutRequest(key=key, value=value, **fields)
    return await api.call(api.leader(), "KV", "Put", request)


async def _range(api: EtcdApi, key: bytes, **fields: Any) -> Any:
    return await api.call(api.leader(), "KV", "Range", rpc_pb2.RangeRequest(key=key, **fields))


async def _refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), raised.value.details() or ""


def test_range_sorts_filters_and_limits_as_etcd() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            # Keys b, a, c written in that order: mod revisions b < a < c.
            for key, value in ((b"k/b", b"2"), (b"k/a", b"3"), (b"k/c", b"1")):
                await _put(api, key, value)
            Sort = rpc_pb2.RangeRequest
            every = {"range_end": b"k0"}

            def keys(response: Any) -> list[bytes]:
                return [kv.key for kv in response.kvs]

            by_key = await _range(api, b"k/", **every)
            assert keys(by_key) == [b"k/a", b"k/b", b"k/c"]
            descending = await _range(api, b"k/", sort_order=Sort.DESCEND, **every)
            assert keys(descending) == [b"k/c", b"k/b", b"k/a"]
            by_value = await _range(api, b"k/", sort_target=Sort.VALUE, **every)
            assert keys(by_value) == [b"k/c", b"k/b", b"k/a"]  # ascending by default
            by_mod = await _range(
                api, b"k/", sort_order=Sort.DESCEND, sort_target=Sort.MOD, limit=2, **every
            )
            assert keys(by_mod) == [b"k/c", b"k/a"]
            assert (by_mod.more, by_mod.count) == (True, 3)
            first_mod = by_key.kvs[1].mod_revision  # k/b, the first written
            newer = await _range(api, b"k/", min_mod_revision=first_mod + 1, **every)
            assert keys(newer) == [b"k/a", b"k/c"]
            assert newer.count == 3  # count ignores the filters, as in etcd
            older = await _range(api, b"k/", max_create_revision=first_mod, **every)
            assert keys(older) == [b"k/b"]
            limited = await _range(api, b"k/", limit=1, **every)
            assert (keys(limited), limited.more, limited.count) == ([b"k/a"], True, 3)
            counted = await _range(api, b"k/", count_only=True, **every)
            assert (list(counted.kvs), counted.count) == ([], 3)
            bare = await _range(api, b"k/", keys_only=True, **every)
            assert [kv.value for kv in bare.kvs] == [b"", b"", b""]
            everything = await _range(api, b"\0", range_end=b"\0")
            assert everything.count == 3
            past = await _range(api, b"k/a", revision=first_mod)
            assert past.count == 0 and past.header.revision == by_key.header.revision

    run_scenario(scenario)


def test_keys_only_sorted_by_value_is_sorted_by_the_values_it_leaves_out() -> None:
    # Found by the etcd differential (seed 20): raftkv dropped the values before sorting,
    # so every value compared equal and the keys came in key order.
    async def scenario() -> None:
        async with etcd_cluster() as api:
            for key, value in ((b"v/a", b"3"), (b"v/b", b"1"), (b"v/c", b"2")):
                await _put(api, key, value)
            Sort = rpc_pb2.RangeRequest
            for order, expected in (
                (Sort.NONE, [b"v/b", b"v/c", b"v/a"]),
                (Sort.ASCEND, [b"v/b", b"v/c", b"v/a"]),
                (Sort.DESCEND, [b"v/a", b"v/c", b"v/b"]),
            ):
                found = await _range(
                    api,
                    b"v/",
                    range_end=b"v0",
                    sort_target=Sort.VALUE,
                    sort_order=order,
                    keys_only=True,
                )
                assert [kv.key for kv in found.kvs] == expected
                assert [kv.value for kv in found.kvs] == [b"", b"", b""]
            # In a txn too.
            request = rpc_pb2.TxnRequest(
                success=[
                    rpc_pb2.RequestOp(
                        request_range=rpc_pb2.RangeRequest(
                            key=b"v/", range_end=b"v0", sort_target=Sort.VALUE, keys_only=True
                        )
                    )
                ]
            )
            answer = await api.call(api.leader(), "KV", "Txn", request)
            (op,) = answer.responses
            assert [kv.key for kv in op.response_range.kvs] == [b"v/b", b"v/c", b"v/a"]
            assert {kv.value for kv in op.response_range.kvs} == {b""}

    run_scenario(scenario)


def test_a_limit_with_a_sort_target_but_no_order_sorts_one_key_more_than_the_limit() -> None:
    # etcd reads limit + 1 keys (in key order), sorts them ascending by the target, then
    # cuts to limit: the key after the limit can come first. raftkv read only `limit`.
    async def scenario() -> None:
        async with etcd_cluster() as api:
            for key, value in ((b"l/a", b"3"), (b"l/b", b"2"), (b"l/c", b"1"), (b"l/d", b"0")):
                await _put(api, key, value)
            found = await _range(
                api, b"l/", range_end=b"l0", limit=2, sort_target=rpc_pb2.RangeRequest.VALUE
            )
            # l/a, l/b, l/c read; by value: l/c, l/b, l/a; cut to 2.
            assert [kv.key for kv in found.kvs] == [b"l/c", b"l/b"]
            assert (found.more, found.count) == (True, 4)
            exact = await _range(api, b"l/", range_end=b"l0", limit=4)
            assert (len(exact.kvs), exact.more) == (4, False)
            short = await _range(api, b"l/", range_end=b"l0", limit=3)
            assert ([kv.key for kv in short.kvs], short.more) == ([b"l/a", b"l/b", b"l/c"], True)

    run_scenario(scenario)


def test_a_txn_that_writes_refuses_a_range_at_its_own_revision_as_etcd() -> None:
    # Found by the etcd differential (seed 6): etcd checks a txn's ranges against the
    # revision before the txn, so a range at the txn's own revision is a future revision
    # and nothing is written; raftkv read it from the txn's own view.
    async def scenario() -> None:
        async with etcd_cluster() as api:
            before = (await _put(api, b"f/a", b"1")).header.revision
            own = before + 1

            def txn(success: list[Any], failure: list[Any], *compares: Any) -> Any:
                return rpc_pb2.TxnRequest(compare=compares, success=success, failure=failure)

            put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"f/b", value=b"2"))
            ahead = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"f/a", revision=own))
            leader = api.leader()
            for request in (
                txn([put, ahead], []),  # the branch taken
                txn([put, ahead], [put, ahead]),  # both branches
            ):
                code, message = await _refused(api.call(leader, "KV", "Txn", request))
                assert code == grpc.StatusCode.OUT_OF_RANGE
                assert message == "etcdserver: mvcc: required revision is a future revision"
            missing = await _range(api, b"f/b")
            assert (missing.count, missing.header.revision) == (0, before)
            # Only in the branch not taken: the txn runs, as in etcd.
            holds = rpc_pb2.Compare(key=b"f/a", target=rpc_pb2.Compare.VALUE, value=b"1")
            done = await api.call(leader, "KV", "Txn", txn([put], [ahead], holds))
            assert (done.succeeded, done.header.revision) == (True, own)
            # A range at a revision that exists before the txn is answered.
            back = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"f/b", revision=own))
            again = await api.call(leader, "KV", "Txn", txn([put, back], []))
            assert again.responses[1].response_range.count == 1
            # The failure branch taken with a range ahead: refused, nothing written.
            differs = rpc_pb2.Compare(key=b"f/a", target=rpc_pb2.Compare.VALUE, value=b"x")
            now = again.header.revision
            next_one = rpc_pb2.RangeRequest(key=b"f/a", revision=now + 1)
            request = txn([], [put, rpc_pb2.RequestOp(request_range=next_one)], differs)
            code, _ = await _refused(api.call(leader, "KV", "Txn", request))
            assert code == grpc.StatusCode.OUT_OF_RANGE
            assert (await _range(api, b"f/b")).header.revision == now

    run_scenario(scenario)


def test_put_prev_kv_lease_and_delete_range() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _put(api, b"x", b"1")
            second = await _put(api, b"x", b"2", prev_kv=True)
            assert (second.prev_kv.key, second.prev_kv.value) == (b"x", b"1")
            unknown_lease = await _refused(_put(api, b"y", b"1", lease=12345))
            assert unknown_lease == (
                grpc.StatusCode.NOT_FOUND,
                "etcdserver: requested lease not found",
            )
            await _put(api, b"x2", b"3")
            deleted = await api.call(
                api.leader(),
                "KV",
                "DeleteRange",
                rpc_pb2.DeleteRangeRequest(key=b"x", range_end=b"y", prev_kv=True),
            )
            assert deleted.deleted == 2
            assert sorted(kv.key for kv in deleted.prev_kvs) == [b"x", b"x2"]
            assert (await _range(api, b"x")).count == 0

    run_scenario(scenario)


def test_put_keeping_the_value_or_the_lease() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            assert await _refused(_put(api, b"absent", b"", ignore_value=True)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: key not found",
            )
            await _put(api, b"k", b"kept")
            assert await _refused(_put(api, b"k", b"new", ignore_value=True)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: value is provided",
            )
            assert await _refused(_put(api, b"k", b"new", lease=5, ignore_lease=True)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: lease is provided",
            )
            touched = await _put(api, b"k", b"", ignore_value=True, prev_kv=True)
            assert touched.prev_kv.value == b"kept"
            (kv,) = (await _range(api, b"k")).kvs
            assert (kv.value, kv.version) == (b"kept", 2)
            await _put(api, b"k", b"changed", ignore_lease=True)
            (kv,) = (await _range(api, b"k")).kvs
            assert (kv.value, kv.lease, kv.version) == (b"changed", 0, 3)

    run_scenario(scenario)


def test_txn_compares_every_target_and_answers_each_op() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            created = await _put(api, b"t", b"v1")
            revision = created.header.revision
            Compare = rpc_pb2.Compare
            holds = [
                Compare(key=b"t", target=Compare.VALUE, result=Compare.EQUAL, value=b"v1"),
                Compare(key=b"t", target=Compare.VERSION, result=Compare.EQUAL, version=1),
                Compare(
                    key=b"t", target=Compare.CREATE, result=Compare.EQUAL, create_revision=revision
                ),
                Compare(
                    key=b"t", target=Compare.MOD, result=Compare.LESS, mod_revision=revision + 1
                ),
                Compare(key=b"t", target=Compare.LEASE, result=Compare.EQUAL, lease=0),
                Compare(key=b"t", target=Compare.VALUE, result=Compare.NOT_EQUAL, value=b"x"),
                Compare(key=b"t", target=Compare.VERSION, result=Compare.GREATER, version=0),
            ]
            ops = [
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"t", value=b"v2")),
                rpc_pb2.RequestOp(
                    request_range=rpc_pb2.RangeRequest(
                        key=b"t",
                        range_end=b"u",
                        sort_order=rpc_pb2.RangeRequest.DESCEND,
                    )
                ),
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"gone")),
            ]
            answer = await api.call(
                api.follower(), "KV", "Txn", rpc_pb2.TxnRequest(compare=holds, success=ops)
            )
            assert answer.succeeded
            put, found, deleted = answer.responses
            assert put.WhichOneof("response") == "response_put"
            assert found.response_range.kvs[0].value == b"v2"  # the txn's own write
            assert deleted.response_delete_range.deleted == 0
            assert answer.header.revision == revision + 1
            assert answer.header.member_id == api.follower()
            fails = rpc_pb2.TxnRequest(
                compare=[Compare(key=b"t", target=Compare.VALUE, value=b"v1")],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"t"))],
            )
            failed = await api.call(api.leader(), "KV", "Txn", fails)
            assert not failed.succeeded
            assert failed.responses[0].response_range.kvs[0].value == b"v2"

    run_scenario(scenario)


def test_a_compare_over_a_key_range_holds_when_every_key_in_it_does() -> None:
    """etcd's Compare.range_end: every live key in [key, range_end) must satisfy the
    compare; a range with no live key compares as a missing key (VALUE fails, the other
    targets compare 0)."""

    async def scenario() -> None:
        async with etcd_cluster() as api:
            Compare = rpc_pb2.Compare
            await _put(api, b"p/a", b"1")
            await _put(api, b"p/b", b"2")
            await _put(api, b"p/c", b"3")
            await api.call(
                api.leader(), "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"p/c")
            )
            mark = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"mark", value=b"x"))

            async def succeeded(*compares: Any) -> bool:
                request = rpc_pb2.TxnRequest(compare=compares, success=[mark])
                answer = await api.call(api.follower(), "KV", "Txn", request)
                return bool(answer.succeeded)

            def over(target: Any, key: bytes = b"p/", end: bytes = b"p0", **value: Any) -> Any:
                return Compare(key=key, range_end=end, target=target, **value)

            version_1 = over(Compare.VERSION, result=Compare.EQUAL, version=1)
            assert await succeeded(version_1)  # p/c is deleted: not compared
            assert await succeeded(over(Compare.VALUE, result=Compare.LESS, value=b"3"))
            assert not await succeeded(over(Compare.VALUE, result=Compare.LESS, value=b"2"))
            assert await succeeded(over(Compare.LEASE, result=Compare.EQUAL, lease=0))
            assert await succeeded(over(Compare.CREATE, result=Compare.GREATER))
            assert await succeeded(over(Compare.MOD, result=Compare.NOT_EQUAL))
            # Every key (key and range_end "\0") includes "mark", a key outside p/.
            everything = over(Compare.VALUE, b"\0", b"\0", result=Compare.LESS, value=b"3")
            assert not await succeeded(everything)
            # No live key in the range: VALUE fails whatever it compares; the others
            # compare with 0.
            empty = {"key": b"p/c", "end": b"p/d"}
            assert not await succeeded(over(Compare.VALUE, **empty, result=Compare.NOT_EQUAL))
            assert await succeeded(over(Compare.VERSION, **empty, result=Compare.EQUAL))
            assert not await succeeded(over(Compare.MOD, **empty, result=Compare.GREATER))
            await _put(api, b"p/b", b"again")
            assert not await succeeded(version_1)

    run_scenario(scenario)


def test_what_raftkv_refuses_says_so_with_etcds_codes() -> None:
    async def scenario() -> None:
        async with etcd_cluster(kv_settings=KvSettings(max_txn_ops=2)) as api:
            leader = api.leader()
            assert await _refused(_put(api, b"", b"v")) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: key is not provided",
            )
            await _put(api, b"a", b"1")
            await _put(api, b"a", b"2")
            compact = rpc_pb2.CompactionRequest(revision=3)
            await api.call(leader, "KV", "Compact", compact)
            assert await _refused(_range(api, b"a", revision=2)) == (
                grpc.StatusCode.OUT_OF_RANGE,
                "etcdserver: mvcc: required revision has been compacted",
            )
            assert await _refused(_range(api, b"a", revision=99)) == (
                grpc.StatusCode.OUT_OF_RANGE,
                "etcdserver: mvcc: required revision is a future revision",
            )
            # A negative compaction revision is below etcd's compaction revision (found by
            # the etcd differential, seed 7: raftkv answered InvalidArgument).
            below = rpc_pb2.CompactionRequest(revision=-1)
            assert await _refused(api.call(leader, "KV", "Compact", below)) == (
                grpc.StatusCode.OUT_OF_RANGE,
                "etcdserver: mvcc: required revision has been compacted",
            )
            put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b"v"))
            too_many = rpc_pb2.TxnRequest(success=[put, put, put])
            code, message = await _refused(api.call(leader, "KV", "Txn", too_many))
            assert (code, message) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: too many operations in txn request",
            )
            duplicate = rpc_pb2.TxnRequest(success=[put, put])
            assert await _refused(api.call(leader, "KV", "Txn", duplicate)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: duplicate key given in txn request",
            )
            empty_op = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()])
            code, _ = await _refused(api.call(leader, "KV", "Txn", empty_op))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            unknown_enum = rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(key=b"a", result=17, value=b"2")]  # type: ignore[arg-type]
            )
            code, _ = await _refused(api.call(leader, "KV", "Txn", unknown_enum))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            # Nothing of the refused txns was written.
            assert (await _range(api, b"k")).count == 0

    run_scenario(scenario)


def test_a_request_over_the_size_limit_is_refused_before_it_is_decoded() -> None:
    async def scenario() -> None:
        settings = EtcdSettings(max_request_bytes=1024)
        async with etcd_cluster(settings=settings) as api:
            # The limit plus gRPC's framing allowance (512 KiB), as etcd's server sets it.
            # gRPC refuses it on its own (no simulated time needed): a wall-clock bound.
            request = rpc_pb2.PutRequest(key=b"big", value=b"x" * (600 * 1024))
            put = api.stubs(api.leader()).KV.Put(request, timeout=30)
            code, _ = await _refused(put)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await _range(api, b"big")).count == 0

    run_scenario(scenario)


def test_an_unexpected_error_answers_internal_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:

            async def broken(*_: Any, **__: Any) -> Any:
                raise ZeroDivisionError("a bug")

            api.services[api.leader()].range = broken  # type: ignore[method-assign]
            code, message = await _refused(_range(api, b"a"))
            assert code == grpc.StatusCode.INTERNAL
            assert message == "raftkv: internal error: ZeroDivisionError: a bug"

    run_scenario(scenario)
    assert "etcd API: unexpected error" in caplog.text


def test_garbage_on_the_port_closes_that_connection_and_nothing_else() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            port = api.ports[leader].port
            for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 64):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(garbage)
                await writer.drain()
                # gRPC answers with a GOAWAY (or nothing) and closes: read until it does.
                async with asyncio.timeout(10):
                    while await reader.read(65536):
                        pass
                writer.close()
            await _put(api, b"still", b"served")
            assert (await _range(api, b"still")).count == 1

    run_scenario(scenario)


async def _hold_watch_streams(api: EtcdApi, node: int, count: int) -> list[Any]:
    """`count` watch streams open on `node`'s connection, each holding a call."""
    streams = [api.stubs(node).Watch.Watch() for _ in range(count)]
    for stream in streams:
        create = rpc_pb2.WatchCreateRequest(key=b"w")
        await api.cluster.complete(stream.write(rpc_pb2.WatchRequest(create_request=create)))
        assert (await api.cluster.complete(stream.read())).created
    return streams


def test_calls_beyond_the_ports_limit_are_refused_at_once() -> None:
    async def scenario() -> None:
        # One accept pipeline: the port's whole limit is its own.
        settings = EtcdSettings(max_concurrent_calls=2, accept_pipelines=1)
        async with etcd_cluster(settings=settings) as api:
            leader = api.leader()
            # Two watch streams hold both slots (each opened by its first message).
            streams = await _hold_watch_streams(api, leader, 2)
            code, message = await _refused(_range(api, b"w"))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, message
            streams[0].cancel()
            await api.cluster.run_until(lambda: api.servicers[leader].watch.streams == 1)
            assert (await _range(api, b"w")).count == 0
            streams[1].cancel()

    run_scenario(scenario)


def test_each_accept_pipeline_holds_its_share_of_the_ports_call_limit() -> None:
    async def scenario() -> None:
        # 4 calls on the port, 2 pipelines: one connection (one pipeline) may open 2.
        settings = EtcdSettings(max_concurrent_calls=4, accept_pipelines=2)
        async with etcd_cluster(settings=settings) as api:
            streams = await _hold_watch_streams(api, api.leader(), 2)
            code, message = await _refused(_range(api, b"w"))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, message
            for stream in streams:
                stream.cancel()

    run_scenario(scenario)


def test_a_compaction_waits_as_long_as_the_clients_deadline_each_step_its_own_timeout() -> None:
    """etcdctl check perf compacts every key it wrote with a 30 s deadline: raftkv must not
    cut that at one request's timeout (it answered "request timed out" once), only each
    step of it."""

    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            await _put(api, b"a", b"1")
            await _put(api, b"a", b"2")
            service = api.services[leader]
            compact = service.compact
            seen: list[dict[str, Any]] = []

            async def recording(revision: int, **bounds: Any) -> Any:
                seen.append(bounds)
                return await compact(revision, **bounds)

            service.compact = recording  # type: ignore[method-assign]
            request = rpc_pb2.CompactionRequest(revision=2)
            stub = api.stubs(leader).KV
            await api.cluster.complete(stub.Compact(request, timeout=30.0))
            step = api.servicers[leader].context.request_timeout_s
            assert seen[0]["step_timeout"] == step
            assert step < seen[0]["timeout"] <= 31.0  # the client's, as gRPC carries it
            # Without a deadline only the steps are bounded, as etcd bounds none.
            await _put(api, b"a", b"3")
            await api.cluster.complete(stub.Compact(rpc_pb2.CompactionRequest(revision=3)))
            assert seen[1] == {"timeout": None, "step_timeout": step}

    run_scenario(scenario)
