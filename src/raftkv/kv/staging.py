"""`StagedWrites`: `AppData` seen through the writes of the `apply` call in progress.

A state machine applies a whole `apply` call as one `AppBatch`, but each command must see
what the commands before it wrote. `StagedWrites` keeps those writes in memory, answers
`get` and `scan` from them over the committed data, and hands them to `AppData.commit` in
one batch with the applied index.

Savepoints make a request all-or-nothing: `rollback(savepoint)` undoes every write staged
since `savepoint()`, so a request that fails halfway leaves nothing behind.

Invariants: `_pending` maps each staged key to its final value in this batch (None: deleted);
`_undo` holds, per staged write in order, the key and what `_pending` held for it before
(`_UNSTAGED`: nothing). Once a scan has run in this batch, `_sorted_keys` holds the staged
keys sorted, one list per key space (a key's first byte: raftkv.kv.layout's spaces), and
`_spaces` those spaces in order, so that the lists concatenated in that order are
`sorted(_pending)`; before the first scan `_sorted_keys` is None and nothing is kept (most
batches, puts, never scan, and keeping the order cost each staged key a search). From the
first scan on they are kept as each key is staged (a binary search and a list insert)
rather than sorted again for each scan: a request that scans after each write (a
compaction of n keys: a scan, then deletes, per key) would otherwise sort the whole batch n
times, seconds of a blocked loop for 10,000 keys.
One list per space because a request writes each space in key order but interleaves the
spaces (a delete of n keys: an index key, then a history key, per key): in one list every
insert would move the other space's keys, O(n) each, and a delete of 48,000 keys spent half
its second in list inserts; per space each insert lands at the end.
Memory is proportional to the writes of one `apply` call.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence

from raftkv.raft.storage.base import AppBatch, AppData


class _Unstaged(enum.Enum):
    TOKEN = enum.auto()


_UNSTAGED = _Unstaged.TOKEN


class StagedWrites:
    def __init__(self, app: AppData) -> None:
        self.app = app
        self._pending: dict[bytes, bytes | None] = {}
        self._undo: list[tuple[bytes, bytes | _Unstaged | None]] = []
        self._sorted_keys: dict[int, list[bytes]] | None = None
        self._spaces: list[int] = []

    def get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self.app.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with start <= key < end in key order, staged writes over committed data.
        Writes staged while the scan runs are not seen by it."""
        if not self._pending:
            return self.app.scan(start, end)
        pending = self._pending
        sorted_keys = self._sorted_keys
        if sorted_keys is None:
            sorted_keys = self._sorted_keys = {}
            for key in sorted(pending):
                sorted_keys.setdefault(_space(key), []).append(key)
            self._spaces = sorted(sorted_keys)
        staged = [
            (key, pending[key])
            for space in self._spaces
            for keys in (sorted_keys[space],)
            for key in keys[bisect_left(keys, start) : bisect_left(keys, end)]
        ]
        return _merge(self.app.scan(start, end), staged)

    def put(self, key: bytes, value: bytes) -> None:
        self._stage(key, value)

    def delete(self, key: bytes) -> None:
        self._stage(key, None)

    def savepoint(self) -> int:
        return len(self._undo)

    def rollback(self, savepoint: int) -> None:
        """Undo every write staged since `savepoint` was taken."""
        while len(self._undo) > savepoint:
            key, previous = self._undo.pop()
            if previous is _UNSTAGED:
                del self._pending[key]
                if self._sorted_keys is not None:
                    keys = self._sorted_keys[_space(key)]
                    del keys[bisect_left(keys, key)]
            else:
                self._pending[key] = previous

    def commit(self, applied_index: int, applied_term: int) -> None:
        """Write everything staged, with the applied index, in one atomic AppData commit."""
        batch = AppBatch()
        for key, value in self._pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.app.commit(batch, applied_index, applied_term)
        self._pending.clear()
        self._undo.clear()
        self._sorted_keys = None
        self._spaces = []

    def _stage(self, key: bytes, value: bytes | None) -> None:
        previous = self._pending.get(key, _UNSTAGED)
        self._undo.append((key, previous))
        sorted_keys = self._sorted_keys
        if previous is _UNSTAGED and sorted_keys is not None:
            space = _space(key)
            keys = sorted_keys.get(space)
            if keys is None:
                keys = sorted_keys[space] = []
                insort(self._spaces, space)
            if not keys or keys[-1] < key:
                keys.append(key)  # the common case: each space written in key order
            else:
                insort(keys, key)
        self._pending[key] = value


def _space(key: bytes) -> int:
    """The key space of `key`: its first byte (-1: the empty key, first of all)."""
    return key[0] if key else -1


def _merge(
    committed: Iterator[tuple[bytes, bytes]], staged: Sequence[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    """Both sorted streams merged; a staged entry replaces the committed one of its key,
    and a staged delete (None) hides it."""
    position = 0
    for key, value in committed:
        while position < len(staged) and staged[position][0] < key:
            yield from _live(staged[position])
            position += 1
        if position < len(staged) and staged[position][0] == key:
            yield from _live(staged[position])
            position += 1
        else:
            yield key, value
    for item in staged[position:]:
        yield from _live(item)


def _live(item: tuple[bytes, bytes | None]) -> Iterator[tuple[bytes, bytes]]:
    key, value = item
    if value is not None:
        yield key, value
