"""Translation between etcd's KV messages and raftkv's KV commands (`raftkv.kv.commands`),
both ways, with no I/O: what the KV servicer sends to `KvService` and what it answers.

raftkv's commands follow etcd's model, so most fields map one to one. What etcd has and
raftkv's commands do not is done here, as etcd itself does it:

- Range's sort (`sort_order`, `sort_target`) and revision filters (`min/max_mod_revision`,
  `min/max_create_revision`): like etcd, a range that sorts or filters fetches every key
  of the range, then filters, sorts and cuts to `limit` (`RangeShaping`); `count` is the
  count before filtering. Any other range with a limit fetches limit + 1 keys, sorts
  them if a non-key sort target asks (etcd sorts those ascending even with no order
  given), and cuts to limit. A range too large to answer whole (this node's
  max_response_bytes) cannot be sorted correctly and is refused rather than sorted in part.
- A revision <= 0 means the newest, and a negative limit no limit, as in etcd.
- `keys_only` with a sort by value: etcd drops the values after sorting, so the Range
  fetches them and `RangeShaping` drops them once sorted.

Refused, with a message saying so (docs/etcd.md lists them): a compare over a key range
(`Compare.range_end`). A txn nested in a txn is not a raftkv command: the servicer runs it
as a flat txn (`raftkv.etcd.nested_txn`), from the ops translated here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
import msgspec

from raftkv.etcd.errors import FUTURE_REVISION, EtcdError
from raftkv.etcd.proto import kv_pb2, rpc_pb2
from raftkv.kv.commands import (
    CompareOp,
    CompareTarget,
    DeleteRange,
    DeleteRangeResponse,
    MvccKeyValue,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    RequestOp,
    ResponseOp,
    Txn,
    TxnCompare,
    TxnResponse,
    is_read_only,
)

_Sort = rpc_pb2.RangeRequest
_MAX_INT64 = (1 << 63) - 1
_SORT_KEYS: dict[int, Callable[[MvccKeyValue], bytes | int]] = {
    _Sort.KEY: lambda kv: kv.key,
    _Sort.VERSION: lambda kv: kv.version,
    _Sort.CREATE: lambda kv: kv.create_revision,
    _Sort.MOD: lambda kv: kv.mod_revision,
    _Sort.VALUE: lambda kv: kv.value,
}
_COMPARE_OPS: dict[int, CompareOp] = {
    rpc_pb2.Compare.EQUAL: "=",
    rpc_pb2.Compare.NOT_EQUAL: "!=",
    rpc_pb2.Compare.LESS: "<",
    rpc_pb2.Compare.GREATER: ">",
}
# The target, and the field of target_union etcd reads for it.
_COMPARE_TARGETS: dict[int, tuple[CompareTarget, str]] = {
    rpc_pb2.Compare.VERSION: ("version", "version"),
    rpc_pb2.Compare.CREATE: ("create", "create_revision"),
    rpc_pb2.Compare.MOD: ("mod", "mod_revision"),
    rpc_pb2.Compare.VALUE: ("value", "value"),
    rpc_pb2.Compare.LEASE: ("lease", "lease"),
}


def _unsupported(what: str) -> EtcdError:
    return EtcdError((grpc.StatusCode.UNIMPLEMENTED, f"raftkv: {what} is not supported"))


@dataclass(frozen=True, slots=True)
class RangeShaping:
    """What a RangeRequest asks beyond raftkv's Range: filters, sort and the limit to cut
    to afterwards. `fetch_all`: the Range fetches the whole range (no limit) first."""

    limit: int
    sort_order: int
    sort_target: int
    min_mod_revision: int
    max_mod_revision: int
    min_create_revision: int
    max_create_revision: int
    # The request's keys_only, when the values must be fetched to sort by them first.
    drop_values: bool = False

    @property
    def filters(self) -> bool:
        return bool(
            self.min_mod_revision
            or self.max_mod_revision
            or self.min_create_revision
            or self.max_create_revision
        )

    @property
    def fetch_all(self) -> bool:
        # etcd's rule: sorting (an explicit order) or filtering reads the whole range.
        return self.sort_order != _Sort.NONE or self.filters

    @property
    def fetch_limit(self) -> int:
        """The limit of the Range to fetch: none when reading the whole range, else one
        more than asked, as etcd fetches: a sort by a non-key target with no order given
        sorts those limit + 1 before cutting to limit (so the last key read may replace
        one before it), and the cut sets `more`."""
        if self.fetch_all or not self.limit:
            return 0
        return min(self.limit + 1, _MAX_INT64)

    def shape(self, response: RangeResponse) -> RangeResponse:
        """`response` (of the Range `range_of` built) filtered, sorted and cut to limit."""
        kvs = response.kvs
        if self.fetch_all and response.more:
            raise EtcdError(
                (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "raftkv: the range is larger than this node answers at once "
                    "(max_response_bytes), so it cannot be sorted or filtered whole: "
                    "narrow it, or page through it by key without sort or filters",
                )
            )
        if self.filters:
            kvs = [kv for kv in kvs if self._kept(kv)]
        order = self.sort_order
        if order == _Sort.NONE and self.sort_target != _Sort.KEY:
            order = _Sort.ASCEND  # etcd sorts by a non-key target ascending by default
        if order == _Sort.DESCEND or (order == _Sort.ASCEND and self.sort_target != _Sort.KEY):
            key = _SORT_KEYS.get(self.sort_target, _SORT_KEYS[_Sort.KEY])
            # Stable: equal targets stay in key order, as etcd's sort leaves them.
            kvs = sorted(kvs, key=key, reverse=order == _Sort.DESCEND)
        more = response.more
        if self.limit and len(kvs) > self.limit:
            kvs, more = kvs[: self.limit], True
        if self.drop_values:
            kvs = [msgspec.structs.replace(kv, value=b"") for kv in kvs]
        return RangeResponse(header=response.header, kvs=kvs, count=response.count, more=more)

    def _kept(self, kv: MvccKeyValue) -> bool:
        return not (
            (self.min_mod_revision and kv.mod_revision < self.min_mod_revision)
            or (self.max_mod_revision and kv.mod_revision > self.max_mod_revision)
            or (self.min_create_revision and kv.create_revision < self.min_create_revision)
            or (self.max_create_revision and kv.create_revision > self.max_create_revision)
        )


def range_of(request: rpc_pb2.RangeRequest) -> tuple[Range, RangeShaping]:
    """raftkv's Range for `request`, and what is left to do to its answer."""
    shaping = RangeShaping(
        limit=max(request.limit, 0),
        sort_order=request.sort_order,
        sort_target=request.sort_target,
        min_mod_revision=request.min_mod_revision,
        max_mod_revision=request.max_mod_revision,
        min_create_revision=request.min_create_revision,
        max_create_revision=request.max_create_revision,
        drop_values=request.keys_only and request.sort_target == _Sort.VALUE,
    )
    return (
        Range(
            key=request.key,
            range_end=request.range_end,
            limit=shaping.fetch_limit,
            revision=max(request.revision, 0),
            keys_only=request.keys_only and not shaping.drop_values,
            count_only=request.count_only,
        ),
        shaping,
    )


