"""A seeded random sequence of etcd KV operations, sent to a real etcd and to raftkv through
raftkv's own generated stubs (one .proto serves both), and the answers compared field by
field.

Theory of operation:
- `Workload(seed, prefix)` draws operations from `random.Random(seed)`: puts (prev_kv,
  leases), deletes (one key, a range, a prefix; prev_kv), txns (every compare target and
  result, over one key or a key range; both branches with puts, deletes and ranges), txns
  nested two levels deep with writes, ranges with every option, compactions, refusals
  (compacted or future revisions, an empty key, a key written twice in a txn or across its
  nested txns, too many ops on a level) and watches from past revisions. Its keys live
  under `prefix`, so seeds run one after another on the same two stores. It follows the
  store's revision from etcd's answers (`observe`), so revisions it draws are mostly valid.
- `run_op(store, op)` sends one op and answers an `Outcome`: the response with every
  header's cluster_id, member_id and raft_term cleared (they name the store, not the
  data), or the gRPC status code and details. A watch's outcome is its created response,
  then its events in order (how a store batches them into responses is not part of the
  contract), then its cancel response if it was canceled.
- `compare(op, etcd, raftkv)` answers None when the two agree, or when a documented
  deviation (docs/etcd.md) explains the difference exactly (`DEVIATIONS`: each named,
  each recognizing one narrow case); else a report with both outcomes.
Both stores start at revision 1 and take the same writes, so revisions compare exactly.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc

# Header fields that name the store, not the data.
STORE_FIELDS: Final = ("cluster_id", "member_id", "raft_term")
# etcd's --max-txn-ops default, which raftkv's max_txn_ops matches.
MAX_TXN_OPS: Final = 128
# A watch that has not delivered what it must within this long is a failure, not a hang.
WATCH_TIMEOUT_S: Final = 10.0
CALL_TIMEOUT_S: Final = 10.0

Sort = rpc_pb2.RangeRequest
Cmp = rpc_pb2.Compare
Filter = rpc_pb2.WatchCreateRequest
_EVERY_KEY: Final = rpc_pb2.DeleteRangeRequest(key=b"\x00", range_end=b"\x00")


# -- operations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One unary call: `service`.`method`(`request`)."""

    name: str
    service: str
    method: str
    request: Message

    def show(self) -> str:
        return f"{self.service}.{self.method}({_text(self.request)})"


@dataclass(frozen=True)
class WatchOp:
    """A watch created from a past revision; the store's events are complete once the one
    at `last_revision` (a write the workload made just before) has arrived."""

    name: str
    request: rpc_pb2.WatchCreateRequest
    last_revision: int

    def show(self) -> str:
        return (
            f"Watch(create_request {{{_text(self.request)}}}) until revision {self.last_revision}"
        )


AnyOp = Op | WatchOp


def _text(message: Message) -> str:
    return text_format.MessageToString(message, as_one_line=True, as_utf8=True)


