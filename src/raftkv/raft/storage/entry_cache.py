"""The newest entries of a RocksStorage's log, kept decoded in memory within a budget.

Why: etcd keeps its log in memory. Reading and decoding a record costs microseconds, and a
leader streaming to followers (one catching up from far behind above all) and every node
applying committed entries read what was persisted moments ago. Every cached entry is also
an object Python's full garbage collections walk, hence the budget.

Threading: the storage's writer updates the cache after its batch has landed and before it
publishes the new log bounds, so the cache is never behind the database a reader may see
(rocks.py's docstring); readers on other threads look entries up meanwhile. Every access
holds the cache's own short lock, which is never held across I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from raftkv.raft.core.types import Entry

__all__ = ["CACHED_ENTRY_OVERHEAD_BYTES", "EntryCache"]

# What one cached entry costs beyond its data (the Entry, its bytes object, a list slot),
# measured on CPython 3.11: counted against the budget.
CACHED_ENTRY_OVERHEAD_BYTES = 192


class EntryCache:
    """The newest entries of the log, decoded, within `max_bytes` (0: cache nothing).

    Invariants: `entries` hold the log's entries `first`, `first + 1`, ... through the last
    one `persist` wrote, each equal to its record in the database once that write landed;
    `size` is their data plus CACHED_ENTRY_OVERHEAD_BYTES each, at most `max_bytes` (the
    oldest go first). Every access holds `lock`, which is never held across I/O.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.first = 0
        self.entries: list[Entry] = []
        self.size = 0

    def put(self, entries: Sequence[Entry]) -> None:
        """`persist` wrote `entries` (consecutive), replacing any from their first index
        on. Called once the write landed."""
        if self.max_bytes <= 0 or not entries:
            return
        first_new = entries[0].index
        with self.lock:
            end = self.first + len(self.entries)
            if self.entries and self.first <= first_new <= end:
                replaced = self.entries[first_new - self.first :]
                del self.entries[first_new - self.first :]
                self.size -= _cached_size(replaced)
            else:
                # Not adjacent (the first write, or after a snapshot): start over here.
                self.entries = []
                self.first = first_new
                self.size = 0
            self.entries.extend(entries)
            self.size += _cached_size(entries)
            if self.size > self.max_bytes:
                # Down to 7/8 of the budget, so that eviction (a copy of the list) is
                # not paid on every write.
                self._evict_to(self.max_bytes - self.max_bytes // 8)

    def discard_to(self, index: int) -> None:
        """Entries up to `index` were compacted away."""
        with self.lock:
            count = min(max(index + 1 - self.first, 0), len(self.entries))
            if count:
                self.size -= _cached_size(self.entries[:count])
                del self.entries[:count]
                self.first += count

    def clear(self) -> None:
        with self.lock:
            self.entries = []
            self.size = 0

    def cached_from(self, low: int, high: int) -> int:
        """The lowest index in [low, high) from which on the cache holds every entry up to
        `high` - 1; `high` if it holds none of them."""
        with self.lock:
            end = self.first + len(self.entries)
            if not self.entries or high > end or self.first >= high:
                return high
            return max(low, self.first)

    def term(self, index: int) -> int | None:
        """The term of entry `index`, or None if it is not cached."""
        with self.lock:
            if self.first <= index < self.first + len(self.entries):
                return self.entries[index - self.first].term
            return None

    def slice(self, low: int, high: int) -> list[Entry] | None:
        """Entries [low, high), or None if the cache no longer holds all of them."""
        with self.lock:
            if low < self.first or high > self.first + len(self.entries):
                return None
            return self.entries[low - self.first : high - self.first]

    def _evict_to(self, size: int) -> None:
        count = 0
        for entry in self.entries:
            if self.size <= size:
                break
            self.size -= len(entry.data) + CACHED_ENTRY_OVERHEAD_BYTES
            count += 1
        del self.entries[:count]
        self.first += count


def _cached_size(entries: Sequence[Entry]) -> int:
    return sum(len(entry.data) for entry in entries) + CACHED_ENTRY_OVERHEAD_BYTES * len(entries)
