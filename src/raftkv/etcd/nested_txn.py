"""Txns nested in txns (etcd 3.3+'s `RequestOp.request_txn`), run as one flat raftkv `Txn`.

raftkv's txn command is one conjunction of compares choosing between two flat branches;
etcd's txn is a tree. Theory of operation:

- etcd evaluates the compares of EVERY nested txn against the state before the txn applies
  (its apply's compare-to-path step), so once that state is known, the ops that run are
  known: the branch each txn on the path takes, in order.
- So the servicer reads, linearizably and in one read-only txn (one point in the store's
  history, revision R), every key and every key range a compare of the tree names
  (`reads_of`, `Seen`), walks the tree against that state (`Plan.of`: the path etcd
  would take; a compare over a range holds when every live key read in it satisfies it,
  and a range with no live key compares as one missing key, as etcd and raftkv's apply
  evaluate it) and flattens the ops that run, in their order, into one raftkv `Txn`.
  Its only compares are a guard that holds exactly when every key and range compared on
  the path is as read, so each of those compares evaluates at apply as it did on the
  read (any write to them fails it, even one that would not change an outcome):
  - every key read for them (a compared key, or a live key of a compared range) still
    has the mod_revision read (0: absent). A key's mod_revision changes with every write
    to it (a delete makes it 0, a re-create gives a new one), so this catches changes,
    deletions, and the creation of a named key;
  - every compared range's live keys all have mod_revision < R + 1 (a range compare):
    this catches a key created in the range (or re-created) after the read, which no
    per-key compare names. Together: each compared range holds exactly the keys read,
    each as read.
- The guard failing means a concurrent write: read and plan again, at most `ATTEMPTS`
  times, then UNAVAILABLE (clients retry that). Nothing is written by a failed round.
- Ranges in the flat txn see the txn's earlier writes, as in etcd; the answer is rebuilt
  into the tree (`answer`): each nested `response_txn` has its own `succeeded` and an
  empty header, as etcd leaves it.

Checks done before anything is read, as etcd's gRPC layer does them over the whole tree
(`check_tree`): ops per level against `max_txn_ops` (a nested txn's budget is what its
parent level left), empty keys, and duplicate writes across levels whichever branches
would run (etcd's interval check). raftkv's own txn checks then apply to the flat txn:
its ops, all levels together, and its guard count against `max_txn_ops` (the read's
ranges, one per distinct compared key or range; the guard's compares, one per key read
and one per compared range on the path: so how many keys a compared range holds counts,
checked once they are read), TOO_MANY_OPS beyond; and a put and a delete of one key in
sibling nested txns (which etcd allows) is a duplicate key. The read answers at most
`max_response_bytes` (RESOURCE_EXHAUSTED beyond, `_READ_TOO_LARGE`) and scans within
the node's read limits; the guard's range compares are scanned like any txn's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import grpc

from raftkv.etcd.errors import DUPLICATE_KEY, EMPTY_KEY, FUTURE_REVISION, TOO_MANY_OPS, EtcdError
from raftkv.etcd.kv_translation import (
    FutureRangeGuard,
    RangeShaping,
    compare_of,
    op_answer,
    request_op_of,
)
from raftkv.etcd.proto import rpc_pb2
from raftkv.kv.commands import (
    MvccKeyValue,
    Range,
    RangeResponse,
    RequestOp,
    Txn,
    TxnCompare,
    TxnResponse,
    compare_meets,
    in_range,
)
from raftkv.kv.service import KvService

# Read-and-propose rounds before a nested txn whose compared keys keep changing gives up.
ATTEMPTS: Final = 8

_RACED: Final = (
    grpc.StatusCode.UNAVAILABLE,
    "raftkv: the keys a nested txn compares changed under every attempt to run it; retry",
)
_EMPTY_OP: Final = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: empty request op")
_READ_TOO_LARGE: Final = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    "raftkv: the keys a nested txn compares are larger than this node answers at once "
    "(max_response_bytes)",
)


def has_nested(request: rpc_pb2.TxnRequest) -> bool:
    return any(
        op.WhichOneof("request") == "request_txn" for op in (*request.success, *request.failure)
    )


# -- etcd's checks over the whole tree ----------------------------------------------------


def check_tree(request: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """Refuse what etcd's gRPC layer refuses before the txn reaches its log: too many ops
    on a level, an empty key or op anywhere, a key written twice on a path that could
    run."""
    _check_level(request, max_txn_ops)
    _writes_of(request.success)
    _writes_of(request.failure)


def _check_level(request: rpc_pb2.TxnRequest, budget: int) -> None:
    ops = max(len(request.compare), len(request.success), len(request.failure))
    if ops > budget:
        raise EtcdError(TOO_MANY_OPS)
    if any(not compare.key for compare in request.compare):
        raise EtcdError(EMPTY_KEY)
    for op in (*request.success, *request.failure):
        kind = op.WhichOneof("request")
        if kind == "request_txn":
            # etcd: a nested level has what its parent level left of the budget.
            _check_level(op.request_txn, budget - ops)
        elif kind is None:
            # As a flat txn's: refused in either branch, whichever would run.
            raise EtcdError(_EMPTY_OP)
        elif not getattr(op, kind).key:
            raise EtcdError(EMPTY_KEY)


_Deletes = list[tuple[bytes, bytes]]


def _writes_of(ops: Sequence[rpc_pb2.RequestOp]) -> tuple[set[bytes], _Deletes]:
    """The keys `ops` (and the txns nested in them, both branches) put, and the ranges they
    delete; DUPLICATE_KEY where etcd's interval check finds one. Its rules: this level's
    deletes cover the puts of every nested txn and of this level; a nested txn's puts may
    not repeat an earlier sibling's (its two branches may share keys: one of them runs);
    a nested txn's deletes cover this level's puts and later siblings' puts only."""
    deletes: _Deletes = [
        (op.request_delete_range.key, op.request_delete_range.range_end)
        for op in ops
        if op.WhichOneof("request") == "request_delete_range"
    ]

    def deleted(key: bytes) -> bool:
        return any(in_range(key, start, end) for start, end in deletes)

    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        then_puts, then_deletes = _writes_of(op.request_txn.success)
        else_puts, else_deletes = _writes_of(op.request_txn.failure)
        for key in then_puts:
            if key in puts or deleted(key):
                raise EtcdError(DUPLICATE_KEY)
        puts |= then_puts
        for key in else_puts:
            if (key in puts and key not in then_puts) or deleted(key):
                raise EtcdError(DUPLICATE_KEY)
        puts |= else_puts
        deletes += then_deletes + else_deletes
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or deleted(key):
            raise EtcdError(DUPLICATE_KEY)
        puts.add(key)
    return puts, deletes


