"""The Raft log as the core sees it: durable entries in `Storage` plus an unstable tail.

Index layout (etcd-io/raft's `log.go`):

    snapshot/first index     applied  <=  committed       stable last   last index
    ---------|-------------------|------------|-----------------|-----------|
             |<------------------- Storage ------------------->|<- Unstable->|

Invariants: `applied <= committed <= last_index()`; `committed` never decreases; entries at
or below `committed` are never truncated (truncating one is an InvariantViolation: it would
mean two different values were committed at one index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.errors import InvariantViolation, LogCompacted, LogUnavailable
from raftkv.raft.core.storage import Storage
from raftkv.raft.core.types import Entry, Snapshot


def limit_size(entries: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix of `entries` within `max_size` bytes, but at least one entry."""
    if not entries:
        return entries
    size = entries[0].payload_size
    for position in range(1, len(entries)):
        size += entries[position].payload_size
        if size > max_size:
            return entries[:position]
    return entries


@dataclass(slots=True)
class Unstable:
    """Entries and a snapshot not yet handed to storage as durable.

    Invariant: `entries[i].index == offset + i`; if `snapshot` is set, `offset ==
    snapshot.metadata.index + 1` or entries were appended after it.
    """

    offset: int
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == index:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to `index` (with `term`) are durable; drop them from the tail.

        Ignored if the entry at `index` was since replaced (its term differs)."""
        current = self.maybe_term(index)
        if current is None or current != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.metadata.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: list[Entry]) -> None:
        after = entries[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= self.offset:
            # Replaces the whole tail (and possibly durable entries: the caller truncates).
            self.offset = after
            self.entries = list(entries)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(entries)

    def slice(self, low: int, high: int) -> list[Entry]:
        upper = self.offset + len(self.entries)
        if low < self.offset or high > upper or low > high:
            raise InvariantViolation(
                f"unstable slice [{low},{high}) out of bounds [{self.offset},{upper})"
            )
        return self.entries[low - self.offset : high - self.offset]


class RaftLog:
    def __init__(self, storage: Storage, max_applying_size: int) -> None:
        self.storage = storage
        self.max_applying_size = max_applying_size
        first_index = storage.first_index()
        last_index = storage.last_index()
        self.unstable = Unstable(offset=last_index + 1)
        # Highest index known to be committed (on a quorum's durable logs).
        self.committed = first_index - 1
        # Highest index handed to the application to apply (and acknowledged by advance).
        self.applied = first_index - 1

    # -- indexes and terms -----------------------------------------------------------------

    def first_index(self) -> int:
        index = self.unstable.maybe_first_index()
        return index if index is not None else self.storage.first_index()

    def last_index(self) -> int:
        index = self.unstable.maybe_last_index()
        return index if index is not None else self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term of the entry at `index`; raises LogCompacted/LogUnavailable out of range."""
        # The entry before the first index (the snapshot's) still has a known term.
        if index < self.first_index() - 1:
            raise LogCompacted(f"index {index} is compacted")
        if index > self.last_index():
            raise LogUnavailable(f"index {index} is beyond the last index {self.last_index()}")
        term = self.unstable.maybe_term(index)
        if term is not None:
            return term
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (LogCompacted, LogUnavailable):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (LogCompacted, LogUnavailable):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a log ending at (`term`, `last_index`) is at least as up to date as ours
        (Raft §5.4.1: compare last terms, then lengths)."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    def persisted_index(self) -> int:
        """The last index known durable and part of the current log."""
        if self.unstable.snapshot is not None:
            return 0
        return min(self.storage.last_index(), self.unstable.offset - 1)

    # -- appending -------------------------------------------------------------------------

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """Append `entries` that follow (`log_term`, `index`) if our log matches there.

        Returns the last index now known to match the leader, or None on mismatch (§5.3).
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict != 0:
            if conflict <= self.committed:
                raise InvariantViolation(
                    f"entry {conflict} conflicts with committed entry (committed {self.committed})"
                )
            self.append(list(entries[conflict - index - 1 :]))
        # Only entries known to match the leader may be committed here.
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, entries: list[Entry]) -> int:
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        if after < self.committed:
            raise InvariantViolation(
                f"appending after {after} is below the commit index {self.committed}"
            )
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """Index of the first entry whose term differs from ours, or that we lack; 0 if all
        of `entries` are already in the log."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, with that term.

        Used for fast backtracking: a follower rejecting an append at `index` proposes the
        leader skip every entry of a term the leader's log cannot share.
        """
        while index > 0:
            try:
                our_term = self.term(index)
            except (LogCompacted, LogUnavailable):
                return index, 0
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    # -- commit and apply ------------------------------------------------------------------

    def commit_to(self, index: int) -> None:
        if index <= self.committed:
            return
        if index > self.last_index():
            raise InvariantViolation(
                f"commit index {index} is beyond the last index {self.last_index()}; "
                "was the log corrupted, truncated or lost?"
            )
        self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to `index` if the entry there is from `term` (the leader's current term).

        Raft §5.4.2: a leader never commits entries from earlier terms by counting replicas;
        they are committed indirectly with the first current-term entry.
        """
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if index > self.committed or index < self.applied:
            raise InvariantViolation(
                f"applied index {index} out of range [applied {self.applied}, "
                f"committed {self.committed}]"
            )
        self.applied = index

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet applied, bounded by `max_applying_size` bytes."""
        if self.has_pending_snapshot():
            # The snapshot must be installed before anything after it is applied.
            return []
        low = max(self.applied + 1, self.first_index())
        high = self.committed + 1
        if low >= high:
            return []
        return self.slice(low, high, self.max_applying_size)

    def has_next_committed_entries(self) -> bool:
        if self.has_pending_snapshot():
            return False
        return self.committed > max(self.applied, self.first_index() - 1)

    # -- reading ---------------------------------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def entries(self, index: int, max_size: int, max_count: int = NO_LIMIT) -> list[Entry]:
        """Entries from `index` on: at most `max_count`, within `max_size` bytes (but at
        least one, if `max_count` allows any)."""
        last_index = self.last_index()
        if index > last_index or max_count <= 0:
            return []
        return self.slice(index, min(last_index + 1, index + max_count), max_size)

    def all_entries(self) -> list[Entry]:
        return self.entries(self.first_index(), NO_LIMIT)

    def slice(self, low: int, high: int, max_size: int) -> list[Entry]:
        """Entries in [low, high) within `max_size` bytes (at least one).

        Raises LogCompacted if `low` is no longer available.
        """
        if low > high:
            raise InvariantViolation(f"invalid slice {low} > {high}")
        first = self.first_index()
        if low < first:
            raise LogCompacted(f"index {low} is compacted (first index {first})")
        if high > self.last_index() + 1:
            raise InvariantViolation(f"slice [{low},{high}) beyond last index {self.last_index()}")
        if low == high:
            return []
        result: list[Entry] = []
        if low < self.unstable.offset:
            stored = self.storage.entries(low, min(high, self.unstable.offset), max_size)
            # Storage returned fewer entries than asked: the size limit was reached.
            if len(stored) < min(high, self.unstable.offset) - low:
                return stored
            result = stored
        if high > self.unstable.offset:
            tail = self.unstable.slice(max(low, self.unstable.offset), high)
            result = [*result, *tail] if result else tail
        return limit_size(result, max_size)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log with `snapshot` (a follower installing a leader's snapshot)."""
        self.committed = snapshot.metadata.index
        self.unstable.restore(snapshot)

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snapshot_to(self, index: int) -> None:
        self.unstable.stable_snapshot_to(index)
