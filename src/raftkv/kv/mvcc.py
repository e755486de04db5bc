"""`MvccStore`: etcd's multi-version key-value model over `AppData` (RocksDB in production).

Theory of operation (etcd's mvcc package, docs/architecture.md#revisions-and-history):
- The store has a current revision, 1 when empty. A write request (put, delete_range, or a
  txn with writes) that changes something creates the next revision; all its changes share
  it. A request that changes nothing (a read-only txn, a delete that matched no key) does
  not create one.
- Each key has `create_revision` (the revision that created it since it last did not exist),
  `mod_revision` (its last change), `version` (changes since creation: 1 after creation) and
  `lease`. A delete leaves a tombstone at its revision; a later put recreates the key with
  version 1 and a new create_revision.
- Reads see the current revision or any past revision >= the compacted revision; the
  response header carries the current revision.
- `compact(C)` forgets what only reads below C could see: for each key, the history older
  than its newest entry at or below C, and that entry too if it is a tombstone. Watches can
  still start at C, as at etcd: they get the puts at C (the deletes' tombstones are gone)
  and everything after, read from the revision log entry of C that compaction keeps, trimmed
  to those puts (`oldest_watch_revision`; layout.py).

Where things live (`layout.py` documents the key space and its invariants): the history and
a latest index of live keys are in `AppData`, not in Python objects, so memory does not grow
with the data set; opening a store reads one meta record. Writes are staged in a
`StagedWrites` (visible to the requests after them) until `commit` writes them in one batch
with the applied index. Every write request is all-or-nothing: one that raises has staged
nothing and left the revision alone. Same requests, same order: byte-identical `AppData`.

Costs: a current read of k keys scans k index entries and reads k values; its `count`
scans the rest of the range and the keys outside it in turns, up to three times the
smaller of the two (`key_count`: the store knows how many keys are live once it has
counted them, in the background, after it opens; until then it scans the rest of the
range). A read at a past revision scans every history entry of the range. `compact` reads
the revision log from the previous compaction revision on and the history of each key
changed since; a delete reads every key it deletes. A `ReadBudget` bounds what one request
scans and answers; a retention policy keeps compactions small.

Reads outside the log (ranges, txns without writes, the state hash) go through an
`MvccView`: the committed store at one revision, which a worker thread can read over a
RocksDB snapshot while the loop goes on applying (`view(threaded=True)`), so that a long
scan never holds the event loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, assert_never

import msgspec

from raftkv.kv.auth_commands import AuthRequest
from raftkv.kv.commands import (
    Compact,
    CompactResponse,
    CompareTarget,
    DeleteRange,
    DeleteRangeResponse,
    HashCheckRequest,
    LeaseRequest,
    LeaseRevokeResponse,
    MvccKeyValue,
    NoSpaceAlarmRequest,
    PublishMember,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    ResponseHeader,
    ResponseOp,
    Txn,
    TxnCompare,
    TxnResponse,
    WriteRequest,
    WriteResponse,
    compare_meets,
    is_read_only,
)
from raftkv.kv.errors import (
    Compacted,
    FutureRevision,
    InvalidRequest,
    LeaseNotFound,
)
from raftkv.kv.hash_checks import hash_state, hash_state_and_data
from raftkv.kv.history_hash import HistoryHash, hash_history
from raftkv.kv.key_count import LiveKeyCount, count_from_total
from raftkv.kv.layout import (
    FORMAT_VERSION,
    HISTORY_PREFIX,
    INDEX_PREFIX,
    MVCC_META_KEY,
    HistoryRecord,
    IndexRecord,
    MvccMeta,
    decode_record,
    encode_record,
    escape,
    history_key,
    index_key,
    prefix_successor,
    revision_key,
    split_history_key,
    unescape,
)
from raftkv.kv.leases import LeaseTable
from raftkv.kv.read_budget import ReadBudget
from raftkv.kv.settings import KvSettings
from raftkv.kv.staging import StagedWrites
from raftkv.kv.validation import check_request
from raftkv.raft.core.errors import InvariantViolation
from raftkv.raft.storage.base import AppData, StorageClosed, StorageCorrupt, SupportsReadView

_META_DECODER = msgspec.msgpack.Decoder(MvccMeta)
_HISTORY_DECODER = msgspec.msgpack.Decoder(HistoryRecord)
_INDEX_DECODER = msgspec.msgpack.Decoder(IndexRecord)
_KEYS_DECODER = msgspec.msgpack.Decoder(list[bytes])
_TOMBSTONE = encode_record(
    HistoryRecord(value=b"", create_revision=0, version=0, lease=0, tombstone=True)
)
_INITIAL_META = MvccMeta(format_version=FORMAT_VERSION, revision=1, compacted_revision=0)


# (staged savepoint, revision, compacted revision, watch start, leases, live keys' change)
_UndoPoint = tuple[int, int, int, int, int, int]


@dataclass(slots=True)
class _Writes:
    """A write request in progress: the revision its changes get, and the keys changed so
    far (in order). The store's revision moves to `revision` at the end iff `changed`."""

    revision: int
    changed: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Found:
    """A key visible to a read, with its newest record at the read's revision."""

    key: bytes
    escaped_key: bytes
    mod_revision: int
    record: IndexRecord | HistoryRecord