# -- the path etcd would take -------------------------------------------------------------

# A compared key (range_end b"") or key range, as raftkv's range convention spells it.
Span = tuple[bytes, bytes]


def reads_of(request: rpc_pb2.TxnRequest) -> list[Range]:
    """One Range per distinct key or key range a compare of the tree names (both branches
    of every level), in order; keys only where no compare of it reads values (smaller
    answers: a compare of another target needs the revisions, version and lease only)."""
    values: dict[Span, bool] = {}

    def visit(txn: rpc_pb2.TxnRequest) -> None:
        for compare in txn.compare:
            span = (compare.key, compare.range_end)
            values[span] = values.get(span, False) or compare.target == rpc_pb2.Compare.VALUE
        for op in (*txn.success, *txn.failure):
            if op.WhichOneof("request") == "request_txn":
                visit(op.request_txn)

    visit(request)
    return [
        Range(key=key, range_end=range_end, keys_only=not values[(key, range_end)])
        for key, range_end in sorted(values)
    ]


@dataclass(frozen=True, slots=True)
class Seen:
    """What one linearizable read of the tree's compared keys and ranges saw: the store's
    `revision` then, and for each span the live key-values in it (none: absent), every one
    of them (a cut answer is refused: a compare needs every key of its range)."""

    revision: int
    spans: Mapping[Span, tuple[MvccKeyValue, ...]]

    @classmethod
    def of(cls, reads: Sequence[Range], read: TxnResponse) -> Seen:
        spans: dict[Span, tuple[MvccKeyValue, ...]] = {}
        for request, found in zip(reads, read.responses, strict=True):
            assert isinstance(found, RangeResponse)
            if found.more:  # a key did not fit this node's answer
                raise EtcdError(_READ_TOO_LARGE)
            spans[(request.key, request.range_end)] = tuple(found.kvs)
        return cls(read.header.revision, spans)


def holds(compare: TxnCompare, kv: MvccKeyValue | None) -> bool:
    """`compare` against the key's state (None: absent), by raftkv's and etcd's rules: an
    absent key has version, revisions and lease 0 and fails every value comparison."""
    actual: bytes | int
    if compare.target == "value":
        if kv is None:
            return False
        actual = kv.value
    elif kv is None:
        actual = 0
    elif compare.target == "version":
        actual = kv.version
    elif compare.target == "create":
        actual = kv.create_revision
    elif compare.target == "mod":
        actual = kv.mod_revision
    else:
        actual = kv.lease
    return compare_meets(compare, actual)


def holds_over(compare: TxnCompare, kvs: Sequence[MvccKeyValue]) -> bool:
    """`compare` over the live keys of its key or range: every one satisfies it; none
    live compares as one missing key (raftkv's apply and etcd's applyCompare)."""
    return all(holds(compare, kv) for kv in kvs) if kvs else holds(compare, None)


