"""The storage protocols the driver writes through: `RaftStorage` and `AppData`.

`RaftStorage` extends the core's read-only `Storage` with the writes the driver makes after
each Ready. `AppData` is the state machine's durable space in the same database, so that a
state machine's data and the applied index covering it land in one atomic write.

Threading: the driver calls `persist` and `create_snapshot` from one writer thread, in
order, and `compact` from the event loop (so the core never sees the first index move in
the middle of a step), while the event loop keeps calling the read methods. Implementations
serialize their writers. Implementations make
each write visible to readers all at once (never a half-applied batch), and never change
anything the core may read between a `persist` and the `advance` that follows it except
what that `persist` wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from raftkv.raft.core.storage import Storage
from raftkv.raft.core.types import ConfState, Entry, HardState, Snapshot


class StorageCorrupt(Exception):
    """A stored record failed its checksum or could not be decoded.

    The node must stop: it may not vote or serve with a damaged log. The message names the
    database path and the key.
    """


class StorageClosed(Exception):
    """The storage was used after `close()`."""


class RaftStorage(Storage, Protocol):
    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        """One atomic write of a Ready: install `snapshot` (replacing the log up to its
        index; entries after it are kept only if they match its term at that index, as
        etcd does — in practice the log is discarded), append `entries` (truncating any
        conflicting suffix first), set `hard_state`. Fsynced before returning when `sync`.
        """
        ...

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at `index` (which must be in the log).

        Raises SnapshotOutOfDate if not newer than the current snapshot, LogCompacted /
        LogUnavailable if `index` is outside the log.
        """
        ...

    def compact(self, compact_index: int) -> None:
        """Discard log entries at and below `compact_index` (its term stays readable via
        `term(compact_index)`, as MemoryStorage's dummy entry). `compact_index` must not
        exceed the latest snapshot's index.
        """
        ...

    def app_data(self) -> AppData:
        """The state machine's durable space (same database, same atomicity)."""
        ...

    def close(self) -> None:
        """Release the database; later calls raise StorageClosed. Idempotent."""
        ...


@dataclass(slots=True)
class AppBatch:
    """Writes a state machine wants applied atomically with its applied index."""

    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    # Half-open key ranges [start, end) to delete; applied before `puts`.
    delete_ranges: list[tuple[bytes, bytes]] = field(default_factory=list)

    def put(self, key: bytes, value: bytes) -> None:
        self.puts.append((key, value))

    def delete(self, key: bytes) -> None:
        self.deletes.append(key)

    def delete_range(self, start: bytes, end: bytes) -> None:
        self.delete_ranges.append((start, end))


class AppData(Protocol):
    """A sorted byte-key space for the state machine, beside the Raft log.

    Invariant kept by `commit`: `applied()` is exactly the index (and term) of the last
    entry whose effects are in this space — a crash never leaves one without the other.
    """

    def applied(self) -> tuple[int, int]:
        """(index, term) recorded by the last `commit`, or (0, 0)."""
        ...

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Items with start <= key < end (end None: to the last key), in key order."""
        ...

    def last(self, start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        """The item with the greatest key in [start, end), or None: a reverse seek, so
        the newest version of a key is found without reading its older ones."""
        ...

    def commit(self, batch: AppBatch, applied_index: int, applied_term: int) -> None:
        """Apply `batch` (delete ranges, then deletes, then puts) and record the applied
        index and term, in one atomic write. Not fsynced: the Raft log is durable, and
        replaying entries after a crash is how lost applies come back."""
        ...

    def replace_all(
        self, items: Iterator[tuple[bytes, bytes]], applied_index: int, applied_term: int
    ) -> None:
        """Replace the whole space with `items` (snapshot restore) atomically."""
        ...

    def freeze(self) -> FrozenAppData:
        """The space as it is now, readable from any thread while writes go on (for
        building a snapshot off the event loop). Cheap to take: RocksDB makes a checkpoint
        (hard links to its immutable files). Close it when done."""
        ...


class AppReadView(Protocol):
    """A consistent, read-only view of an AppData space as it was when taken
    (`SupportsReadView.read_view`): every `get` and `scan` answers from that moment,
    whatever is committed after. Taken on the thread that commits (the event loop, between
    two commits), then read from any one thread at a time (a worker, while the loop goes on
    applying). It pins what it reads (RocksDB keeps that version's memtables and files), so
    it is closed as soon as the read is done."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Items with start <= key < end (end None: to the last key), in key order. A get,
        or another scan, between two steps of a scan is allowed."""
        ...

    def count(self, start: bytes, end: bytes) -> int:
        """The number of keys with start <= key < end, their values unread. A scan under
        way may go on after it."""
        ...

    def close(self) -> None:
        """Release the view. Idempotent, callable from any thread: a get or scan under way
        in another thread raises StorageClosed at its next item (a count, within a few
        thousand keys)."""
        ...


@runtime_checkable
class SupportsReadView(Protocol):
    """An optional capability of an AppData: consistent views that a worker thread can read
    while commits go on (RocksAppData has it; MemoryAppData, for tests, does not)."""

    def read_view(self) -> AppReadView: ...


class FrozenAppData(Protocol):
    """A read-only, point-in-time copy of an AppData space (see AppData.freeze)."""

    # The applied (index, term) the copy reflects.
    applied: tuple[int, int]

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        """Every item, in key order. Callable from any thread, once."""
        ...

    def close(self) -> None:
        """Release the copy (delete a checkpoint). Idempotent."""
        ...


class ItemsView:
    """A FrozenAppData over items already copied into memory."""

    def __init__(self, items: list[tuple[bytes, bytes]], applied: tuple[int, int]) -> None:
        self._items = items
        self.applied = applied

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._items)

    def close(self) -> None:
        self._items = []
