"""Watch events, read back from the MVCC history.

The store already keeps what a watch needs: the revision log (b"r" revision -> the keys
changed at it) and each key's history entry at that revision. So the events of any
revision above the compacted one can be rebuilt at any time, and a watch can start from, or
resume at, any retained revision without the apply path doing any work for it. Of the
compacted revision itself the log keeps the puts only (layout.py): their events, as etcd
gives a watch from its compaction revision.

`EventReader` reads committed data (`AppData`, not the staged writes of an apply in
progress): watches read between two `apply` calls, on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import msgspec

from raftkv.kv.commands import MvccKeyValue
from raftkv.kv.layout import (
    HistoryRecord,
    decode_integer,
    decode_record,
    escape,
    history_key,
    revision_key,
    split_history_key,
)
from raftkv.raft.storage.base import AppData, StorageCorrupt

_HISTORY_DECODER = msgspec.msgpack.Decoder(HistoryRecord)
_KEYS_DECODER = msgspec.msgpack.Decoder(list[bytes])

EventType = Literal["put", "delete"]


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    # For a delete: the key, mod_revision = the delete's revision, zeros elsewhere (etcd).
    kv: MvccKeyValue
    prev_kv: MvccKeyValue | None = None


@dataclass(frozen=True, slots=True)
class RevisionEvents:
    """Every change made at one revision, in the order the request made them."""

    revision: int
    events: tuple[Event, ...]

    def size(self) -> int:
        """Roughly the bytes it holds (keys and values), for cache bounds."""
        return sum(len(event.kv.key) + len(event.kv.value) + 64 for event in self.events)


class EventReader:
    def __init__(self, app: AppData) -> None:
        self.app = app

    def revisions(self, start: int, end: int) -> Iterator[RevisionEvents]:
        """The events of each revision in [start, end], in order. The caller makes sure
        `start` is at least the oldest watchable revision (MvccStore.oldest_watch_revision)
        and `end` at most the current one."""
        for stored, data in self.app.scan(revision_key(start), revision_key(end + 1)):
            revision = decode_integer(stored[1:])
            keys: list[bytes] = decode_record(_KEYS_DECODER, stored, data)
            yield RevisionEvents(revision, tuple(self._event(key, revision) for key in keys))

    def previous(self, key: bytes, revision: int) -> MvccKeyValue | None:
        """The key as it was just before `revision` (None if it did not exist then)."""
        escaped = escape(key)
        found = self.app.last(history_key(escaped, 0), history_key(escaped, revision))
        if found is None:
            return None
        stored, data = found
        record = decode_record(_HISTORY_DECODER, stored, data)
        if record.tombstone:
            return None
        mod_revision = split_history_key(stored)[1]
        return MvccKeyValue(
            key, record.value, record.create_revision, mod_revision, record.version, record.lease
        )

    def _event(self, key: bytes, revision: int) -> Event:
        stored = history_key(escape(key), revision)
        data = self.app.get(stored)
        if data is None:
            raise StorageCorrupt(
                f"app_data key {stored[:64]!r}: revision log names a change with no history"
            )
        record = decode_record(_HISTORY_DECODER, stored, data)
        if record.tombstone:
            return Event("delete", MvccKeyValue(key, b"", 0, revision, 0, 0))
        return Event(
            "put",
            MvccKeyValue(
                key, record.value, record.create_revision, revision, record.version, record.lease
            ),
        )
