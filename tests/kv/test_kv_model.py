"""MvccStore against a model (Hypothesis stateful testing): a dict of per-key histories
that keeps every version forever and answers each read by walking them, and a set of live
leases (a put needs its lease; a revoke deletes the lease's live keys in one revision).

Every rule runs the same request on both and requires the same result or the same error;
after every step the revisions agree and the stored history is exactly what compaction
should have kept. Requests stage into one batch until a `commit` rule, so reads see staged
writes over committed ones as they do inside an `apply` call. Keys are drawn from bytes
0x00, 0x01, 'a', 0xff so that escaping and prefixes are exercised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftkv.kv import (
    Compact,
    CompactResponse,
    DeleteRange,
    DeleteRangeResponse,
    DuplicateKey,
    FutureRevision,
    KvError,
    LeaseRevokeResponse,
    MvccKeyValue,
    MvccStore,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    Txn,
    TxnCompare,
    TxnResponse,
)
from raftkv.kv.errors import Compacted, LeaseExists, LeaseNotFound
from raftkv.kv.layout import unescape
from raftkv.raft.storage.memory import MemoryAppData


@dataclass(frozen=True)
class Version:
    revision: int
    value: bytes | None  # None: a tombstone
    create_revision: int
    version: int
    lease: int


def covers(key: bytes, range_end: bytes, candidate: bytes) -> bool:
    if not range_end:
        return candidate == key
    if range_end == b"\0":
        return candidate >= key
    return key <= candidate < range_end


class Model:
    def __init__(self) -> None:
        self.revision = 1
        self.compacted = 0
        self.history: dict[bytes, list[Version]] = {}
        self.leases: set[int] = set()

    def grant(self, lease_id: int) -> None:
        if lease_id in self.leases:
            raise LeaseExists(lease_id)
        self.leases.add(lease_id)

    def revoke(self, lease_id: int) -> LeaseRevokeResponse:
        if lease_id not in self.leases:
            raise LeaseNotFound(lease_id)
        self.leases.discard(lease_id)
        attached = self.attached(lease_id)
        if attached:
            self.revision += 1
            for key in attached:
                self.history[key].append(Version(self.revision, None, 0, 0, 0))
        return LeaseRevokeResponse(ResponseHeader(self.revision), True, len(attached))

    def attached(self, lease_id: int) -> list[bytes]:
        return [
            key
            for key in self.live_keys(b"\0", b"\0", self.revision)
            if (version := self.live(key, self.revision)) is not None and version.lease == lease_id
        ]

    def live(self, key: bytes, revision: int) -> Version | None:
        newest = None
        for version in self.history.get(key, []):
            if version.revision <= revision:
                newest = version
        return newest if newest is not None and newest.value is not None else None

    def key_value(self, key: bytes, version: Version, keys_only: bool = False) -> MvccKeyValue:
        assert version.value is not None
        return MvccKeyValue(
            key,
            b"" if keys_only else version.value,
            version.create_revision,
            version.revision,
            version.version,
            version.lease,
        )

    def live_keys(self, key: bytes, range_end: bytes, revision: int) -> list[bytes]:
        return [
            candidate
            for candidate in sorted(self.history)
            if covers(key, range_end, candidate) and self.live(candidate, revision) is not None
        ]

    def range(self, request: Range, current: int) -> RangeResponse:
        revision = request.revision or current
        if revision > current:
            raise FutureRevision(revision, current)
        if revision < self.compacted:
            raise Compacted(revision, self.compacted)
        keys = self.live_keys(request.key, request.range_end, revision)
        shown = [] if request.count_only else keys[: request.limit or None]
        kvs = []
        for key in shown:
            version = self.live(key, revision)
            assert version is not None
            kvs.append(self.key_value(key, version, request.keys_only))
        more = not request.count_only and 0 < request.limit < len(keys)
        return RangeResponse(ResponseHeader(current), kvs, len(keys), more)

    def put(self, request: Put, revision: int) -> PutResponse:
        if request.lease and request.lease not in self.leases:
            raise LeaseNotFound(request.lease)
        previous = self.live(request.key, revision)
        self.history.setdefault(request.key, []).append(
            Version(
                revision,
                request.value,
                previous.create_revision if previous else revision,
                previous.version + 1 if previous else 1,
                request.lease,
            )
        )
        prev_kv = self.key_value(request.key, previous) if previous and request.prev_kv else None
        return PutResponse(ResponseHeader(revision), prev_kv)

    def delete(self, request: DeleteRange, revision: int) -> list[MvccKeyValue]:
        deleted = []
        for key in self.live_keys(request.key, request.range_end, revision):
            version = self.live(key, revision)
            assert version is not None
            deleted.append(self.key_value(key, version))
            self.history[key].append(Version(revision, None, 0, 0, 0))
        return deleted

    def holds(self, compare: TxnCompare) -> bool:
        version = self.live(compare.key, self.revision)
        if compare.target == "value":
            if version is None:
                return False
            actual: bytes | int = version.value or b""
        else:
            actual = (
                0
                if version is None
                else {
                    "version": version.version,
                    "create": version.create_revision,
                    "mod": version.revision,
                    "lease": version.lease,
                }[compare.target]
            )
        expected = compare.value
        return {
            "=": actual == expected,
            "!=": actual != expected,
            "<": actual < expected,  # type: ignore[operator]
            ">": actual > expected,  # type: ignore[operator]
        }[compare.op]

    def check_branch(self, ops: list[RequestOp]) -> None:
        deletes = [op for op in ops if isinstance(op, DeleteRange)]
        puts: set[bytes] = set()
        for op in ops:
            if isinstance(op, Put):
                if op.key in puts or any(covers(d.key, d.range_end, op.key) for d in deletes):
                    raise DuplicateKey(op.key)
                puts.add(op.key)

    def write(self, ops: list[RequestOp]) -> tuple[list[ResponseOp], int]:
        """Run `ops` as one write txn; all or nothing."""
        saved = copy.deepcopy(self.history)
        new = self.revision + 1
        changed = False
        responses: list[ResponseOp] = []
        try:
            for op in ops:
                if isinstance(op, Range):
                    responses.append(self.range(op, new if changed else self.revision))
                elif isinstance(op, Put):
                    responses.append(self.put(op, new))
                    changed = True
                else:
                    deleted = self.delete(op, new)
                    changed = changed or bool(deleted)
                    responses.append(
                        DeleteRangeResponse(
                            ResponseHeader(new if changed else self.revision),
                            len(deleted),
                            deleted if op.prev_kv else [],
                        )
                    )
        except KvError:
            self.history = saved
            raise
        if changed:
            self.revision = new
        return responses, self.revision

    def txn(self, request: Txn) -> TxnResponse:
        self.check_branch(request.success)
        self.check_branch(request.failure)
        succeeded = all(self.holds(compare) for compare in request.compares)
        responses, revision = self.write(request.success if succeeded else request.failure)
        return TxnResponse(ResponseHeader(revision), succeeded, responses)

    def compact(self, revision: int) -> CompactResponse:
        if revision > self.revision:
            raise FutureRevision(revision, self.revision)
        if revision <= self.compacted:
            raise Compacted(revision, self.compacted)
        self.compacted = revision
        return CompactResponse(ResponseHeader(self.revision))

    def kept_history(self) -> int:
        """How many history entries compaction should have kept."""
        kept = 0
        for versions in self.history.values():
            kept += sum(1 for version in versions if version.revision > self.compacted)
            below = [version for version in versions if version.revision <= self.compacted]
            if below and below[-1].value is not None:
                kept += 1
        return kept


KEYS = st.lists(st.sampled_from([0x00, 0x01, 0x61, 0xFF]), min_size=1, max_size=3).map(bytes)
RANGE_ENDS = st.one_of(st.just(b""), st.just(b"\0"), KEYS)
VALUES = st.binary(max_size=3)
LEASES = st.sampled_from([0, 7, 9])


def ranges(revisions: st.SearchStrategy[int]) -> st.SearchStrategy[Range]:
    return st.builds(
        Range,
        key=KEYS,
        range_end=RANGE_ENDS,
        limit=st.integers(0, 3),
        revision=revisions,
        keys_only=st.booleans(),
        count_only=st.booleans(),
    )


PUTS = st.builds(Put, key=KEYS, value=VALUES, lease=LEASES, prev_kv=st.booleans())
DELETES = st.builds(DeleteRange, key=KEYS, range_end=RANGE_ENDS, prev_kv=st.booleans())
COMPARES = st.one_of(
    st.builds(
        TxnCompare,
        key=KEYS,
        target=st.just("value"),
        op=st.sampled_from(["=", "!=", "<", ">"]),
        value=VALUES,
    ),
    st.builds(
        TxnCompare,
        key=KEYS,
        target=st.sampled_from(["version", "create", "mod", "lease"]),
        op=st.sampled_from(["=", "!=", "<", ">"]),
        value=st.integers(0, 12),
    ),
)


def outcome(call: object, *args: object) -> object:
    """The call's result, or (type, message) of the KvError it raised."""
    assert callable(call)
    try:
        return call(*args)
    except KvError as error:
        return (type(error), str(error))


class MvccAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MvccStore(MemoryAppData())
        self.model = Model()
        self.applied_index = 0

    def revisions(self) -> st.SearchStrategy[int]:
        return st.integers(0, self.model.revision + 1)

    @rule(request=PUTS)
    def put(self, request: Put) -> None:
        expected = outcome(lambda: self.model.write([request])[0][0])
        assert outcome(self.store.put, request) == expected

    @rule(request=DELETES)
    def delete(self, request: DeleteRange) -> None:
        expected = outcome(lambda: self.model.write([request])[0][0])
        assert outcome(self.store.delete_range, request) == expected

    @rule(data=st.data())
    def txn(self, data: st.DataObject) -> None:
        ops = st.lists(st.one_of(PUTS, DELETES, ranges(self.revisions())), max_size=3)
        request = data.draw(
            st.builds(Txn, compares=st.lists(COMPARES, max_size=3), success=ops, failure=ops)
        )
        assert outcome(self.store.txn, request) == outcome(self.model.txn, request)

    @rule(lease_id=st.sampled_from([7, 9]))
    def grant(self, lease_id: int) -> None:
        expected = outcome(self.model.grant, lease_id)
        granted = outcome(self.store.leases.grant, lease_id, 5, self.applied_index + 1)
        assert granted == expected or (expected is None and not isinstance(granted, tuple))

    @rule(lease_id=st.sampled_from([7, 9]))
    def revoke(self, lease_id: int) -> None:
        expected = outcome(self.model.revoke, lease_id)
        assert outcome(self.store.revoke_lease, lease_id) == expected

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        revision = data.draw(self.revisions())
        expected = outcome(self.model.compact, revision)
        assert outcome(self.store.compact, Compact(revision)) == expected

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        request = data.draw(ranges(self.revisions()))
        expected = outcome(self.model.range, request, self.model.revision)
        assert outcome(self.store.range, request) == expected

    @rule()
    def commit(self) -> None:
        self.applied_index += 1
        self.store.commit(self.applied_index, 1)

    @invariant()
    def revisions_agree(self) -> None:
        assert self.store.current_revision() == self.model.revision
        assert self.store.compacted_revision() == self.model.compacted

    @invariant()
    def history_is_compacted(self) -> None:
        stored = sum(1 for _ in self.store.staged.scan(b"h", b"i"))
        assert stored == self.model.kept_history()
        live = len(self.model.live_keys(b"\0", b"\0", self.model.revision))
        assert sum(1 for _ in self.store.staged.scan(b"k", b"l")) == live

    @invariant()
    def leases_agree(self) -> None:
        assert sorted(lease for lease, _ in self.store.leases.records()) == sorted(
            self.model.leases
        )
        assert len(self.store.leases) == len(self.model.leases)
        for lease_id in (7, 9):
            attached = [unescape(key) for key in self.store.leases.attached(lease_id)]
            assert attached == self.model.attached(lease_id)


MvccAgainstModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_mvcc_store_matches_the_model = MvccAgainstModel.TestCase