def put_of(request: rpc_pb2.PutRequest) -> Put:
    return Put(key=request.key, value=request.value, lease=request.lease, prev_kv=request.prev_kv)


def delete_of(request: rpc_pb2.DeleteRangeRequest) -> DeleteRange:
    return DeleteRange(key=request.key, range_end=request.range_end, prev_kv=request.prev_kv)


def compare_of(compare: rpc_pb2.Compare) -> TxnCompare:
    """raftkv's compare for etcd's: the same range convention (range_end "\\0" is every key
    >= key), so range_end passes through; raftkv evaluates it over every live key in the
    range as etcd does."""
    op = _COMPARE_OPS.get(compare.result)
    found = _COMPARE_TARGETS.get(compare.target)
    if op is None or found is None:
        raise EtcdError(
            (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: unknown compare result or target")
        )
    target, field = found
    value: bytes | int = getattr(compare, field)
    return TxnCompare(
        key=compare.key, target=target, op=op, value=value, range_end=compare.range_end
    )


@dataclass(frozen=True, slots=True)
class TxnTranslation:
    """raftkv's Txn for a TxnRequest, with the shaping each of its ranges needs (by branch
    and position; None for the ops that are not ranges)."""

    txn: Txn
    success_shaping: list[RangeShaping | None]
    failure_shaping: list[RangeShaping | None]


def txn_of(request: rpc_pb2.TxnRequest) -> TxnTranslation:
    success, success_shaping = _ops_of(request.success)
    failure, failure_shaping = _ops_of(request.failure)
    txn = Txn(
        compares=[compare_of(compare) for compare in request.compare],
        success=success,
        failure=failure,
    )
    return TxnTranslation(txn, success_shaping, failure_shaping)


@dataclass(frozen=True, slots=True)
class FutureRangeGuard:
    """A txn that writes, made safe from ranges at revisions newer than the store's.

    etcd checks a txn's ranges against the store's revision before the txn writes, so a
    range at the txn's own revision (the next one) is a future revision, refused with
    nothing written. raftkv's state machine checks them against the txn's own view, in
    which that revision exists. So the servicer reads the current revision first
    (`current`; linearizable, so the txn applies at it or later) and a branch holding a
    range beyond it is taken out of the txn: `txn` runs the other branch only, and if its
    compares pick the removed branch (`refused` is the branch's `succeeded`), nothing was
    written and the answer is etcd's future-revision refusal. Both branches with such a
    range: refused before anything is proposed. Under concurrent writes a revision
    written between the read and the txn is refused too, where etcd might accept it."""

    txn: Txn
    refused: bool | None

    @classmethod
    def of(cls, txn: Txn, current: int) -> FutureRangeGuard:
        def future(ops: list[RequestOp]) -> bool:
            return any(isinstance(op, Range) and op.revision > current for op in ops)

        in_success, in_failure = future(txn.success), future(txn.failure)
        if in_success and in_failure:
            raise EtcdError(FUTURE_REVISION)
        if in_success:
            return cls(Txn(compares=txn.compares, success=[], failure=txn.failure), True)
        if in_failure:
            return cls(Txn(compares=txn.compares, success=txn.success, failure=[]), False)
        return cls(txn, None)

    @staticmethod
    def pins_revisions(txn: Txn) -> bool:
        """Whether the guard is needed: `txn` writes and reads at a given revision."""
        ops = (*txn.success, *txn.failure)
        return not is_read_only(txn) and any(
            isinstance(op, Range) and op.revision > 0 for op in ops
        )


def _ops_of(
    ops: Iterable[rpc_pb2.RequestOp],
) -> tuple[list[RequestOp], list[RangeShaping | None]]:
    translated: list[RequestOp] = []
    shaping: list[RangeShaping | None] = []
    for op in ops:
        found, shape = request_op_of(op)
        translated.append(found)
        shaping.append(shape)
    return translated, shaping


def request_op_of(op: rpc_pb2.RequestOp) -> tuple[RequestOp, RangeShaping | None]:
    """raftkv's op for one of a txn's ops, and the shaping of its answer if it is a range.
    A nested txn is not an op of raftkv's: the servicer sends a txn holding one to
    `raftkv.etcd.nested_txn`, which translates its ops one by one."""
    kind = op.WhichOneof("request")
    if kind == "request_range":
        return range_of(op.request_range)
    if kind == "request_put":
        return put_of(op.request_put), None
    if kind == "request_delete_range":
        return delete_of(op.request_delete_range), None
    if kind == "request_txn":
        raise AssertionError("a nested txn reached the flat txn translation")
    raise EtcdError((grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: empty request op"))


# -- answers ----------------------------------------------------------------------------


def key_value(kv: MvccKeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def range_answer(response: RangeResponse, header: rpc_pb2.ResponseHeader) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(
        header=header,
        kvs=[key_value(kv) for kv in response.kvs],
        more=response.more,
        count=response.count,
    )


def put_answer(response: PutResponse, header: rpc_pb2.ResponseHeader) -> rpc_pb2.PutResponse:
    answer = rpc_pb2.PutResponse(header=header)
    if response.prev_kv is not None:
        answer.prev_kv.CopyFrom(key_value(response.prev_kv))
    return answer


def delete_answer(
    response: DeleteRangeResponse, header: rpc_pb2.ResponseHeader
) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(
        header=header,
        deleted=response.deleted,
        prev_kvs=[key_value(kv) for kv in response.prev_kvs],
    )


def txn_answer(
    response: TxnResponse, translation: TxnTranslation, header: rpc_pb2.ResponseHeader
) -> rpc_pb2.TxnResponse:
    """The answer to a txn; each op's header carries only the revision, as etcd's do."""
    shaping = translation.success_shaping if response.succeeded else translation.failure_shaping
    responses = []
    for position, op in enumerate(response.responses):
        inner = rpc_pb2.ResponseHeader(revision=op.header.revision)
        responses.append(op_answer(op, shaping[position], inner))
    return rpc_pb2.TxnResponse(header=header, succeeded=response.succeeded, responses=responses)


def op_answer(
    op: ResponseOp, shaping: RangeShaping | None, header: rpc_pb2.ResponseHeader
) -> rpc_pb2.ResponseOp:
    match op:
        case RangeResponse():
            shaped = shaping.shape(op) if shaping is not None else op
            return rpc_pb2.ResponseOp(response_range=range_answer(shaped, header))
        case PutResponse():
            return rpc_pb2.ResponseOp(response_put=put_answer(op, header))
        case DeleteRangeResponse():
            return rpc_pb2.ResponseOp(response_delete_range=delete_answer(op, header))