@dataclass
class Workload:
    """Seeded operations under `prefix`; `observe` feeds it etcd's answers."""

    seed: int
    prefix: bytes
    random: random.Random = field(init=False)
    revision: int = 1  # the store's revision, as etcd answered it last
    origin: int = 1  # the revision after the seed's reset: draws are relative to it
    compacted: int = 0  # the newest compaction revision etcd accepted
    leases: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    # -- what the operations touch --------------------------------------------------------

    def key(self) -> bytes:
        return self.prefix + self.random.choice([b"a", b"b", b"c", b"d", b"e", b"a/x", b"a/y"])

    def value(self) -> bytes:
        return self.random.choice([b"", b"1", b"2", b"v", b"zz", b"\x00\xff"])

    def key_range(self) -> tuple[bytes, bytes]:
        """A single key, [k1, k2), a prefix, from a key on, or every key of the prefix."""
        shape = self.random.choice(["key", "key", "between", "prefix", "from", "all"])
        key = self.key()
        if shape == "key":
            return key, b""
        if shape == "between":
            other = self.key()
            return (min(key, other), max(key, other))  # sometimes empty: k1 == k2
        if shape == "prefix":
            return key, key[:-1] + bytes([key[-1] + 1])
        if shape == "from":
            # Keys >= key: every later prefix too, which both stores hold alike.
            return key, b"\x00"
        return self.prefix, self.prefix[:-1] + bytes([self.prefix[-1] + 1])

    def past_revision(self) -> int:
        """A revision a read may ask for: 0 (the newest) or one still in history."""
        if self.random.random() < 0.4:
            return 0
        return self.random.randint(max(self.compacted, 1), self.revision)

    def compared_revision(self) -> int:
        """0 (a missing key's) or a revision of the seed's, or one past the newest."""
        if self.random.random() < 0.2:
            return 0
        return self.random.randint(self.origin, self.revision + 1)

    def lease(self) -> int:
        if self.leases and self.random.random() < 0.3:
            return self.random.choice(self.leases)
        return 0

    # -- requests -------------------------------------------------------------------------

    def put(self) -> rpc_pb2.PutRequest:
        return rpc_pb2.PutRequest(
            key=self.key(),
            value=self.value(),
            lease=self.lease(),
            prev_kv=self.random.random() < 0.5,
        )

    def delete(self) -> rpc_pb2.DeleteRangeRequest:
        key, range_end = self.key_range()
        return rpc_pb2.DeleteRangeRequest(
            key=key, range_end=range_end, prev_kv=self.random.random() < 0.5
        )

    def range(self, revision: int | None = None) -> rpc_pb2.RangeRequest:
        key, range_end = self.key_range()
        draw = self.random
        request = rpc_pb2.RangeRequest(
            key=key,
            range_end=range_end,
            revision=self.past_revision() if revision is None else revision,
            serializable=draw.random() < 0.3,
            keys_only=draw.random() < 0.2,
            count_only=draw.random() < 0.1,
        )
        if draw.random() < 0.4:
            request.limit = draw.randint(-1, 4)
        if draw.random() < 0.5:
            request.sort_order = draw.choice([Sort.NONE, Sort.ASCEND, Sort.DESCEND])
            request.sort_target = draw.choice(
                [Sort.KEY, Sort.VERSION, Sort.CREATE, Sort.MOD, Sort.VALUE]
            )
        for name in (
            "min_mod_revision",
            "max_mod_revision",
            "min_create_revision",
            "max_create_revision",
        ):
            if draw.random() < 0.1:
                setattr(request, name, draw.randint(self.origin - 1, self.revision + 1))
        return request

    def compare(self) -> rpc_pb2.Compare:
        """A compare of one key, or (a third of them) over a key range: every live key in
        it must satisfy the compare, and a range without one compares as a missing key.
        Nested txns draw them too, at every level."""
        draw = self.random
        ranged = draw.random() < 0.3
        key, range_end = self.key_range() if ranged else (self.key(), b"")
        compare = rpc_pb2.Compare(
            key=key,
            range_end=range_end,
            result=draw.choice([Cmp.EQUAL, Cmp.GREATER, Cmp.LESS, Cmp.NOT_EQUAL]),
            target=draw.choice([Cmp.VERSION, Cmp.CREATE, Cmp.MOD, Cmp.VALUE, Cmp.LEASE]),
        )
        if compare.target == Cmp.VERSION:
            compare.version = draw.randint(0, 3)
        elif compare.target == Cmp.CREATE:
            compare.create_revision = self.compared_revision()
        elif compare.target == Cmp.MOD:
            compare.mod_revision = self.compared_revision()
        elif compare.target == Cmp.VALUE:
            compare.value = self.value()
        else:
            compare.lease = draw.choice([0, *self.leases])
        return compare

    def branch(
        self,
        writes: bool = True,
        written: list[tuple[bytes, bytes]] | None = None,
        nested: int = 0,
    ) -> list[rpc_pb2.RequestOp]:
        """Up to 3 ops writing distinct keys (etcd refuses a key written twice), and none
        that `written` (the writes of a tree of txns so far) holds; with `nested` > 0,
        some are txns nested `nested` levels deep at most."""
        ops: list[rpc_pb2.RequestOp] = []
        written = [] if written is None else written
        for _ in range(self.random.randint(0, 3)):
            kinds = ["put", "delete", "range"] if writes else ["range"]
            kind = self.random.choice(kinds + ["txn"] * bool(nested))
            if kind == "txn":
                inner = self.nested_txn(nested - 1, written)
                ops.append(rpc_pb2.RequestOp(request_txn=inner))
                continue
            if kind == "range":
                ops.append(rpc_pb2.RequestOp(request_range=self.range()))
                continue
            request: rpc_pb2.PutRequest | rpc_pb2.DeleteRangeRequest
            if kind == "put":
                request = self.put()
                span = (request.key, b"")
            else:
                request = self.delete()
                span = (request.key, request.range_end)
            if any(_overlap(span, other) and (kind == "put" or not other[1]) for other in written):
                continue
            written.append(span)
            if isinstance(request, rpc_pb2.PutRequest):
                ops.append(rpc_pb2.RequestOp(request_put=request))
            else:
                ops.append(rpc_pb2.RequestOp(request_delete_range=request))
        return ops

    def txn(self) -> rpc_pb2.TxnRequest:
        return rpc_pb2.TxnRequest(
            compare=[self.compare() for _ in range(self.random.randint(0, 3))],
            success=self.branch(),
            failure=self.branch(),
        )

    def nested_txn(self, depth: int, written: list[tuple[bytes, bytes]]) -> rpc_pb2.TxnRequest:
        """A txn whose branches hold txns `depth` levels deep at most, no key written
        twice in the whole tree (`written`)."""
        return rpc_pb2.TxnRequest(
            compare=[self.compare() for _ in range(self.random.randint(0, 2))],
            success=self.branch(written=written, nested=depth),
            failure=self.branch(written=written, nested=depth),
        )

    def tree(self) -> rpc_pb2.TxnRequest:
        """A txn holding at least one nested txn, two levels deep at most, with writes."""
        written: list[tuple[bytes, bytes]] = []
        outer = self.nested_txn(2, written)
        branch = outer.success if self.random.random() < 0.5 else outer.failure
        inner = rpc_pb2.RequestOp(request_txn=self.nested_txn(1, written))
        branch.insert(self.random.randint(0, len(branch)), inner)
        return outer

    # -- the sequence ---------------------------------------------------------------------

    def ops(self, lease_base: int) -> Iterator[AnyOp]:
        """The seed's operations, drawn one by one (each after etcd's answer to the one
        before was observed). First a reset, so that what a seed draws depends on the
        seed alone, whatever ran before it: every key deleted, history compacted to the
        current revision (`origin`); then two leases with ids of the seed's own
        (`lease_base` + 1, + 2; long TTLs: they outlive the test)."""
        yield Op("reset: delete every key", "KV", "DeleteRange", _EVERY_KEY)
        compact = rpc_pb2.CompactionRequest(revision=self.revision)
        yield Op("reset: compact", "KV", "Compact", compact)
        self.origin = self.compacted = self.revision
        for lease in (lease_base + 1, lease_base + 2):
            self.leases.append(lease)
            grant = rpc_pb2.LeaseGrantRequest(ID=lease, TTL=3600)
            yield Op("lease grant", "Lease", "LeaseGrant", grant)
        while True:
            yield from self.next_op()

    def next_op(self) -> list[AnyOp]:
        """The next operation (a watch comes with the writes that bound it)."""
        choices: list[tuple[float, Callable[[], list[AnyOp]]]] = [
            (25, lambda: [Op("put", "KV", "Put", self.put())]),
            (10, lambda: [Op("delete", "KV", "DeleteRange", self.delete())]),
            (20, lambda: [Op("txn", "KV", "Txn", self.txn())]),
            (25, lambda: [Op("range", "KV", "Range", self.range())]),
            (4, lambda: [self.compaction()]),
            (6, lambda: [self.refusal()]),
            (6, self.watch),
            (12, lambda: [Op("nested txn", "KV", "Txn", self.tree())]),
            (1, self.read_only_unsupported),
            (4, lambda: [self.put_keeping()]),
            (1, lambda: [self.revoke()]),
        ]
        weights = [weight for weight, _ in choices]
        ((_, make),) = self.random.choices(choices, weights)
        return make()

    def put_keeping(self) -> Op:
        """A put keeping the key's value or lease (ignore_value, ignore_lease), sometimes
        also giving what it keeps (refused), sometimes of a key that does not exist."""
        request = self.put()
        request.ignore_value = self.random.random() < 0.6
        request.ignore_lease = not request.ignore_value or self.random.random() < 0.3
        if request.ignore_value and self.random.random() < 0.8:
            request.value = b""
        if request.ignore_lease and self.random.random() < 0.8:
            request.lease = 0
        return Op("put keeping", "KV", "Put", request)

    def revoke(self) -> Op:
        """Revoke one of the seed's leases (its keys are deleted; later puts with it are
        refused), or one never granted."""
        lease = self.random.choice([*self.leases, 999])
        if lease in self.leases:
            self.leases.remove(lease)
        return Op("lease revoke", "Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease))

    def compaction(self) -> Op:
        draw = self.random.random()
        if draw < 0.7 and self.compacted < self.revision:
            revision = self.random.randint(self.compacted + 1, self.revision)
        elif draw < 0.85:
            revision = self.random.randint(self.compacted - 2, self.compacted)  # compacted
        elif draw < 0.95:
            revision = self.revision + self.random.randint(1, 3)  # a future revision
        else:
            revision = self.random.choice([0, -1])
        request = rpc_pb2.CompactionRequest(revision=revision, physical=self.random.random() < 0.5)
        return Op("compact", "KV", "Compact", request)

    def refusal(self) -> Op:
        kind = self.random.choice(
            [
                "compacted",
                "future",
                "empty put",
                "empty range",
                "empty delete",
                "duplicate",
                "put over delete",
                "too many ops",
                "too many compares",
                "duplicate across levels",
                "too many nested ops",
                "lease not found",
                "txn at a future revision",
                "txn at a compacted revision",
            ]
        )
        if kind == "lease not found":
            request = self.put()
            request.lease = 777  # never granted
            if self.random.random() < 0.5:
                return Op(kind, "KV", "Put", request)
            ops = [rpc_pb2.RequestOp(request_put=request)]
            return Op(kind, "KV", "Txn", rpc_pb2.TxnRequest(success=ops, failure=ops))
        if kind.startswith("txn at"):
            if kind.endswith("future revision"):
                revision = self.revision + self.random.randint(1, 3)
            else:
                revision = max(self.random.randint(self.origin - 5, self.compacted - 1), 1)
            ops = [
                rpc_pb2.RequestOp(request_put=self.put()),
                rpc_pb2.RequestOp(request_range=self.range(revision=revision)),
            ]
            return Op(kind, "KV", "Txn", rpc_pb2.TxnRequest(success=ops, failure=ops))
        if kind == "compacted":
            # Draws relative to the origin (the same whatever ran before), at least 1.
            revision = max(self.random.randint(self.origin - 5, self.compacted - 1), 1)
            request = self.range(revision=revision)
            return Op("range at a compacted revision", "KV", "Range", request)
        if kind == "future":
            request = self.range(revision=self.revision + self.random.randint(1, 5))
            return Op("range at a future revision", "KV", "Range", request)
        if kind == "empty put":
            return Op(kind, "KV", "Put", rpc_pb2.PutRequest(key=b"", value=b"x"))
        if kind == "empty range":
            return Op(kind, "KV", "Range", rpc_pb2.RangeRequest(key=b"", range_end=self.key()))
        if kind == "empty delete":
            return Op(kind, "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b""))
        if kind == "duplicate":
            key = self.key()
            twice = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key)) for _ in "12"]
            return Op(kind, "KV", "Txn", rpc_pb2.TxnRequest(success=twice))
        if kind == "put over delete":
            key = self.key()
            ops = [
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key)),
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"x")),
            ]
            return Op(kind, "KV", "Txn", rpc_pb2.TxnRequest(failure=ops))
        if kind == "duplicate across levels":
            # A put at the outer level and in a nested txn's branch, whichever runs.
            put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=self.key(), value=b"x"))
            inner = rpc_pb2.TxnRequest(compare=[self.compare()], failure=[put])
            ops = [put, rpc_pb2.RequestOp(request_txn=inner)]
            self.random.shuffle(ops)
            return Op(kind, "KV", "Txn", rpc_pb2.TxnRequest(success=ops))
        if kind == "too many nested ops":
            # etcd: a nested txn may have what its parent level left of max_txn_ops.
            outer = self.random.randint(1, MAX_TXN_OPS - 1)
            inner = rpc_pb2.TxnRequest(
                failure=[
                    rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=self.key()))
                    for _ in range(MAX_TXN_OPS - outer + self.random.choice([0, 1]))
                ]
            )
            ranges = [
                rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=self.key()))
                for _ in range(outer - 1)
            ]
            request = rpc_pb2.TxnRequest(success=[*ranges, rpc_pb2.RequestOp(request_txn=inner)])
            return Op(kind, "KV", "Txn", request)
        if kind == "too many ops":
            ranges = [
                rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=self.key()))
                for _ in range(MAX_TXN_OPS + 1)
            ]
            return Op(kind, "KV", "Txn", rpc_pb2.TxnRequest(success=ranges))
        compares = [self.compare() for _ in range(MAX_TXN_OPS + 1)]
        return Op(kind, "KV", "Txn", rpc_pb2.TxnRequest(compare=compares))

    def watch(self) -> list[AnyOp]:
        """Two writes to a key of the watched range (a put, then its delete), then a watch
        from a past revision that must deliver both (less what its filter drops)."""
        key, range_end = self.key_range()
        bound = [
            Op("put (watch bound)", "KV", "Put", rpc_pb2.PutRequest(key=key, value=b"w")),
            Op("delete (watch bound)", "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=key)),
        ]
        put_revision, delete_revision = self.revision + 1, self.revision + 2
        filters = self.random.choice([[], [], [Filter.NOPUT], [Filter.NODELETE]])
        last = put_revision if filters == [Filter.NODELETE] else delete_revision
        if self.random.random() < 0.1:
            # Compacted (canceled) unless it is the compaction revision itself.
            start = max(self.random.randint(self.origin - 5, self.compacted), 1)
        else:
            start = self.random.randint(self.compacted + 1, last)
        request = rpc_pb2.WatchCreateRequest(
            key=key,
            range_end=range_end,
            start_revision=start,
            filters=filters,
            prev_kv=self.random.random() < 0.5,
        )
        return [*bound, WatchOp("watch", request, last)]

    def read_only_unsupported(self) -> list[AnyOp]:
        """What raftkv refuses (docs/etcd.md), read-only so that etcd's answer changes
        nothing: a compare over a key range (both refused once, now answered as etcd
        does)."""
        compare = self.compare()
        compare.range_end = self.prefix[:-1] + bytes([self.prefix[-1] + 1])
        request = rpc_pb2.TxnRequest(compare=[compare], success=self.branch(writes=False))
        return [Op("compare over a range", "KV", "Txn", request)]

    def observe(self, op: AnyOp, etcd: Outcome) -> None:
        """Follow the store's revision and compactions from etcd's answer to `op`."""
        if etcd.error is not None or not isinstance(op, Op):
            return
        assert etcd.response is not None
        header = getattr(etcd.response, "header", None)
        if header is not None and header.revision:
            self.revision = header.revision
        if isinstance(op.request, rpc_pb2.CompactionRequest):
            self.compacted = op.request.revision


def _overlap(a: tuple[bytes, bytes], b: tuple[bytes, bytes]) -> bool:
    """Whether key ranges a and b (etcd's (key, range_end) convention) share a key."""

    def bounds(span: tuple[bytes, bytes]) -> tuple[bytes, bytes | None]:
        key, end = span
        if not end:
            return key, key + b"\x00"
        return key, None if end == b"\x00" else end

    (a_start, a_end), (b_start, b_end) = bounds(a), bounds(b)
    return (a_end is None or b_start < a_end) and (b_end is None or a_start < b_end)


# -- sending ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A response (store fields cleared) or an error; for a watch, its responses."""

    response: Message | None = None
    error: tuple[str, str] | None = None
    watch: tuple[Message, ...] | None = None

    def show(self) -> str:
        if self.error is not None:
            return f"error {self.error[0]}: {self.error[1]!r}"
        if self.watch is not None:
            return "\n    ".join(_text(message) for message in self.watch)
        assert self.response is not None
        return _text(self.response)


def clear_store_fields(message: Message) -> Message:
    """A copy of `message` with every ResponseHeader's store fields cleared."""
    copy = type(message)()
    copy.CopyFrom(message)
    _clear(copy)
    return copy


def _clear(message: Message) -> None:
    if isinstance(message, rpc_pb2.ResponseHeader):
        for name in STORE_FIELDS:
            message.ClearField(name)
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if isinstance(value, Message):
            _clear(value)
        else:
            for item in value:
                _clear(item)


class Store:
    """One store's stubs over one channel."""

    def __init__(self, name: str, endpoint: str) -> None:
        self.name = name
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint)
        self.stubs: dict[str, Any] = {
            "KV": rpc_pb2_grpc.KVStub(self.channel),  # type: ignore[no-untyped-call]
            "Lease": rpc_pb2_grpc.LeaseStub(self.channel),  # type: ignore[no-untyped-call]
            "Watch": rpc_pb2_grpc.WatchStub(self.channel),  # type: ignore[no-untyped-call]
        }

    def close(self) -> None:
        self.channel.close()

    def revision(self) -> int:
        answer = self.stubs["KV"].Range(rpc_pb2.RangeRequest(key=b"\x00"), timeout=CALL_TIMEOUT_S)
        revision: int = answer.header.revision
        return revision


