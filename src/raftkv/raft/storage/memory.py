"""MemoryStorage: the core's Storage protocol held in memory, for tests, the simulator and
embedding. Modelled on etcd-io/raft's MemoryStorage.

Invariant: `_entries[0]` is a dummy entry whose index and term are those of the latest
snapshot (or 0/0); real entries follow at consecutive indices.
"""

from __future__ import annotations

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


class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    # -- Storage protocol ------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.metadata.conf_state

    def entries(self, low: int, high: int, max_size: int) -> list[Entry]:
        offset = self._entries[0].index
        if low <= offset:
            raise LogCompacted(f"index {low} is compacted (first index {offset + 1})")
        if high > self.last_index() + 1:
            raise LogUnavailable(f"entries up to {high} requested, last index {self.last_index()}")
        if low > high:
            raise InvalidArgument(f"low {low} > high {high}")
        return limit_size(self._entries[low - offset : high - offset], max_size)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._entries):
            raise LogUnavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (by the caller, after each Ready) ------------------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self.hard_state = hard_state

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with `snapshot`. Older snapshots raise SnapshotOutOfDate."""
        if snapshot.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot at {snapshot.metadata.index} is not newer than "
                f"{self._snapshot.metadata.index}"
            )
        self._snapshot = snapshot
        self._entries = [Entry(term=snapshot.metadata.term, index=snapshot.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at `index` (which must be in the log)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )
        offset = self._entries[0].index
        if index < offset:
            # The entry's term is gone; a negative list index would silently read another.
            raise LogCompacted(f"snapshot index {index} is below the compacted index {offset}")
        if index > self.last_index():
            raise LogUnavailable(f"snapshot index {index} > last index {self.last_index()}")
        metadata = SnapshotMetadata(
            index=index,
            term=self._entries[index - offset].term,
            conf_state=conf_state if conf_state is not None else self._snapshot.metadata.conf_state,
        )
        self._snapshot = Snapshot(metadata=metadata, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before `compact_index`; it becomes the dummy entry.

        The caller must not compact beyond what its state machine has applied.
        """
        offset = self._entries[0].index
        if compact_index <= offset:
            raise LogCompacted(f"index {compact_index} is already compacted")
        if compact_index > self.last_index():
            raise LogUnavailable(f"compact {compact_index} is beyond the last index")
        position = compact_index - offset
        kept = self._entries[position]
        self._entries = [Entry(term=kept.term, index=kept.index), *self._entries[position + 1 :]]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append `entries`, truncating any conflicting suffix first.

        Entries at or below the compacted prefix are skipped; a gap is a bug in the caller.
        """
        if not entries:
            return
        first = self.first_index()
        last_new = entries[0].index + len(entries) - 1
        if last_new < first:
            return
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._entries[0].index
        if offset > len(self._entries):
            raise InvariantViolation(
                f"missing log entry: last index {self.last_index()}, "
                f"appending at {entries[0].index}"
            )
        self._entries = [*self._entries[:offset], *entries]
