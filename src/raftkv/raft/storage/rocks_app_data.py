"""The application's keyspace in a RocksStorage's database: `RocksAppData`, its read views
and its checkpoints.

Keys are stored as given in the app_data column family, values as blob records, so a
damaged value is reported on read. The applied (index, term) is raft_state's raft_applied,
written in the same batch as the data it covers (rocks_database.py has the layout).

Durability: `commit` never syncs, `replace_all` always does (each method says why).

Threading (base.py): the driver commits from one thread while others read. A read view
(`RocksAppData.read_view`) is taken on the event loop and read by one worker thread: it
sees the database as of when it was taken, whatever is written meanwhile. A checkpoint
(`RocksAppData.freeze`) is read later from any thread, as its own database.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import cast

from rocksdict import Checkpoint, RdictIter, WriteBatch

from raftkv.raft.storage.base import AppBatch, StorageClosed
from raftkv.raft.storage.records import RecordInvalid, decode_blob, encode_blob, encode_index_term
from raftkv.raft.storage.rocks_database import (
    APP_DATA_FAMILY,
    APPLIED_KEY,
    RocksDatabase,
    family_items,
    get_record,
    last_key_of,
)

__all__ = [
    "CheckpointView",
    "RocksAppData",
    "RocksReadView",
    "remove_stale_checkpoints",
]

# A scan reads this many items per RocksDB iterator (see RocksAppData.scan).
_SCAN_PAGE_SIZE = 1024


def _describe_app_key(key: bytes) -> str:
    shown = repr(key[:64])
    return f"key {shown}..." if len(key) > 64 else f"key {shown}"


_checkpoint_numbers = itertools.count(1)


class CheckpointView:
    """A FrozenAppData over a RocksDB checkpoint: opened (as its own database, read as an
    application keyspace) on the first scan, in whatever thread calls it; closed and
    deleted by `close`, from any thread: a scan under way then stops at its next page
    (StorageClosed) instead of reading the whole checkpoint to the end (a hash check of a
    large store would otherwise hold a stopping node for minutes)."""

    def __init__(self, path: Path, applied: tuple[int, int]) -> None:
        self.path = path
        self.applied = applied
        self._closed = False
        self._database: RocksDatabase | None = None

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        if self._closed:
            raise StorageClosed(f"the checkpoint at {self.path} is closed")
        database = RocksDatabase(os.path.realpath(self.path), create=False)
        self._database = database
        try:
            yield from RocksAppData(database, self.applied).scan()
        finally:
            database.close()

    def close(self) -> None:
        self._closed = True
        if self._database is not None:
            self._database.close()
        shutil.rmtree(self.path, ignore_errors=True)


# How many keys a count steps between two looks at whether its view was closed.
_CLOSED_CHECK_STEPS = 4096


class RocksReadView:
    """An AppReadView over RocksDB iterators. A RocksDB iterator reads the database as it
    was when the iterator was made (an implicit snapshot), however long it is kept and
    wherever it is moved, and rocksdict lets another thread move it. (rocksdict's own
    `Snapshot` would be the obvious tool, but in 0.3 its iterators ignore the snapshot;
    only its point reads honour it.)

    Two iterators, so that point reads between the steps of a scan (a range reading each
    key's value) do not move the scan's; a scan that finds its iterator moved anyway (by
    another scan) seeks back past the last key it yielded. An iterator keeps the database
    open (its LOCK held), so `close` drops them, and each step of a get or scan checks it
    first; the database closes every view it still has when it closes.
    """

    def __init__(self, database: RocksDatabase, scanner: RdictIter, getter: RdictIter) -> None:
        self._database = database
        self._scanner: RdictIter | None = scanner
        self._getter: RdictIter | None = getter
        # The scan that last moved `_scanner` (see the class docstring).
        self._scan_owner = 0

    def get(self, key: bytes) -> bytes | None:
        iterator = self._iterator(self._getter)
        iterator.seek(key)
        if not iterator.valid() or iterator.key() != key:
            return None
        return self._decode(key, iterator.value())

    def scan(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        self._iterator(self._scanner)  # fail now, not at the first next()
        self._scan_owner += 1
        return self._scan(start, end, self._scan_owner)

    def count(self, start: bytes, end: bytes) -> int:
        """AppReadView.count: steps the scan iterator over the keys, never reading a value
        (a scan under way seeks back, as after another scan)."""
        iterator = self._iterator(self._scanner)
        self._scan_owner += 1
        iterator.seek(start)
        count = 0
        while iterator.valid() and iterator.key() < end:
            count += 1
            if count % _CLOSED_CHECK_STEPS == 0 and self._scanner is None:
                self._iterator(None)  # closed meanwhile: raises
            iterator.next()
        return count

    def close(self) -> None:
        self._scanner = self._getter = None

    def _iterator(self, iterator: RdictIter | None) -> RdictIter:
        if iterator is None:
            raise StorageClosed(
                f"a read view of the RocksDB database at {self._database.path} is closed"
            )
        return iterator

    def _scan(self, start: bytes, end: bytes | None, owner: int) -> Iterator[tuple[bytes, bytes]]:
        iterator = self._iterator(self._scanner)
        iterator.seek(start)
        # The seek moved the iterator under any scan already under way: they seek back.
        self._scan_owner = owner
        while True:
            if self._scanner is None:
                self._iterator(None)  # closed meanwhile: raises
            if not iterator.valid():
                return
            key: bytes = iterator.key()
            if end is not None and key >= end:
                return
            yield key, self._decode(key, iterator.value())
            if self._scan_owner != owner:
                # Another scan moved the iterator: resume after `key`.
                self._scan_owner = owner
                iterator.seek(key + b"\x00")
            else:
                iterator.next()

    def _decode(self, key: bytes, record: bytes) -> bytes:
        try:
            return decode_blob(record)
        except RecordInvalid as error:
            where = _describe_app_key(key)
            raise self._database.corrupt(APP_DATA_FAMILY, where, str(error)) from error


def remove_stale_checkpoints(database_path: str) -> None:
    """Checkpoints left by a crash while a snapshot was being built are garbage."""
    shutil.rmtree(database_path + ".checkpoints", ignore_errors=True)


class RocksAppData:
    """`AppData` in the app_data column family of a RocksStorage's database.

    Keys are stored as given; values as blob records, so a damaged value is reported on
    read. The applied (index, term) is raft_state's raft_applied, written in the same batch
    as the data it covers.
    """

    def __init__(self, database: RocksDatabase, applied: tuple[int, int]) -> None:
        self._database = database
        # Invariant: what raft_applied holds; replaced only after the batch writing it lands.
        self._applied = applied

    def applied(self) -> tuple[int, int]:
        self._database.handles()
        return self._applied

    def get(self, key: bytes) -> bytes | None:
        record = get_record(self._database.handles().app, key)
        if record is None:
            return None
        return self._database.decode(APP_DATA_FAMILY, _describe_app_key(key), decode_blob, record)

    def scan(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """AppData.scan. Reads a page of items per RocksDB iterator and resumes after the
        last key it yielded, so no iterator stays open between calls (it would hold the
        database open). Interleaved with writes, a scan yields each key once, in increasing
        order; it may or may not see what was written after it started."""
        self._database.handles()  # fail now, not at the first next()
        return self._scan(start, end)

    def last(self, start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        iterator = self._database.handles().app.iter()
        # seek_for_prev lands on the greatest key <= its argument; `end` itself is excluded.
        iterator.seek_for_prev(end)
        if iterator.valid() and iterator.key() == end:
            iterator.prev()
        if not iterator.valid():
            return None
        key = cast("bytes", iterator.key())
        if key < start:
            return None
        record = cast("bytes", iterator.value())
        value = self._database.decode(APP_DATA_FAMILY, _describe_app_key(key), decode_blob, record)
        return key, value

    def _scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        while True:
            page = [
                (
                    key,
                    self._database.decode(
                        APP_DATA_FAMILY, _describe_app_key(key), decode_blob, record
                    ),
                )
                for key, record in islice(
                    family_items(self._database.handles().app, start, end), _SCAN_PAGE_SIZE
                )
            ]
            yield from page
            if len(page) < _SCAN_PAGE_SIZE:
                return
            # The smallest key greater than the last one yielded.
            start = page[-1][0] + b"\x00"

    def commit(self, batch: AppBatch, applied_index: int, applied_term: int) -> None:
        """AppData.commit, as one RocksDB write batch with raft_applied.

        Not synced: the driver applies only entries already durable in the log, and the
        data and applied index land together, so a crash that loses this write loses both,
        and the node replays those entries from the log. The entries are still there:
        `compact` never passes the latest snapshot, which is synced (and by the prefix
        property carries every commit before it)."""
        with self._database.write_lock:
            handles = self._database.handles()
            write = WriteBatch(raw_mode=True)
            for start, end in batch.delete_ranges:
                # An empty range deletes nothing. RocksDB refuses a reversed one, and then
                # every later write, so it never reaches RocksDB.
                if start < end:
                    write.delete_range(start, end, handles.app_handle)
            for key in batch.deletes:
                write.delete(key, handles.app_handle)
            for key, value in batch.puts:
                write.put(key, encode_blob(value), handles.app_handle)
            write.put(
                APPLIED_KEY, encode_index_term(applied_index, applied_term), handles.state_handle
            )
            self._database.write(write, sync=False)
            self._applied = (applied_index, applied_term)

    def read_view(self) -> RocksReadView:
        """SupportsReadView.read_view: a view over two RocksDB iterators made now (one
        for scans, one for point reads). Without the write lock (a snapshot's writer holds
        it through its fsync): a RocksDB write batch is seen whole or not at all, and the
        app space's batches are committed by the thread that takes views, between two of
        them."""
        handles = self._database.handles()
        view = RocksReadView(self._database, handles.app.iter(), handles.app.iter())
        self._database.add_view(view)
        return view

    def freeze(self) -> CheckpointView:
        """AppData.freeze: a RocksDB checkpoint of the database (hard links to its
        immutable files, plus a flush of the memtable) in a sibling directory, read later
        from any thread. Taken under the write lock, so it holds whole commits only, and
        `applied` is the index they reach."""
        with self._database.write_lock:
            handles = self._database.handles()
            directory = Path(self._database.path + ".checkpoints")
            directory.mkdir(exist_ok=True)
            target = directory / f"{self._applied[0]}-{next(_checkpoint_numbers)}"
            Checkpoint(handles.database).create_checkpoint(str(target))
            return CheckpointView(target, self._applied)

    def replace_all(
        self, items: Iterator[tuple[bytes, bytes]], applied_index: int, applied_term: int
    ) -> None:
        """AppData.replace_all, as one RocksDB write batch. Synced: a restore follows a
        snapshot install that discarded the log, so there would be nothing to replay."""
        with self._database.write_lock:
            handles = self._database.handles()
            write = WriteBatch(raw_mode=True)
            last_key = last_key_of(handles.app)
            if last_key is not None:
                # No key sorts after every other: delete up to the last key, then that key.
                write.delete_range(b"", last_key, handles.app_handle)
                write.delete(last_key, handles.app_handle)
            for key, value in items:
                write.put(key, encode_blob(value), handles.app_handle)
            write.put(
                APPLIED_KEY, encode_index_term(applied_index, applied_term), handles.state_handle
            )
            self._database.write(write, sync=True)
            self._applied = (applied_index, applied_term)