def run_op(store: Store, op: AnyOp) -> Outcome:
    if isinstance(op, WatchOp):
        return _watch(store, op)
    method = getattr(store.stubs[op.service], op.method)
    try:
        response = method(op.request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        return Outcome(error=(error.code().name, error.details() or ""))
    return Outcome(response=clear_store_fields(response))


def _watch(store: Store, op: WatchOp) -> Outcome:
    """The created response, each event as a response of its own, and the cancel response
    if any: until the event at op.last_revision has arrived or the watch is canceled."""
    done = threading.Event()

    def requests() -> Iterator[rpc_pb2.WatchRequest]:
        yield rpc_pb2.WatchRequest(create_request=op.request)
        done.wait(WATCH_TIMEOUT_S)

    call = store.stubs["Watch"].Watch(requests(), timeout=WATCH_TIMEOUT_S)
    seen: list[Message] = []
    try:
        for response in call:
            # Progress notifications carry no data to compare (none are asked for).
            if response.created or response.canceled:
                seen.append(clear_store_fields(response))
            for event in response.events:
                seen.append(event)
            if response.canceled or any(
                event.kv.mod_revision >= op.last_revision for event in response.events
            ):
                break
    except grpc.RpcError as error:
        done.set()
        return Outcome(
            error=(error.code().name, error.details() or ""),
            watch=tuple(seen),
        )
    finally:
        done.set()
        call.cancel()
    return Outcome(watch=tuple(seen))


# -- comparing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deviation:
    """A documented difference (docs/etcd.md): `explains(op, etcd, raftkv)` recognizes
    exactly that case."""

    name: str
    explains: Callable[[AnyOp, Outcome, Outcome], bool]


_SORT_VALUE: dict[int, Callable[[Message], object]] = {
    Sort.VERSION: lambda kv: kv.version,  # type: ignore[attr-defined]
    Sort.CREATE: lambda kv: kv.create_revision,  # type: ignore[attr-defined]
    Sort.MOD: lambda kv: kv.mod_revision,  # type: ignore[attr-defined]
    Sort.VALUE: lambda kv: kv.value,  # type: ignore[attr-defined]
}


def _ranges(
    op: Op, etcd: Message, raftkv: Message
) -> Iterator[tuple[rpc_pb2.RangeRequest, Message, Message]]:
    """Each range of `op` with etcd's and raftkv's answers to it (a txn's by position in
    the branch both took)."""
    if isinstance(op.request, rpc_pb2.RangeRequest):
        yield op.request, etcd, raftkv
    elif isinstance(op.request, rpc_pb2.TxnRequest):
        yield from _txn_ranges(op.request, etcd, raftkv)


def _txn_ranges(
    txn: rpc_pb2.TxnRequest, etcd: Message, raftkv: Message
) -> Iterator[tuple[rpc_pb2.RangeRequest, Message, Message]]:
    """The ranges of the branch etcd took, nested txns' too, with both answers."""
    assert isinstance(etcd, rpc_pb2.TxnResponse) and isinstance(raftkv, rpc_pb2.TxnResponse)
    branch = txn.success if etcd.succeeded else txn.failure
    for request, one, other in zip(branch, etcd.responses, raftkv.responses, strict=False):
        if request.HasField("request_range"):
            yield request.request_range, one.response_range, other.response_range
        elif request.HasField("request_txn") and other.HasField("response_txn"):
            yield from _txn_ranges(request.request_txn, one.response_txn, other.response_txn)


def _tie_order(op: AnyOp, etcd: Outcome, raftkv: Outcome) -> bool:
    """Keys whose sort target (version, create, mod, value) is equal come in key order
    from raftkv, in the order of Go's unstable sort from etcd (so also which of them a
    limit keeps). Everything else equal: the same sort-target values in the same order,
    and every key both answered is the same key-value."""
    if not isinstance(op, Op) or etcd.response is None or raftkv.response is None:
        return False
    if type(etcd.response) is not type(raftkv.response):
        return False
    aligned = type(raftkv.response)()
    aligned.CopyFrom(raftkv.response)
    answers = list(_ranges(op, etcd.response, raftkv.response))
    for position, (request, one, other) in enumerate(_ranges(op, etcd.response, aligned)):
        if one.kvs == other.kvs:  # type: ignore[attr-defined]
            continue
        target = _SORT_VALUE.get(request.sort_target)
        if target is None or len(one.kvs) != len(other.kvs):  # type: ignore[attr-defined]
            return False
        if [target(kv) for kv in one.kvs] != [target(kv) for kv in other.kvs]:  # type: ignore[attr-defined]
            return False
        ours = {kv.key: kv for kv in answers[position][2].kvs}  # type: ignore[attr-defined]
        if any(kv.key in ours and ours[kv.key] != kv for kv in one.kvs):  # type: ignore[attr-defined]
            return False
        del other.kvs[:]  # type: ignore[attr-defined]
        other.kvs.extend(one.kvs)  # type: ignore[attr-defined]
    return aligned == etcd.response


DEVIATIONS: Final = (Deviation("ties of a sort by a non-key target come in key order", _tie_order),)


@dataclass
class Report:
    """What a differential run saw: ops run, deviations met (by name), mismatches."""

    ops: int = 0
    deviations: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)


