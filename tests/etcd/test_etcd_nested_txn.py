"""Txns nested in txns (RequestOp.request_txn) through etcd's KV service: the path etcd
takes (every compare on the state before the txn), the nested answer, etcd's checks over
the whole tree, and the retry when a compared key changes between the read and the txn."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import grpc.aio
import pytest
from etcd_helpers import EtcdApi, etcd_cluster

from raftkv.etcd import nested_txn
from raftkv.etcd.proto import rpc_pb2
from raftkv.kv import KvSettings
from raftkv.kv.commands import Txn, TxnResponse, is_read_only
from raftkv.testing.local_cluster import run_scenario

Compare = rpc_pb2.Compare


def _put(key: bytes, value: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))


def _range(key: bytes, **fields: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key, **fields))


def _delete(key: bytes, range_end: bytes = b"") -> rpc_pb2.RequestOp:
    request = rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end)
    return rpc_pb2.RequestOp(request_delete_range=request)


def _txn(
    compare: list[rpc_pb2.Compare] | None = None,
    success: list[rpc_pb2.RequestOp] | None = None,
    failure: list[rpc_pb2.RequestOp] | None = None,
) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(
        request_txn=rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)
    )


def _value_is(key: bytes, value: bytes) -> rpc_pb2.Compare:
    return Compare(key=key, target=Compare.VALUE, result=Compare.EQUAL, value=value)


async def _call(api: EtcdApi, method: str, request: Any) -> Any:
    return await api.call(api.leader(), "KV", method, request)


async def _value(api: EtcdApi, key: bytes) -> bytes | None:
    found = await _call(api, "Range", rpc_pb2.RangeRequest(key=key))
    return found.kvs[0].value if found.kvs else None


async def _refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), raised.value.details() or ""


def test_nested_txns_take_the_path_the_state_before_the_txn_picks() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"flag", value=b"on"))
            # Two levels deep. The outer compare holds; the first nested txn's fails (its
            # failure branch runs); the second nested txn compares `flag`, which the outer
            # level rewrote before it: etcd compares on the state before the txn, so it
            # still sees "on" and succeeds, then its own nested txn fails.
            request = rpc_pb2.TxnRequest(
                compare=[_value_is(b"flag", b"on")],
                success=[
                    _put(b"flag", b"off"),
                    _txn(
                        [_value_is(b"missing", b"x")], [_put(b"a", b"then")], [_put(b"a", b"else")]
                    ),
                    _txn(
                        [_value_is(b"flag", b"on")],
                        [
                            _range(b"a"),
                            _txn(
                                [_value_is(b"flag", b"off")], [_put(b"b", b"1")], [_put(b"b", b"2")]
                            ),
                        ],
                        [_put(b"c", b"never")],
                    ),
                ],
                failure=[_put(b"d", b"never")],
            )
            answer = await _call(api, "Txn", request)
            assert answer.succeeded
            assert [op.WhichOneof("response") for op in answer.responses] == [
                "response_put",
                "response_txn",
                "response_txn",
            ]
            first, second = answer.responses[1].response_txn, answer.responses[2].response_txn
            assert not first.succeeded
            assert [op.WhichOneof("response") for op in first.responses] == ["response_put"]
            assert second.succeeded
            (seen,) = second.responses[0].response_range.kvs
            assert seen.value == b"else"  # the range sees the txn's earlier write
            deepest = second.responses[1].response_txn
            assert not deepest.succeeded
            # One revision for the whole tree, in the outer header and every op's header;
            # nested txns' headers are empty, as etcd leaves them.
            revision = answer.header.revision
            assert answer.header.member_id == api.leader()
            assert answer.responses[0].response_put.header.revision == revision
            assert second.responses[0].response_range.header.revision == revision
            assert first.HasField("header") and first.header == rpc_pb2.ResponseHeader()
            assert deepest.header == rpc_pb2.ResponseHeader()
            assert seen.mod_revision == revision
            values = {key: await _value(api, key) for key in (b"flag", b"a", b"b", b"c", b"d")}
            assert values == {b"flag": b"off", b"a": b"else", b"b": b"2", b"c": None, b"d": None}

    run_scenario(scenario)


def test_a_failed_outer_compare_runs_the_failure_branchs_nested_txns() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            request = rpc_pb2.TxnRequest(
                compare=[_value_is(b"flag", b"on")],
                success=[_txn(success=[_put(b"a", b"1")])],
                failure=[
                    _txn(
                        [Compare(key=b"flag", target=Compare.VERSION, version=0)],
                        [_put(b"b", b"1"), _range(b"a", count_only=True)],
                    )
                ],
            )
            answer = await _call(api, "Txn", request)
            assert not answer.succeeded
            (nested,) = answer.responses
            assert nested.response_txn.succeeded
            assert nested.response_txn.responses[1].response_range.count == 0
            assert (await _value(api, b"a"), await _value(api, b"b")) == (None, b"1")

    run_scenario(scenario)


def test_nested_ranges_keep_their_options_and_read_only_trees_write_nothing() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            for key, value in ((b"k/b", b"2"), (b"k/a", b"3"), (b"k/c", b"1")):
                put = await _call(api, "Put", rpc_pb2.PutRequest(key=key, value=value))
            Sort = rpc_pb2.RangeRequest
            sorted_range = _range(
                b"k/", range_end=b"k0", sort_target=Sort.VALUE, sort_order=Sort.DESCEND, limit=2
            )
            request = rpc_pb2.TxnRequest(success=[_txn(success=[sorted_range])])
            answer = await _call(api, "Txn", request)
            found = answer.responses[0].response_txn.responses[0].response_range
            assert [kv.key for kv in found.kvs] == [b"k/a", b"k/b"]
            assert (found.count, found.more) == (3, True)
            assert answer.header.revision == put.header.revision  # no new revision

    run_scenario(scenario)


def test_a_nested_range_at_the_txns_own_revision_is_a_future_revision() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            put = await _call(api, "Put", rpc_pb2.PutRequest(key=b"a", value=b"1"))
            ahead = put.header.revision + 1
            request = rpc_pb2.TxnRequest(
                success=[_put(b"b", b"1"), _txn(success=[_range(b"a", revision=ahead)])]
            )
            assert await _refused(_call(api, "Txn", request)) == (
                grpc.StatusCode.OUT_OF_RANGE,
                "etcdserver: mvcc: required revision is a future revision",
            )
            assert await _value(api, b"b") is None

    run_scenario(scenario)


DUPLICATE = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")


def test_a_key_written_twice_across_levels_is_refused_as_etcd_refuses_it() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            refused = [
                # A put at the outer level and in a nested txn's branch that does not run.
                [_put(b"a", b"1"), _txn([_value_is(b"x", b"y")], [_put(b"a", b"2")])],
                # Two sibling nested txns putting one key.
                [_txn(success=[_put(b"a", b"1")]), _txn(failure=[_put(b"a", b"2")])],
                # An outer delete covering a nested put.
                [_delete(b"a", b"b"), _txn(success=[_put(b"a/1", b"2")])],
                # A nested delete covering a later outer put.
                [_txn(failure=[_delete(b"a")]), _put(b"a", b"1")],
                # Two levels deep.
                [_put(b"a", b"1"), _txn(success=[_txn(success=[_put(b"a", b"2")])])],
            ]
            for ops in refused:
                request = rpc_pb2.TxnRequest(success=ops)
                assert await _refused(_call(api, "Txn", request)) == DUPLICATE, ops
            # A nested txn's two branches may put one key: only one of them runs.
            both = rpc_pb2.TxnRequest(
                success=[_txn([_value_is(b"x", b"y")], [_put(b"a", b"1")], [_put(b"a", b"2")])]
            )
            assert (await _call(api, "Txn", both)).succeeded
            assert await _value(api, b"a") == b"2"
            # Deviation (docs/etcd.md): etcd accepts a put, then a delete of that key in a
            # later sibling nested txn; raftkv's flat txn cannot hold both.
            sibling = rpc_pb2.TxnRequest(
                success=[_txn(success=[_put(b"s", b"1")]), _txn(success=[_delete(b"s")])]
            )
            assert await _refused(_call(api, "Txn", sibling)) == DUPLICATE
            assert await _value(api, b"s") is None

    run_scenario(scenario)


def test_max_txn_ops_counts_per_level_and_empty_keys_or_ops_are_refused_anywhere() -> None:
    async def scenario() -> None:
        async with etcd_cluster(KvSettings(max_txn_ops=4)) as api:
            # Outer level: 2 ops, so a nested level may have 2 (etcd: 4 - 2).
            fits = rpc_pb2.TxnRequest(
                success=[_put(b"a", b"1"), _txn(success=[_put(b"b", b"1"), _put(b"c", b"1")])]
            )
            assert (await _call(api, "Txn", fits)).succeeded
            over = rpc_pb2.TxnRequest(
                success=[
                    _put(b"a", b"1"),
                    _txn(success=[_put(b"b", b"1"), _put(b"c", b"1"), _put(b"d", b"1")]),
                ]
            )
            assert await _refused(_call(api, "Txn", over)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: too many operations in txn request",
            )
            empty_key = rpc_pb2.TxnRequest(success=[_txn(failure=[_put(b"", b"1")])])
            assert await _refused(_call(api, "Txn", empty_key)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: key is not provided",
            )
            empty_op = rpc_pb2.TxnRequest(success=[_txn(failure=[rpc_pb2.RequestOp()])])
            code, _ = await _refused(_call(api, "Txn", empty_op))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert await _value(api, b"d") is None

    run_scenario(scenario)


def _racing(api: EtcdApi, rounds: int) -> list[Txn]:
    """Make the leader's service write `flag` (a new value each time) right after each of
    the first `rounds` reads of the compared keys: a write between the read and the txn.
    Answers the list of txns the service is asked, to count rounds."""
    service = api.services[api.leader()]
    original = service.txn
    asked: list[Txn] = []
    raced = 0

    async def txn(request: Txn, **options: Any) -> TxnResponse:
        nonlocal raced
        asked.append(request)
        response = await original(request, **options)
        if is_read_only(request) and request.compares == [] and raced < rounds:
            raced += 1
            await service.put(b"flag", b"raced-%d" % raced)
        return response

    service.txn = txn  # type: ignore[method-assign]
    return asked


def test_a_write_between_the_read_and_the_txn_makes_it_plan_again() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"flag", value=b"on"))
            asked = _racing(api, rounds=1)
            request = rpc_pb2.TxnRequest(
                success=[
                    _txn(
                        [_value_is(b"flag", b"on")],
                        [_put(b"a", b"saw on")],
                        [_put(b"a", b"saw change")],
                    )
                ]
            )
            answer = await _call(api, "Txn", request)
            # First round: read "on", then the race, the guard fails; second round: reads
            # the raced value, takes the failure branch.
            assert len(asked) == 4
            assert not answer.responses[0].response_txn.succeeded
            assert await _value(api, b"a") == b"saw change"

    run_scenario(scenario)


def test_a_compared_key_changing_every_time_ends_in_unavailable() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            asked = _racing(api, rounds=nested_txn.ATTEMPTS)
            request = rpc_pb2.TxnRequest(
                success=[_txn([_value_is(b"flag", b"on")], [_put(b"a", b"1")])]
            )
            code, message = await _refused(_call(api, "Txn", request))
            assert code == grpc.StatusCode.UNAVAILABLE and "retry" in message
            assert len(asked) == 2 * nested_txn.ATTEMPTS
            assert await _value(api, b"a") is None

    run_scenario(scenario)


def test_a_compare_over_a_key_range_in_a_nested_txn_is_refused_saying_so() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            ranged = rpc_pb2.Compare(key=b"a", range_end=b"b", target=rpc_pb2.Compare.VERSION)
            inner = rpc_pb2.TxnRequest(compare=[ranged])
            for outer in (
                rpc_pb2.TxnRequest(
                    compare=[ranged], success=[rpc_pb2.RequestOp(request_txn=inner)]
                ),
                rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_txn=inner)]),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await api.call(api.leader(), "KV", "Txn", outer)
                assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert "range_end" in (raised.value.details() or "")

    run_scenario(scenario)
