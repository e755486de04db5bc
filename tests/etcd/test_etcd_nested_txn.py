"""Txns nested in txns (RequestOp.request_txn) through etcd's KV service: the path etcd
takes (every compare on the state before the txn), the nested answer, etcd's checks over
the whole tree, and the retry when a compared key changes between the read and the txn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from etcd_helpers import EtcdApi, etcd_cluster

from raftkv.etcd import nested_txn
from raftkv.etcd.proto import rpc_pb2
from raftkv.kv import KvService, KvSettings
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


Race = Callable[[KvService, int], Awaitable[Any]]


async def _write_flag(service: KvService, round_: int) -> None:
    await service.put(b"flag", b"raced-%d" % round_)


def _racing(api: EtcdApi, rounds: int, race: Race = _write_flag) -> list[Txn]:
    """Make the leader's service run `race` (by default: write `flag`, a new value each
    time) right after each of the first `rounds` reads of the compared keys: a write
    between the read and the txn. Answers the list of txns the service is asked, to
    count rounds."""
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
            await race(service, raced)
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


# -- compares over a key range ---------------------------------------------------------------


def _compare(key: bytes, range_end: bytes, target: int, result: int, value: Any) -> Compare:
    field = {
        Compare.VERSION: "version",
        Compare.CREATE: "create_revision",
        Compare.MOD: "mod_revision",
        Compare.VALUE: "value",
        Compare.LEASE: "lease",
    }[target]
    return Compare(key=key, range_end=range_end, target=target, result=result, **{field: value})


RESULTS = (Compare.EQUAL, Compare.NOT_EQUAL, Compare.LESS, Compare.GREATER)


def test_range_compares_at_any_level_evaluate_as_the_flat_txn_does_for_every_target() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            granted = await api.call(
                api.leader(), "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=600)
            )
            first = await _call(api, "Put", rpc_pb2.PutRequest(key=b"k/a", value=b"1"))
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"k/b", value=b"0"))
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"k/b", value=b"2"))
            put = rpc_pb2.PutRequest(key=b"k/c", value=b"3", lease=granted.ID)
            last = (await _call(api, "Put", put)).header.revision
            low, high = first.header.revision, last
            values: dict[int, list[Any]] = {
                Compare.VERSION: [0, 1, 2, 3],
                Compare.CREATE: [low, high, high + 1],
                Compare.MOD: [low, high, high + 1],
                Compare.VALUE: [b"0", b"1", b"3", b"4"],
                Compare.LEASE: [0, granted.ID, granted.ID + 1],
            }
            for range_end in (b"k0", b"\0"):
                for target, candidates in values.items():
                    outcomes = set()
                    for result in RESULTS:
                        for value in candidates:
                            compare = _compare(b"k/", range_end, target, result, value)
                            # raftkv's apply evaluates a flat txn's range compare (the
                            # differential test checks it against etcd).
                            flat = await _call(api, "Txn", rpc_pb2.TxnRequest(compare=[compare]))
                            outer = rpc_pb2.TxnRequest(compare=[compare], success=[_txn()])
                            inner = rpc_pb2.TxnRequest(success=[_txn([compare])])
                            at_outer = (await _call(api, "Txn", outer)).succeeded
                            nested = (await _call(api, "Txn", inner)).responses[0]
                            assert (at_outer, nested.response_txn.succeeded) == (
                                flat.succeeded,
                                flat.succeeded,
                            ), compare
                            outcomes.add(flat.succeeded)
                    assert outcomes == {True, False}, target
            # Spot checks of the rule: every live key must satisfy it.
            every_version = _compare(b"k/", b"k0", Compare.VERSION, Compare.GREATER, 0)
            one_value = _compare(b"k/", b"k0", Compare.VALUE, Compare.EQUAL, b"1")
            request = rpc_pb2.TxnRequest(
                compare=[every_version],
                success=[_txn([one_value], [_put(b"out", b"all 1")], [_put(b"out", b"not")])],
            )
            answer = await _call(api, "Txn", request)
            assert answer.succeeded and not answer.responses[0].response_txn.succeeded
            assert await _value(api, b"out") == b"not"

    run_scenario(scenario)


def test_a_range_with_no_live_key_compares_as_one_missing_key() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"e/gone", value=b"1"))
            await _call(api, "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"e/gone"))
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"f", value=b"1"))
            expected = [
                (Compare.VALUE, Compare.EQUAL, b"", False),
                (Compare.VALUE, Compare.NOT_EQUAL, b"x", False),
                (Compare.VERSION, Compare.EQUAL, 0, True),
                (Compare.CREATE, Compare.LESS, 1, True),
                (Compare.MOD, Compare.GREATER, 0, False),
                (Compare.LEASE, Compare.EQUAL, 0, True),
            ]
            for key, range_end in ((b"e/", b"e0"), (b"zz", b"\0"), (b"e/", b"e/")):
                for target, result, value, holds in expected:
                    compare = _compare(key, range_end, target, result, value)
                    request = rpc_pb2.TxnRequest(
                        success=[_txn(success=[_txn([compare], [_range(b"f")])])]
                    )
                    answer = await _call(api, "Txn", request)
                    deepest = answer.responses[0].response_txn.responses[0].response_txn
                    assert deepest.succeeded == holds, compare
                    assert len(deepest.responses) == holds

    run_scenario(scenario)


def _range_tree(compare: Compare) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        success=[_txn([compare], [_put(b"out", b"held")], [_put(b"out", b"failed")])]
    )


def test_a_key_created_in_a_compared_range_after_the_read_makes_it_plan_again() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"r/a", value=b"1"))

            async def create(service: KvService, _: int) -> None:
                await service.put(b"r/b", b"2")

            asked = _racing(api, rounds=1, race=create)
            all_one = _compare(b"r/", b"r0", Compare.VALUE, Compare.EQUAL, b"1")
            answer = await _call(api, "Txn", _range_tree(all_one))
            # First round: read r/a only, the compare holds; r/b is created; the guard's
            # range compare fails. Second round: reads both, the compare fails.
            assert len(asked) == 4
            assert asked[1].compares[-1].range_end == b"r0"
            assert not answer.responses[0].response_txn.succeeded
            assert await _value(api, b"out") == b"failed"

    run_scenario(scenario)


def test_a_key_deleted_from_a_compared_range_after_the_read_makes_it_plan_again() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"r/a", value=b"1"))
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"r/b", value=b"2"))

            async def delete(service: KvService, _: int) -> None:
                await service.delete_range(b"r/b")

            asked = _racing(api, rounds=1, race=delete)
            all_one = _compare(b"r/", b"r0", Compare.VALUE, Compare.EQUAL, b"1")
            answer = await _call(api, "Txn", _range_tree(all_one))
            # First round: r/b = 2 fails the compare; r/b is deleted; the guard's compare
            # of r/b's mod_revision fails. Second round: only r/a, the compare holds.
            assert len(asked) == 4
            assert answer.responses[0].response_txn.succeeded
            assert await _value(api, b"out") == b"held"

    run_scenario(scenario)


def test_a_guard_over_max_txn_ops_is_too_many_ops() -> None:
    async def scenario() -> None:
        async with etcd_cluster(KvSettings(max_txn_ops=4)) as api:
            for key in (b"g/a", b"g/b", b"g/c"):
                await _call(api, "Put", rpc_pb2.PutRequest(key=key, value=b"1"))
            every = _compare(b"g/", b"g0", Compare.VERSION, Compare.EQUAL, 1)
            # The guard: one compare per key read (3) and one for the range: 4 fit.
            assert (await _call(api, "Txn", _range_tree(every))).succeeded
            await _call(api, "Put", rpc_pb2.PutRequest(key=b"g/d", value=b"1"))
            assert await _refused(_call(api, "Txn", _range_tree(every))) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: too many operations in txn request",
            )
            assert await _value(api, b"out") == b"held"

    run_scenario(scenario)