class MvccStore:
    """The store (see the module docstring). Single-threaded: the state machine calls it
    from the event loop (only the views it hands out may be read elsewhere). `staged`
    holds the writes since the last `commit`, which every read sees; the exactly-once
    `SessionTable` stages its writes there too, so they commit in the same batch."""

    def __init__(self, app: AppData, settings: KvSettings | None = None) -> None:
        self.staged = StagedWrites(app)
        self._reads = _Reader(self.staged)
        self.settings = settings if settings is not None else KvSettings()
        data = app.get(MVCC_META_KEY)
        meta = _INITIAL_META if data is None else decode_record(_META_DECODER, MVCC_META_KEY, data)
        if meta.format_version != FORMAT_VERSION:
            raise StorageCorrupt(
                f"KV data has layout version {meta.format_version}; this build reads "
                f"{FORMAT_VERSION}"
            )
        # Invariant: _compacted <= _revision; both include staged, uncommitted requests.
        self._revision = meta.revision
        self._compacted = meta.compacted_revision
        # The oldest revision a watch can start from: _compacted if the revision log holds
        # its entry (kept by this build's compaction), _compacted + 1 if not (never
        # compacted, or last compacted by a raftkv that did not keep it). See layout.py.
        self._watch_start = self._compacted
        if self._compacted == 0 or app.get(revision_key(self._compacted)) is None:
            self._watch_start = self._compacted + 1
        # What MVCC_META_KEY holds (the initial values while it is absent).
        self._stored_meta = meta
        # Set when a commit failed (a full disk): what is staged and counted in memory is
        # then ahead of what is stored, for good. The node fails on that error; until it
        # has stopped, no read may see that state (view() refuses).
        self._commit_failed: BaseException | None = None
        # Leases live in the same staged batch: a put attaches its key to its lease, and a
        # revoke deletes the lease's keys in one revision.
        self.leases = LeaseTable(self.staged, self.settings)
        # The number of keys in the latest index (key_count); every write below that adds
        # or removes an index entry tells it.
        self.live_keys = LiveKeyCount(app)

    # -- reads ----------------------------------------------------------------------------

    def current_revision(self) -> int:
        return self._revision

    def compacted_revision(self) -> int:
        return self._compacted

    def oldest_watch_revision(self) -> int:
        """The oldest revision a watch can start from: the compacted revision, whose puts
        compaction keeps in the revision log for watches from it (as etcd serves them); on
        a store last compacted by a raftkv that did not keep them, the revision after it.
        1 before any compaction."""
        return self._watch_start

    def range(self, request: Range) -> RangeResponse:
        """Keys in the request's range at its revision (0: current). Raises InvalidRequest,
        FutureRevision or Compacted."""
        check_request(request, self.settings)
        return self._reads.range(
            request, self._revision, self._compacted, ReadBudget(), self.live_keys.total()
        )

    def state_hash(self) -> str:
        """sha256 (hex) over every committed item of the app space in key order, each as
        4-byte big-endian lengths and bytes of key and value, but the hash checks' own
        record: the hash members compare in hash checks (raftkv.kv.hash_checks.hash_state).
        Equal on replicas that applied the same commands. A full scan, O(data), on the
        calling thread: `view().state_hash()` reads it off the loop."""
        return state_hash(self.staged.app.scan())

    def view(self, *, threaded: bool) -> MvccView:
        """The committed store as it is now (see MvccView), for reads served outside the
        log. With `threaded`, a snapshot a worker thread can read, if the AppData can make
        one (SupportsReadView); otherwise, and without `threaded`, the live data. Only
        between two applies: nothing may be staged. StorageClosed once a commit failed (the
        node is failing; its reads get the stopped node's answer)."""
        if self._commit_failed is not None:
            raise StorageClosed(f"the store could not write: {self._commit_failed}")
        if self.staged.savepoint() != 0:
            raise InvariantViolation("an MVCC view taken while writes are staged (inside apply)")
        app = self.staged.app
        if threaded and isinstance(app, SupportsReadView):
            snapshot = app.read_view()
            return MvccView(
                snapshot,
                snapshot.close,
                self._revision,
                self._compacted,
                self.settings,
                threaded=True,
                live_keys=self.live_keys.total(),
            )
        return MvccView(
            app,
            _nothing,
            self._revision,
            self._compacted,
            self.settings,
            threaded=False,
            live_keys=self.live_keys.total(),
        )

    def close(self) -> None:
        """Stop the background work this store started (the count of its live keys): for
        an owner that replaces or drops the store. Idempotent."""
        self.live_keys.close()

    # -- writes ---------------------------------------------------------------------------

    def execute(self, request: WriteRequest) -> WriteResponse:
        """Stage one write request; raise a KvError, having staged nothing, if refused."""
        match request:
            case Put():
                return self.put(request)
            case DeleteRange():
                return self.delete_range(request)
            case Txn():
                return self.txn(request)
            case Compact():
                return self.compact(request)
            case PublishMember():
                raise InvalidRequest("PublishMember is not an MVCC request (KvStateMachine)")
            case _:
                if isinstance(
                    request, LeaseRequest | HashCheckRequest | NoSpaceAlarmRequest | AuthRequest
                ):
                    raise InvalidRequest(
                        f"{type(request).__name__} is not an MVCC request (KvStateMachine)"
                    )
                assert_never(request)

    def put(self, request: Put) -> PutResponse:
        check_request(request, self.settings)
        point = self._undo_point()
        try:
            writes = self._begin()
            result = self._put(writes, request)
            self._end(writes)
        except BaseException:
            self._undo(point)
            raise
        return result

    def delete_range(self, request: DeleteRange) -> DeleteRangeResponse:
        check_request(request, self.settings)
        point = self._undo_point()
        try:
            writes = self._begin()
            result = self._delete(writes, request)
            self._end(writes)
        except BaseException:
            self._undo(point)
            raise
        return result

    def txn(self, request: Txn) -> TxnResponse:
        """Evaluate the compares at the current revision, then run the branch they choose.
        Each op sees the ops before it; a failing op (a range at a compacted or future
        revision) fails the whole txn."""
        check_request(request, self.settings)
        budget = ReadBudget()
        succeeded = all(self._reads.holds(compare, budget) for compare in request.compares)
        point = self._undo_point()
        try:
            writes = self._begin()
            responses: list[ResponseOp] = []
            for op in request.success if succeeded else request.failure:
                match op:
                    case Range():
                        current = self._visible_revision(writes)
                        responses.append(
                            self._reads.range(
                                op, current, self._compacted, budget, self.live_keys.total()
                            )
                        )
                    case Put():
                        responses.append(self._put(writes, op))
                    case DeleteRange():
                        responses.append(self._delete(writes, op))
                    case _:
                        assert_never(op)
            revision = self._end(writes)
        except BaseException:
            self._undo(point)
            raise
        return TxnResponse(ResponseHeader(revision), succeeded, responses)

    def compact(self, request: Compact) -> CompactResponse:
        """Refuses a revision above the current one (FutureRevision) or at or below the
        compacted one (Compacted). Does not create a revision."""
        check_request(request, self.settings)
        revision = request.revision
        if revision > self._revision:
            raise FutureRevision(revision, self._revision)
        if revision <= self._compacted:
            raise Compacted(revision, self._compacted)
        point = self._undo_point()
        try:
            # Only keys changed since the last compaction can have history to drop. Its
            # revision's log entry (if it kept one) goes too: history starts at `revision`.
            changed: set[bytes] = set()
            kept_entry = revision_key(revision)
            at_revision: list[bytes] = []
            for stored, data in self.staged.scan(
                revision_key(self._compacted), revision_key(revision + 1)
            ):
                keys: list[bytes] = decode_record(_KEYS_DECODER, stored, data)
                changed.update(keys)
                self.staged.delete(stored)
                if stored == kept_entry:
                    at_revision = keys
            dropped = {key for key in sorted(changed) if not self._compact_key(key, revision)}
            # What a watch from `revision` reads: its puts, whose entries every key keeps
            # (its newest at or below `revision`); its deletes' tombstones are gone.
            kept = [key for key in at_revision if key not in dropped]
            self.staged.put(kept_entry, encode_record(kept))
            self._compacted = self._watch_start = revision
        except BaseException:
            self._undo(point)
            raise
        return CompactResponse(ResponseHeader(self._revision))

    def revoke_lease(self, lease_id: int) -> LeaseRevokeResponse:
        """Delete the lease and every key attached to it, in one new revision (none if it
        had no keys). LeaseNotFound, having staged nothing, if it does not exist."""
        point = self._undo_point()
        try:
            writes = self._begin()
            for escaped in self.leases.remove(lease_id):
                self.staged.put(history_key(escaped, writes.revision), _TOMBSTONE)
                self.staged.delete(index_key(escaped))
                self.live_keys.deleted(1)
                writes.changed.append(unescape(escaped))
            revision = self._end(writes)
        except BaseException:
            self._undo(point)
            raise
        return LeaseRevokeResponse(ResponseHeader(revision), True, len(writes.changed))

    def commit(self, applied_index: int, applied_term: int) -> None:
        """Write every staged request (and the revisions they moved) in one AppData commit
        recording `applied_index` and `applied_term`."""
        meta = MvccMeta(FORMAT_VERSION, self._revision, self._compacted)
        if meta != self._stored_meta:
            self.staged.put(MVCC_META_KEY, encode_record(meta))
        try:
            self.staged.commit(applied_index, applied_term)
        except BaseException as error:
            self._commit_failed = error
            raise
        self._stored_meta = meta

    # -- internals ------------------------------------------------------------------------

    def _undo_point(self) -> _UndoPoint:
        """What `_undo` puts back if the request starting now raises: every request is
        all-or-nothing. (A try around each request, not a context manager: it wraps every
        write applied, and a generator-based one cost a fifth of a put's apply.)"""
        counters = (self._revision, self._compacted, self._watch_start, len(self.leases))
        return (self.staged.savepoint(), *counters, self.live_keys.change)

    def _undo(self, point: _UndoPoint) -> None:
        savepoint, revision, compacted, watch_start, leases, live_keys_change = point
        self.staged.rollback(savepoint)
        self._revision, self._compacted, self._watch_start = revision, compacted, watch_start
        self.leases.restore_count(leases)
        self.live_keys.change = live_keys_change

    def _begin(self) -> _Writes:
        return _Writes(revision=self._revision + 1)

    def _visible_revision(self, writes: _Writes) -> int:
        """The revision a read inside `writes` sees (etcd: begin revision, +1 once changed)."""
        return writes.revision if writes.changed else self._revision

    def _end(self, writes: _Writes) -> int:
        if writes.changed:
            self.staged.put(revision_key(writes.revision), encode_record(writes.changed))
            self._revision = writes.revision
        return self._revision

    def _put(self, writes: _Writes, request: Put) -> PutResponse:
        if request.lease and self.leases.get(request.lease) is None:
            raise LeaseNotFound(request.lease)
        escaped = escape(request.key)
        previous = self._reads.index_record(escaped)
        prev_kv = None
        if previous is None:
            create_revision, version = writes.revision, 1
            self.live_keys.created()
        else:
            # check_request refuses a txn branch writing a key twice.
            assert previous.mod_revision < writes.revision, "key written twice in a revision"
            create_revision, version = previous.create_revision, previous.version + 1
            if request.prev_kv:
                prev_kv = self._reads.key_value(
                    _Found(request.key, escaped, previous.mod_revision, previous), keys_only=False
                )
        self.staged.put(
            history_key(escaped, writes.revision),
            encode_record(
                HistoryRecord(request.value, create_revision, version, request.lease, False)
            ),
        )
        self.staged.put(
            index_key(escaped),
            encode_record(IndexRecord(writes.revision, create_revision, version, request.lease)),
        )
        previous_lease = 0 if previous is None else previous.lease
        if previous_lease != request.lease:
            if previous_lease:
                self.leases.detach(previous_lease, escaped)
            if request.lease:
                self.leases.attach(request.lease, escaped)
        writes.changed.append(request.key)
        return PutResponse(ResponseHeader(writes.revision), prev_kv)

    def _delete(self, writes: _Writes, request: DeleteRange) -> DeleteRangeResponse:
        found = list(self._reads.current(request.key, request.range_end))
        prev_kvs = [
            self._reads.key_value(item, keys_only=False) for item in found if request.prev_kv
        ]
        for item in found:
            self.staged.put(history_key(item.escaped_key, writes.revision), _TOMBSTONE)
            self.staged.delete(index_key(item.escaped_key))
            if item.record.lease:
                self.leases.detach(item.record.lease, item.escaped_key)
            writes.changed.append(item.key)
        self.live_keys.deleted(len(found))
        return DeleteRangeResponse(
            ResponseHeader(self._visible_revision(writes)), len(found), prev_kvs
        )

    def _compact_key(self, key: bytes, revision: int) -> bool:
        """Drop `key`'s history older than its newest entry at or below `revision`, and
        that entry too if it is a tombstone; whether the key kept it (a put)."""
        escaped = escape(key)
        entries = list(
            self.staged.scan(history_key(escaped, 0), history_key(escaped, revision + 1))
        )
        *older, (newest_key, newest_data) = entries
        for stored, _ in older:
            self.staged.delete(stored)
        if decode_record(_HISTORY_DECODER, newest_key, newest_data).tombstone:
            self.staged.delete(newest_key)
            return False
        return True


