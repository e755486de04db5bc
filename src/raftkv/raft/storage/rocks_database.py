"""The RocksDB database under a RocksStorage: its layout, opening it, its handles, its write
lock, and errors that name the path, column family and key.

Layout (docs/architecture.md#storage), one column family per kind of key; every value is a
checksummed, versioned record (`records.py`):

| column family | key                          | value                                        |
| ------------- | ---------------------------- | -------------------------------------------- |
| raft_log      | index, big-endian u64        | entry: term, index, kind, data               |
| raft_state    | raft_vote                    | hard state: term, vote, commit               |
|               | raft_meta:format_version     | FORMAT_VERSION of this layout                |
|               | raft_meta:compacted          | index, term of the last discarded entry      |
|               | raft_snapshot_meta           | index, term, conf state, data length, sha256 |
|               | raft_applied                 | AppData's applied index, term                |
| raft_snapshot | chunk number, big-endian u32 | ≤ SNAPSHOT_CHUNK_SIZE bytes of snapshot data |
| app_data      | the application's key        | the application's value                      |

The Raft log store (`rocks.py`) owns raft_log, raft_snapshot and raft_state but for
raft_applied; the application's keyspace (`rocks_app_data.py`) owns app_data and
raft_applied. `raft_applied` lives in raft_state rather than app_data so the application
owns its whole key space; one RocksDB write batch spans column families atomically, so it
still lands with the data it covers.

Durability: the database is opened with point-in-time recovery: RocksDB recovers its
write-ahead log up to the first damaged or missing record, so whatever survives a crash is
a prefix of the writes made (the prefix property): an unsynced write can be lost, but never
kept while an earlier write is lost, and a later synced write makes it durable too.

rocksdict keeps a database open (its LOCK file held) while any column family object or
iterator of it is alive. So every handle lives in `Handles`, dropped whole by
`RocksDatabase.close`, and no iterator outlives the call that made it, but a read view's,
which the database closes when it closes.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from rocksdict import (
    ColumnFamily,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from raftkv.raft.storage.base import StorageClosed, StorageCorrupt
from raftkv.raft.storage.records import (
    RecordInvalid,
    decode_format_version,
    encode_format_version,
)

__all__ = [
    "APPLIED_KEY",
    "APP_DATA_FAMILY",
    "COMPACTED_KEY",
    "FIRST_KEY",
    "FORMAT_VERSION",
    "LOG_FAMILY",
    "PAST_LAST_KEY",
    "SNAPSHOT_FAMILY",
    "SNAPSHOT_META_KEY",
    "STATE_FAMILY",
    "VOTE_KEY",
    "Handles",
    "ReadView",
    "RocksDatabase",
    "StorageOpenError",
    "family_items",
    "first_key_of",
    "get_record",
    "last_key_of",
]

# The layout version of the database, stored under raft_meta:format_version. A database of
# a newer version is refused rather than misread.
FORMAT_VERSION = 1

LOG_FAMILY = "raft_log"
STATE_FAMILY = "raft_state"
SNAPSHOT_FAMILY = "raft_snapshot"
APP_DATA_FAMILY = "app_data"
_FAMILIES = (LOG_FAMILY, STATE_FAMILY, SNAPSHOT_FAMILY, APP_DATA_FAMILY)

# The keys of raft_state (see the layout).
VOTE_KEY = b"raft_vote"
FORMAT_VERSION_KEY = b"raft_meta:format_version"
COMPACTED_KEY = b"raft_meta:compacted"
SNAPSHOT_META_KEY = b"raft_snapshot_meta"
APPLIED_KEY = b"raft_applied"

# A range covering every key of the fixed-width key spaces (8-byte log keys, 4-byte chunk
# keys): the empty key sorts first, and nine 0xff bytes after any shorter key.
FIRST_KEY = b""
PAST_LAST_KEY = b"\xff" * 9

_T = TypeVar("_T")


class StorageOpenError(Exception):
    """The database could not be opened: it is missing (with `create=False`), already open,
    written by a newer raftkv, or RocksDB refused it. The message says which; `in_use`:
    another process holds it (RocksDB's LOCK file); `damaged`: RocksDB found its files
    corrupt (a MANIFEST, a table); `denied`: the files are not writable by this process —
    what to do about any of them is the caller's to say."""

    def __init__(
        self, message: str, *, in_use: bool = False, damaged: bool = False, denied: bool = False
    ) -> None:
        super().__init__(message)
        self.in_use = in_use
        self.damaged = damaged
        self.denied = denied


class ReadView(Protocol):
    """A reader holding iterators of the database (they keep it open): closed with it."""

    def close(self) -> None: ...


# Real paths of the databases open in this process, to refuse a second open with a clear
# error instead of RocksDB's lock error.
_open_paths: set[str] = set()
_open_paths_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Handles:
    """The open database: a raw-mode Rdict per column family for reads, and the column
    family handles that write batches address."""

    database: Rdict
    log: Rdict
    state: Rdict
    snapshot: Rdict
    app: Rdict
    log_handle: ColumnFamily
    state_handle: ColumnFamily
    snapshot_handle: ColumnFamily
    app_handle: ColumnFamily


def _options() -> Options:
    # raw_mode: keys and values are bytes in and bytes out. rocksdict would otherwise pickle
    # anything that is not bytes; in raw mode it refuses it.
    options = Options(raw_mode=True)
    # Point-in-time recovery keeps the prefix property the module docstring relies on.
    options.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    return options


def family_items(family: Rdict, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) with start <= key < end (end None: to the last key), in key order."""
    options = ReadOptions()
    if end is not None:
        options.set_iterate_upper_bound(end)
    # rocksdict reads the bound through `options` while iterating (and iterates past it
    # once `options` is freed), so this generator holds it until the iteration is over.
    # Raw mode: keys and values are bytes.
    yield from cast("Iterator[tuple[bytes, bytes]]", family.items(from_key=start, read_opt=options))


def get_record(family: Rdict, key: bytes) -> bytes | None:
    return cast("bytes | None", family.get(key))


def first_key_of(family: Rdict) -> bytes | None:
    iterator = family.iter()
    iterator.seek_to_first()
    return cast("bytes", iterator.key()) if iterator.valid() else None


def last_key_of(family: Rdict) -> bytes | None:
    iterator = family.iter()
    iterator.seek_to_last()
    return cast("bytes", iterator.key()) if iterator.valid() else None


class RocksDatabase:
    """The open RocksDB database shared by the Raft log store and the application's
    keyspace: handles, the write lock, and errors that name the path, column family and
    key. Opening checks the format version (and writes it into a new database).
    """

    def __init__(self, path: str, *, create: bool) -> None:
        self.path = path
        # Serialises every write and `close`, and a reader's retry (rocks.py's docstring).
        # A Raft log persist releases it for its fsync; a snapshot's write holds it through.
        self.write_lock = threading.Lock()
        # Read views not closed yet: `close` closes them, so none keeps the database open.
        # Guarded by their own lock, never held while waiting on I/O (unlike write_lock,
        # held through a snapshot's fsync), so that making a view never waits for a write.
        self._views: weakref.WeakSet[ReadView] = weakref.WeakSet()
        self._views_lock = threading.Lock()
        # Held by compact_files, and by close: a manual compaction never outlives the
        # database it runs on.
        self._maintenance_lock = threading.Lock()
        self._no_sync = WriteOptions()
        self._no_sync.sync = False
        if not create and not os.path.exists(path):
            # Checked here because RocksDB would create the directory before refusing.
            raise StorageOpenError(f"there is no RocksDB database at {path} (create=False)")
        with _open_paths_lock:
            if path in _open_paths:
                raise StorageOpenError(
                    f"the RocksDB database at {path} is already open in this process"
                )
            _open_paths.add(path)
        # Gives the path back however this object ends: close, a failed open, or collection.
        self._release_path = weakref.finalize(self, _open_paths.discard, path)
        options = _options()
        options.create_if_missing(create)
        options.create_missing_column_families(create)
        try:
            database = Rdict(
                path, options, column_families={name: _options() for name in _FAMILIES}
            )
        except Exception as error:  # rocksdict raises a bare Exception with RocksDB's status
            self._release_path()
            status = " ".join(str(error).split())
            if "lock file" in status.lower() and "temporarily unavailable" in status:
                raise StorageOpenError(
                    f"the RocksDB database at {path} is in use by another process",
                    in_use=True,
                ) from error
            raise StorageOpenError(
                f"cannot open the RocksDB database at {path}: {status}",
                damaged=status.startswith("Corruption:"),
                denied="Permission denied" in status,
            ) from error
        self._handles: Handles | None = Handles(
            database=database,
            log=database.get_column_family(LOG_FAMILY),
            state=database.get_column_family(STATE_FAMILY),
            snapshot=database.get_column_family(SNAPSHOT_FAMILY),
            app=database.get_column_family(APP_DATA_FAMILY),
            log_handle=database.get_column_family_handle(LOG_FAMILY),
            state_handle=database.get_column_family_handle(STATE_FAMILY),
            snapshot_handle=database.get_column_family_handle(SNAPSHOT_FAMILY),
            app_handle=database.get_column_family_handle(APP_DATA_FAMILY),
        )
        try:
            self._check_format_version()
        except BaseException:
            self.close()
            raise

    def handles(self) -> Handles:
        handles = self._handles
        if handles is None:
            raise StorageClosed(f"the RocksDB database at {self.path} is closed")
        return handles

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        """Write `batch`; with `sync`, durable when this returns (`sync_log`)."""
        # A write that fails is not retried: RocksDB may refuse every later one (it does
        # after a batch it rejects), and the node must stop.
        self.handles().database.write(batch, self._no_sync)
        if sync:
            self.sync_log()

    def sync_log(self) -> None:
        """Make every write made so far durable: RocksDB's FlushWAL(sync=true), which syncs
        every write-ahead log file not synced yet.

        Why not a synced write: rocksdict holds the GIL through `write`, so a synced one
        stops every thread of the process for the fsync (~0.2-3 ms), the event loop
        included; `flush_wal` releases it. The difference: a synced write is seen by
        readers only once durable, a write synced after is seen before. Every caller
        reports durability only after this returns (the Raft log's readers read entries
        the driver already saw persisted), so none acts on what may still be lost.
        Durability is the same: what survives a crash is still a prefix of the writes."""
        self.handles().database.flush_wal(True)

    def add_view(self, view: ReadView) -> None:
        with self._views_lock:
            self._views.add(view)

    def compact_files(self) -> None:
        """Compact every column family's files whole (RocksDB's manual compaction): the
        space of deleted, overwritten and compacted-away data is given back now, not when
        the background compactions reach it (etcd's defragmentation). Blocking, seconds
        for a large database: call it on a worker thread. Writes and reads go on meanwhile
        (RocksDB allows it); `close` waits for it to end."""
        with self._maintenance_lock:
            handles = self.handles()
            for family in (handles.log, handles.state, handles.snapshot, handles.app):
                family.compact_range(None, None)

    def close(self) -> None:
        with self._maintenance_lock, self.write_lock:
            with self._views_lock:
                views = list(self._views)
            for view in views:
                view.close()
            handles, self._handles = self._handles, None
            if handles is not None:
                handles.database.close()
            self._release_path()

    def corrupt(self, family: str, key: str, reason: str) -> StorageCorrupt:
        return StorageCorrupt(f"corrupt record in {self.path}: {family} {key}: {reason}")

    def decode(self, family: str, key: str, decode: Callable[[bytes], _T], record: bytes) -> _T:
        try:
            return decode(record)
        except RecordInvalid as error:
            raise self.corrupt(family, key, str(error)) from error

    def read_state(self, key: bytes, decode: Callable[[bytes], _T], default: _T) -> _T:
        record = get_record(self.handles().state, key)
        if record is None:
            return default
        return self.decode(STATE_FAMILY, key.decode(), decode, record)

    def _check_format_version(self) -> None:
        handles = self.handles()
        record = get_record(handles.state, FORMAT_VERSION_KEY)
        if record is None:
            families = (handles.log, handles.state, handles.snapshot, handles.app)
            if any(first_key_of(family) is not None for family in families):
                raise self.corrupt(
                    STATE_FAMILY, FORMAT_VERSION_KEY.decode(), "missing in a database with data"
                )
            batch = WriteBatch(raw_mode=True)
            batch.put(
                FORMAT_VERSION_KEY, encode_format_version(FORMAT_VERSION), handles.state_handle
            )
            self.write(batch, sync=True)
            return
        version = self.decode(
            STATE_FAMILY, FORMAT_VERSION_KEY.decode(), decode_format_version, record
        )
        if version > FORMAT_VERSION:
            raise StorageOpenError(
                f"the RocksDB database at {self.path} has format version {version}; this "
                f"raftkv reads version {FORMAT_VERSION} and older: upgrade raftkv"
            )
        if version != FORMAT_VERSION:
            raise self.corrupt(
                STATE_FAMILY, FORMAT_VERSION_KEY.decode(), f"no format version {version} exists"
            )