class Differential:
    """The two stores, and what carries over from one seed to the next: the compaction
    revision (a seed's workload must not draw revisions an earlier seed compacted)."""

    def __init__(self, etcd: Store, raftkv: Store) -> None:
        self.etcd = etcd
        self.raftkv = raftkv
        self.compacted = 0
        self.report = Report()

    def run_seed(self, seed: int, ops: int) -> None:
        """Run `ops` operations of seed `seed` at both stores, comparing each answer; stop
        at the first mismatch (the stores may differ after it), recorded in the report."""
        report = self.report
        start = {store.name: store.revision() for store in (self.etcd, self.raftkv)}
        if start["etcd"] != start["raftkv"]:
            report.mismatches.append(
                f"seed {seed}: the stores start at different revisions {start}"
                " (an earlier mismatch left them apart)"
            )
            return
        workload = Workload(seed, b"d%d/" % seed)
        workload.revision = start["etcd"]
        workload.compacted = self.compacted
        # Lease ids of this seed's own, so that seeds never grant the same one.
        drawn = workload.ops(lease_base=1000 * (seed + 1))
        for done in range(1, ops + 1):
            op = next(drawn)
            etcd = run_op(self.etcd, op)
            raftkv = run_op(self.raftkv, op)
            report.ops += 1
            if etcd != raftkv:
                explained = [d.name for d in DEVIATIONS if d.explains(op, etcd, raftkv)]
                if not explained:
                    report.mismatches.append(
                        f"seed {seed}, op {done}: {op.show()}\n"
                        f"  etcd:   {etcd.show()}\n  raftkv: {raftkv.show()}"
                    )
                    return
                for name in explained:
                    report.deviations[name] = report.deviations.get(name, 0) + 1
            workload.observe(op, etcd)
            self.compacted = workload.compacted