class ReadSource(Protocol):
    """What MVCC reads read: the staged writes over the AppData (inside the state machine),
    a read view of it (reads off the event loop), or the AppData itself (reads on the loop
    between two applies)."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class _Reader:
    """The read half of the store, over one source: lookups of the latest index and of the
    history, ranges at a revision, compares."""

    def __init__(self, source: ReadSource) -> None:
        self.source = source

    def range(
        self,
        request: Range,
        current: int,
        compacted: int,
        budget: ReadBudget,
        live_keys: int | None,
    ) -> RangeResponse:
        """`request` read at its revision, where `current` is the newest revision it may
        see, `compacted` the store's compacted revision and `live_keys` the number of live
        keys at `current` (None: not known; then `count` scans the rest of the range)."""
        revision = request.revision or current
        if revision > current:
            raise FutureRevision(revision, current)
        if revision < compacted:
            raise Compacted(revision, compacted)
        found: Iterator[_Found]
        rest: Iterator[object]  # what is left to count once the answer is full
        if revision == current:
            items = budget.scanning(self.index_items(request.key, request.range_end))
            # Both iterate `items`: the keys beyond the answer are counted undecoded.
            found, rest = map(_found_in_index, items), items
        else:
            found = rest = self.past(request.key, request.range_end, revision, budget)
        wanted = 0 if request.count_only else request.limit or None
        kvs: list[MvccKeyValue] = []
        left_out = 0  # read from `found` but not answered
        if wanted != 0:
            for item in found:
                kv = self.key_value(item, request.keys_only)
                if not budget.take(kv):
                    left_out = 1
                    break
                kvs.append(kv)
                if len(kvs) == wanted:
                    break
        read = len(kvs) + left_out
        if revision == current and live_keys is not None and request.range_end:
            start, end = _stored_bounds(INDEX_PREFIX, request.key, request.range_end)
            outside = itertools.chain(
                self.source.scan(INDEX_PREFIX, start),
                self.source.scan(end, prefix_successor(INDEX_PREFIX)),
            )
            count = count_from_total(rest, outside, read, live_keys, budget)
        else:
            count = read + sum(1 for _ in rest)
        more = not request.count_only and len(kvs) < count
        return RangeResponse(ResponseHeader(current), kvs, count, more)

    def holds(self, compare: TxnCompare, budget: ReadBudget) -> bool:
        """Whether `compare` holds at the source's current revision: for every key live
        in its range (its one key when range_end is empty), each scanned within `budget`;
        stops at the first key that fails it. A range with no live key compares as one
        missing key: version, revisions and lease 0, and no value, which fails every
        "value" comparison (etcd's applyCompare)."""
        items = budget.scanning(self.index_items(compare.key, compare.range_end))
        matched = False
        for found in map(_found_in_index, items):
            matched = True
            if not compare_meets(compare, self._actual(compare.target, found)):
                return False
        return matched or (compare.target != "value" and compare_meets(compare, 0))

    def _actual(self, target: CompareTarget, found: _Found) -> bytes | int:
        record = found.record
        match target:
            case "value":
                return self.value(found.escaped_key, found.mod_revision)
            case "version":
                return record.version
            case "create":
                return record.create_revision
            case "mod":
                return found.mod_revision
            case "lease":
                return record.lease
            case _:
                assert_never(target)

    def current(self, key: bytes, range_end: bytes) -> Iterator[_Found]:
        """The live keys in the range, from the latest index."""
        return map(_found_in_index, self.index_items(key, range_end))

    def index_items(self, key: bytes, range_end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The latest index's items (stored key, record) of the keys in the range."""
        if range_end == b"":
            stored = index_key(escape(key))
            data = self.source.get(stored)
            return iter([] if data is None else [(stored, data)])
        return self.source.scan(*_stored_bounds(INDEX_PREFIX, key, range_end))

    def past(
        self, key: bytes, range_end: bytes, revision: int, budget: ReadBudget
    ) -> Iterator[_Found]:
        """The keys live at `revision` in the range, from the history: for each key, its
        newest entry at or below `revision`, unless that is a tombstone."""
        if range_end == b"":
            escaped = escape(key)
            start, end = history_key(escaped, 0), history_key(escaped, revision + 1)
        else:
            start, end = _stored_bounds(HISTORY_PREFIX, key, range_end)
        reading: bytes | None = None  # the escaped key whose entries the scan is in
        # Its newest entry at or below `revision` so far: (stored key, mod_revision, data).
        newest: tuple[bytes, int, bytes] | None = None
        for stored, data in budget.scanning(self.source.scan(start, end)):
            escaped, mod_revision = split_history_key(stored)
            if escaped != reading:
                if newest is not None:
                    yield from _live_at(*newest)
                reading, newest = escaped, None
            if mod_revision <= revision:
                newest = (stored, mod_revision, data)
        if newest is not None:
            yield from _live_at(*newest)

    def index_record(self, escaped: bytes) -> IndexRecord | None:
        stored = index_key(escaped)
        data = self.source.get(stored)
        return None if data is None else decode_record(_INDEX_DECODER, stored, data)

    def value(self, escaped: bytes, mod_revision: int) -> bytes:
        stored = history_key(escaped, mod_revision)
        data = self.source.get(stored)
        if data is None:
            raise StorageCorrupt(f"app_data key {stored[:64]!r}: indexed history entry missing")
        return decode_record(_HISTORY_DECODER, stored, data).value

    def key_value(self, found: _Found, keys_only: bool) -> MvccKeyValue:
        record = found.record
        if keys_only:
            value = b""
        elif isinstance(record, HistoryRecord):
            value = record.value
        else:
            value = self.value(found.escaped_key, found.mod_revision)
        return MvccKeyValue(
            found.key,
            value,
            record.create_revision,
            found.mod_revision,
            record.version,
            record.lease,
        )


class _ViewSource(ReadSource, Protocol):
    """A ReadSource that can also scan to the end of the space (for the state hash)."""

    def scan(
        self, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]: ...


class MvccView:
    """The committed store at one revision, for the reads served outside the log: ranges,
    txns without writes (`is_read_only`), the state hash. Taken by `MvccStore.view` between
    two applies; every read answers exactly from that state, whatever is applied after.

    `threaded`: the view reads its own snapshot of the data (RocksDB), so it may be read
    from a worker thread while the loop goes on applying (one thread at a time). Otherwise
    it reads the live data (MemoryAppData), and must be read at once, on the loop, with no
    await between taking it and reading it. Close it when done (it pins a snapshot).
    """

    def __init__(
        self,
        source: _ViewSource,
        close: Callable[[], None],
        revision: int,
        compacted_revision: int,
        settings: KvSettings,
        *,
        threaded: bool,
        live_keys: int | None = None,
    ) -> None:
        self._source = source
        self._reads = _Reader(source)
        self._close = close
        self.revision = revision
        self.compacted_revision = compacted_revision
        self.settings = settings
        self.threaded = threaded
        # The live keys at `revision` (key_count), None if the store had not counted them.
        self.live_keys = live_keys

    def range(self, request: Range, budget: ReadBudget) -> RangeResponse:
        """As MvccStore.range, at the view's revision, within `budget`."""
        check_request(request, self.settings)
        return self._reads.range(
            request, self.revision, self.compacted_revision, budget, self.live_keys
        )

    def txn(self, request: Txn, budget: ReadBudget) -> TxnResponse:
        """A txn without writes, answered as MvccStore.txn would at the view's revision
        (compares, then the chosen branch's ranges; no new revision), within `budget`."""
        check_request(request, self.settings)
        if not is_read_only(request):
            raise InvalidRequest("a txn that writes goes through the log, not a read view")
        succeeded = all(self._reads.holds(compare, budget) for compare in request.compares)
        responses: list[ResponseOp] = []
        for op in request.success if succeeded else request.failure:
            assert isinstance(op, Range)  # is_read_only
            responses.append(
                self._reads.range(
                    op, self.revision, self.compacted_revision, budget, self.live_keys
                )
            )
        return TxnResponse(ResponseHeader(self.revision), succeeded, responses)

    def scan_txn_ranges(self, request: Txn, budget: ReadBudget) -> None:
        """Scan the ranges of both branches of `request` as they would be read now, and
        every key of its compares' ranges, counting only what they scan: ScanTooLarge if
        that is beyond `budget`. (How a node bounds a txn that writes before proposing it:
        its ranges will be read on every member's loop.) A range that could not be read
        now is skipped: the apply decides."""
        for compare in request.compares:
            for _ in budget.scanning(self._reads.index_items(compare.key, compare.range_end)):
                pass
        for op in (*request.success, *request.failure):
            if isinstance(op, Range):
                try:
                    self._reads.range(
                        op, self.revision, self.compacted_revision, budget, self.live_keys
                    )
                except (Compacted, FutureRevision):
                    continue

    def state_hash(self) -> str:
        """See MvccStore.state_hash: over the view's state."""
        return state_hash(self._source.scan())

    def state_and_data_hashes(self) -> tuple[str, str]:
        """The state hash and the user data's hash (hash_checks.hash_state_and_data, in
        hex), in one scan of the view's state."""
        state, data = hash_state_and_data(self._source.scan())
        return state.hex(), data.hex()

    def close(self) -> None:
        """Release the view (idempotent; from any thread: a read under way stops)."""
        self._close()

    def history_hash(self, revision: int, budget: ReadBudget) -> HistoryHash:
        """The hash of the history up to `revision` (<= 0: the view's revision), as
        raftkv.kv.history_hash defines it: FutureRevision above the view's revision,
        Compacted below the compacted one (at it is allowed, as in etcd). Scans every
        stored version of every key (those above `revision` too), each counted against
        `budget`'s max_scan_entries: ScanTooLarge beyond."""
        at = revision if revision > 0 else self.revision
        if at > self.revision:
            raise FutureRevision(at, self.revision)
        if at < self.compacted_revision:
            raise Compacted(at, self.compacted_revision)
        history = self._source.scan(HISTORY_PREFIX, prefix_successor(HISTORY_PREFIX))
        digest = hash_history(budget.scanning(history), at, self.compacted_revision)
        return HistoryHash(digest, at, self.compacted_revision, self.revision)


def state_hash(items: Iterable[tuple[bytes, bytes]]) -> str:
    """The hash members compare (raftkv.kv.hash_checks.hash_state), in hex, over `items`
    (every committed item of the app space, in key order)."""
    return hash_state(items).hex()


def _stored_bounds(prefix: bytes, key: bytes, range_end: bytes) -> tuple[bytes, bytes]:
    """The stored key range under `prefix` of the user range (key, range_end), range_end
    not empty. Escaping preserves order, so [key, range_end) maps to [escape(key),
    escape(range_end)); b"\\0" (every key >= key) runs to the end of the prefix's space."""
    start = prefix + escape(key)
    end = prefix_successor(prefix) if range_end == b"\0" else prefix + escape(range_end)
    return start, max(start, end)


def _nothing() -> None:
    pass


def _found_in_index(item: tuple[bytes, bytes]) -> _Found:
    stored, data = item
    record = decode_record(_INDEX_DECODER, stored, data)
    escaped = stored[len(INDEX_PREFIX) :]
    return _Found(unescape(escaped), escaped, record.mod_revision, record)


def _live_at(stored: bytes, mod_revision: int, data: bytes) -> Iterator[_Found]:
    record = decode_record(_HISTORY_DECODER, stored, data)
    if not record.tombstone:
        escaped = split_history_key(stored)[0]
        yield _Found(unescape(escaped), escaped, mod_revision, record)
