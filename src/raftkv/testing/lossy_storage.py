"""LossyMemoryStorage: MemoryStorage with a disk's crash semantics.

Every write is visible at once (as through the page cache), but a crash keeps only what a
synced write made durable. As with RocksDB's write-ahead log, a synced write makes every
earlier write durable too, so the durable state is always a prefix of the writes.
LocalCluster calls `lose_unsynced()` when it crashes a node, so the driver simulator
catches a runtime that acknowledges anything before it is fsynced.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.raft.core.types import ConfState, Entry, HardState, Snapshot
from raftkv.raft.storage.memory import MemoryStorage


class LossyMemoryStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self._durable = self._capture()
        self.writes_lost = 0
        self._unsynced = 0

    def _capture(self) -> tuple[HardState, Snapshot, list[Entry]]:
        # A copy: appends extend the live list in place.
        return self.hard_state, self._snapshot, list(self._entries)

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        super().persist(hard_state, entries, snapshot, sync=sync)
        self._written(sync)

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        snapshot = super().create_snapshot(index, conf_state, data)
        self._written(sync=True)  # as RocksStorage, which syncs snapshots
        return snapshot

    def compact(self, compact_index: int) -> None:
        super().compact(compact_index)
        self._written(sync=False)

    def _written(self, sync: bool) -> None:
        if sync:
            self._durable = self._capture()
            self._unsynced = 0
        else:
            self._unsynced += 1

    def lose_unsynced(self) -> None:
        """A crash: forget every write since the last synced one."""
        self.writes_lost += self._unsynced
        self._unsynced = 0
        self.hard_state, self._snapshot, entries = self._durable
        self._entries = list(entries)