@dataclass(frozen=True, slots=True)
class Taken:
    """A txn of the tree as it runs: the branch taken, and for each op of that branch the
    position of its op in the flat txn, or the nested txn it is."""

    succeeded: bool
    ops: tuple[int | Taken, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """The flat raftkv Txn running the path etcd would take through a tree of txns on the
    state `Seen`. Invariant: `txn.failure` is empty and `txn.compares` is the guard (the
    module's theory of operation), so the txn succeeds exactly when every compare
    evaluated on the path would evaluate as it did on the state read; `shaping[i]`
    shapes the answer of `txn.success[i]`."""

    txn: Txn
    shaping: tuple[RangeShaping | None, ...]
    taken: Taken

    @classmethod
    def of(cls, request: rpc_pb2.TxnRequest, seen: Seen) -> Plan:
        flat: list[RequestOp] = []
        shaping: list[RangeShaping | None] = []
        # Every key read for an evaluated compare -> its mod_revision then (0: absent).
        guarded: dict[bytes, int] = {}
        ranges: set[Span] = set()

        def evaluate(compare: TxnCompare) -> bool:
            kvs = seen.spans[(compare.key, compare.range_end)]
            if compare.range_end:
                ranges.add((compare.key, compare.range_end))
            else:
                guarded.setdefault(compare.key, 0)
            for kv in kvs:
                guarded[kv.key] = kv.mod_revision
            return holds_over(compare, kvs)

        def walk(txn: rpc_pb2.TxnRequest) -> Taken:
            # Every compare of a level is evaluated (and guarded), as etcd evaluates all.
            outcomes = [evaluate(compare_of(compare)) for compare in txn.compare]
            succeeded = all(outcomes)
            taken: list[int | Taken] = []
            for op in txn.success if succeeded else txn.failure:
                if op.WhichOneof("request") == "request_txn":
                    taken.append(walk(op.request_txn))
                else:
                    translated, shape = request_op_of(op)
                    taken.append(len(flat))
                    flat.append(translated)
                    shaping.append(shape)
            return Taken(succeeded, tuple(taken))

        root = walk(request)
        guard = [
            TxnCompare(key=key, target="mod", op="=", value=revision)
            for key, revision in sorted(guarded.items())
        ]
        # No live key of the range written after the read (a created one included).
        guard += [
            TxnCompare(key=key, target="mod", op="<", value=seen.revision + 1, range_end=end)
            for key, end in sorted(ranges)
        ]
        return cls(Txn(compares=guard, success=flat), tuple(shaping), root)


async def run(
    service: KvService, request: rpc_pb2.TxnRequest, timeout: float
) -> tuple[TxnResponse, Plan]:
    """Run the tree `request` (see the module's theory of operation): the flat txn's
    response and the plan that ran, to rebuild the answer from (`answer`)."""
    max_txn_ops = service.settings.max_txn_ops
    check_tree(request, max_txn_ops)
    reads = reads_of(request)
    if len(reads) > max_txn_ops:
        raise EtcdError(TOO_MANY_OPS)
    read_compared = Txn(success=list(reads))
    for _ in range(ATTEMPTS):
        read = await service.txn(read_compared, timeout=timeout)
        plan = Plan.of(request, Seen.of(reads, read))
        txn, refused = plan.txn, None
        if len(txn.compares) > max_txn_ops:
            # The guard depends on what the read found: how many keys the ranges hold.
            raise EtcdError(TOO_MANY_OPS)
        if FutureRangeGuard.pins_revisions(txn):
            # The revision read is at or before the txn's: FutureRangeGuard's `current`.
            guard = FutureRangeGuard.of(txn, read.header.revision)
            txn, refused = guard.txn, guard.refused
        response = await service.txn(txn, timeout=timeout)
        if refused is not None and response.succeeded == refused:
            raise EtcdError(FUTURE_REVISION)
        if response.succeeded:
            return response, plan
    raise EtcdError(_RACED)


def answer(
    response: TxnResponse, plan: Plan, header: rpc_pb2.ResponseHeader
) -> rpc_pb2.TxnResponse:
    """etcd's nested answer from the flat txn's: each op's header carries only its
    revision, each nested txn's header is empty (etcd fills the outermost one only)."""

    def build(taken: Taken, txn_header: rpc_pb2.ResponseHeader) -> rpc_pb2.TxnResponse:
        responses = []
        for item in taken.ops:
            if isinstance(item, Taken):
                nested = build(item, rpc_pb2.ResponseHeader())
                responses.append(rpc_pb2.ResponseOp(response_txn=nested))
            else:
                op = response.responses[item]
                inner = rpc_pb2.ResponseHeader(revision=op.header.revision)
                responses.append(op_answer(op, plan.shaping[item], inner))
        return rpc_pb2.TxnResponse(
            header=txn_header, succeeded=taken.succeeded, responses=responses
        )

    return build(plan.taken, header)
