"""MemoryStorage: `RaftStorage` and `AppData` held in memory, for tests, the simulator and
embedding. Modelled on etcd-io/raft's MemoryStorage.

Invariant: `_entries[0]` is a dummy entry whose index and term are those of the latest
snapshot or compaction (or 0/0); real entries follow at consecutive indices.

Threading (base.py): every write builds the new log aside and publishes it in one
assignment, and every read takes `_entries` once, so a reader on another thread sees all of
a write to the log or none of it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Sequence

from raftkv.raft.core.errors import (
    InvalidArgument,
    InvariantViolation,
    LogCompacted,
    LogUnavailable,
    SnapshotOutOfDate,
)
from raftkv.raft.core.log import limit_size
from raftkv.raft.core.types import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.storage.base import AppBatch, ItemsView, StorageClosed


class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]
        self._app_data = MemoryAppData()
        self._closed = False

    # -- Storage protocol ------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        self._check_open()
        return self.hard_state, self._snapshot.metadata.conf_state

    def entries(self, low: int, high: int, max_size: int) -> list[Entry]:
        self._check_open()
        log = self._entries
        offset = log[0].index
        last = offset + len(log) - 1
        if low <= offset:
            raise LogCompacted(f"index {low} is compacted (first index {offset + 1})")
        if high > last + 1:
            raise LogUnavailable(f"entries up to {high} requested, last index {last}")
        if low > high:
            raise InvalidArgument(f"low {low} > high {high}")
        return limit_size(log[low - offset : high - offset], max_size)

    def term(self, index: int) -> int:
        self._check_open()
        log = self._entries
        offset = log[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(log):
            raise LogUnavailable(f"index {index} is beyond the last index {offset + len(log) - 1}")
        return log[index - offset].term

    def first_index(self) -> int:
        self._check_open()
        return self._entries[0].index + 1

    def last_index(self) -> int:
        self._check_open()
        log = self._entries
        return log[0].index + len(log) - 1

    def snapshot(self) -> Snapshot:
        self._check_open()
        return self._snapshot

    # -- RaftStorage -----------------------------------------------------------------------

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        """RaftStorage.persist: `apply_snapshot`, then `append`, then `set_hard_state`.

        Everything is checked before anything changes, so a call that raises has changed
        nothing. `sync` is ignored: there is nothing to flush.
        """
        self._check_open()
        log = self._entries
        if snapshot is not None:
            self._check_newer_snapshot(snapshot.metadata.index)
            log = [Entry(term=snapshot.metadata.term, index=snapshot.metadata.index)]
        log = _appended(log, entries)
        if snapshot is not None:
            self._snapshot = snapshot
        self._entries = log
        if hard_state is not None:
            self.hard_state = hard_state

    def app_data(self) -> MemoryAppData:
        self._check_open()
        return self._app_data

    def close(self) -> None:
        """Later calls (here and on `app_data()`) raise StorageClosed. Idempotent."""
        self._closed = True
        self._app_data.close()

    # -- writes (by the caller, after each Ready) ------------------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self._check_open()
        self.hard_state = hard_state

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with `snapshot`. Older snapshots raise SnapshotOutOfDate."""
        self._check_open()
        self._check_newer_snapshot(snapshot.metadata.index)
        self._snapshot = snapshot
        self._entries = [Entry(term=snapshot.metadata.term, index=snapshot.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at `index` (which must be in the log)."""
        self._check_open()
        self._check_newer_snapshot(index)
        log = self._entries
        offset = log[0].index
        if index < offset:
            # The entry's term is gone; a negative list index would silently read another.
            raise LogCompacted(f"snapshot index {index} is below the compacted index {offset}")
        if index - offset >= len(log):
            raise LogUnavailable(f"snapshot index {index} > last index {offset + len(log) - 1}")
        metadata = SnapshotMetadata(
            index=index,
            term=log[index - offset].term,
            conf_state=conf_state if conf_state is not None else self._snapshot.metadata.conf_state,
        )
        self._snapshot = Snapshot(metadata=metadata, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before `compact_index`; it becomes the dummy entry.

        The caller must not compact beyond what its state machine has applied. Unlike
        RocksStorage, compacting beyond the latest snapshot is allowed: nothing here
        survives a crash, so no entry is needed to recover.
        """
        self._check_open()
        log = self._entries
        offset = log[0].index
        if compact_index <= offset:
            raise LogCompacted(f"index {compact_index} is already compacted")
        if compact_index - offset >= len(log):
            raise LogUnavailable(f"compact {compact_index} is beyond the last index")
        position = compact_index - offset
        kept = log[position]
        self._entries = [Entry(term=kept.term, index=kept.index), *log[position + 1 :]]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append `entries`, truncating any conflicting suffix first.

        Entries at or below the compacted prefix are skipped; a gap is a bug in the caller.
        """
        self._check_open()
        self._entries = _appended(self._entries, entries)

    def _check_newer_snapshot(self, index: int) -> None:
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the MemoryStorage is closed")


def _appended(log: list[Entry], entries: Sequence[Entry]) -> list[Entry]:
    """`log` (dummy entry first) with `entries` appended, truncating any conflicting suffix
    and skipping entries at or below the dummy. Raises InvariantViolation on a gap, before
    changing anything.

    A truncation builds a new list. An append at the end extends `log` itself, in one C
    call that no other thread can interleave with: readers take the list once and never
    look past the length they saw, so they see the new entries all at once or not at all.
    """
    if not entries:
        return log
    first = log[0].index + 1
    last_new = entries[0].index + len(entries) - 1
    if last_new < first:
        return log
    if first > entries[0].index:
        entries = entries[first - entries[0].index :]
    offset = entries[0].index - log[0].index
    if offset > len(log):
        raise InvariantViolation(
            f"missing log entry: last index {log[0].index + len(log) - 1}, "
            f"appending at {entries[0].index}"
        )
    if offset == len(log):
        log.extend(list(entries))  # a list: extending from one runs no Python code
        return log
    return [*log[:offset], *entries]


class MemoryAppData:
    """`AppData` in memory: a sorted list of keys beside a dict of values.

    Invariant: `_keys` is sorted, without duplicates, and holds exactly the keys of
    `_values`.
    """

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._values: dict[bytes, bytes] = {}
        self._applied = (0, 0)
        self._closed = False

    def applied(self) -> tuple[int, int]:
        self._check_open()
        return self._applied

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._values.get(key)

    def scan(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """AppData.scan. Interleaved with writes, a scan yields each key once, in increasing
        order, with its value at that moment; it sees keys written after it started that
        sort after the last key it yielded."""
        self._check_open()  # fail now, not at the first next()
        return self._scan(start, end)

    def _scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        position = bisect_left(self._keys, start)
        while True:
            self._check_open()
            if position >= len(self._keys):
                return
            key = self._keys[position]
            if end is not None and key >= end:
                return
            yield key, self._values[key]
            # Writes between two steps move positions: find the successor of `key` afresh.
            position = bisect_right(self._keys, key)

    def last(self, start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        self._check_open()
        position = bisect_left(self._keys, end) - 1
        if position < 0 or self._keys[position] < start:
            return None
        key = self._keys[position]
        return key, self._values[key]

    def commit(self, batch: AppBatch, applied_index: int, applied_term: int) -> None:
        self._check_open()
        for start, end in batch.delete_ranges:
            low = bisect_left(self._keys, start)
            high = max(low, bisect_left(self._keys, end))
            for key in self._keys[low:high]:
                del self._values[key]
            del self._keys[low:high]
        for key in batch.deletes:
            if self._values.pop(key, None) is not None:
                del self._keys[bisect_left(self._keys, key)]
        for key, value in batch.puts:
            if key not in self._values:
                insort(self._keys, key)
            self._values[key] = value
        self._applied = (applied_index, applied_term)

    def freeze(self) -> ItemsView:
        """AppData.freeze: a copy of every item (memory storage is for tests: O(data))."""
        return ItemsView(list(self.scan()), self._applied)

    def replace_all(
        self, items: Iterator[tuple[bytes, bytes]], applied_index: int, applied_term: int
    ) -> None:
        self._check_open()
        values = dict(items)
        self._values = values
        self._keys = sorted(values)
        self._applied = (applied_index, applied_term)

    def close(self) -> None:
        """Later calls raise StorageClosed (MemoryStorage.close calls this)."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the MemoryStorage is closed")
