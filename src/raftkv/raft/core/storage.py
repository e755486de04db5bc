"""The read side of Raft storage, as the core sees it.

The core never writes storage. It reads the durable log through this protocol and hands
new state to its caller in a `Ready`; the caller persists it and calls `advance`.

Contract for implementations:
- Indices are 1-based. `first_index()` is the first entry still available (the one after
  the latest snapshot); `last_index()` may be `first_index() - 1` for an empty log.
- `term(first_index() - 1)` returns the snapshot's term; lower indices raise LogCompacted,
  indices above `last_index()` raise LogUnavailable.
- Calls never block on I/O for long and never mutate state: the core may call them at any
  point during `step`.
"""

from __future__ import annotations

from typing import Protocol

from raftkv.raft.core.types import ConfState, Entry, HardState, Snapshot


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The hard state and membership to start from."""
        ...

    def entries(self, low: int, high: int, max_size: int) -> list[Entry]:
        """Entries in [low, high), at least one if any, at most `max_size` bytes beyond it.

        Raises LogCompacted if `low` is compacted, LogUnavailable if `high` exceeds
        `last_index() + 1`.
        """
        ...

    def term(self, index: int) -> int:
        """Term of the entry at `index` (see the module contract for the bounds)."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot; may raise SnapshotTemporarilyUnavailable."""
        ...
