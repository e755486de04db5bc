"""RocksStorage: `RaftStorage` and `AppData` on one RocksDB database per node (rocksdict).

Layout (ARCHITECTURE.md §2.3), one column family per kind of key; every value is a
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

`raft_applied` lives in raft_state rather than app_data so the application owns its whole
key space; one RocksDB write batch spans column families atomically, so it still lands
with the data it covers.

Invariants (checked when the database is opened, where that is cheap):
- the log holds exactly the indices compacted + 1 .. last index (its first and last keys
  are checked on open, a hole is reported when a read reaches it);
- compacted index <= snapshot index: `compact` never passes the latest snapshot;
- the snapshot chunks are numbered 0, 1, ... and their bytes match the length and sha256 in
  raft_snapshot_meta (checked by `snapshot()`);
- the database holds at least the term, vote and commit index recorded in the durability
  watermark beside it (`watermark.py`): a write-ahead log cut back past them raises
  StateRolledBack at open instead of silently opening an older state.

Durability: `persist` syncs when asked, `create_snapshot` and `AppData.replace_all` always
sync, `compact` and `AppData.commit` never do. RocksDB recovers its write-ahead log up to
the first damaged or missing record (point-in-time recovery), so whatever survives a crash
is a prefix of the writes made: an unsynced write can be lost, but never kept while an
earlier write is lost, and a later synced write makes it durable too.

Entries: the newest entries of the log are also kept decoded in memory (`_EntryCache`, up
to `entry_cache_bytes`), as etcd keeps its log in memory: reading and decoding a record
costs microseconds, and a leader streaming to followers (one catching up from far behind
above all) and every node applying committed entries read what was persisted moments ago.

Threading (base.py): one writer thread calls `persist` / `create_snapshot` (the driver also
compacts from its event loop) while the event loop reads. Reads are lock-free: they answer
bounds, terms and the hard state from `_Cache`, which a writer replaces whole after its
batch has landed. A read that overlaps a write can therefore find the database one write
ahead of the cache (an entry deleted, snapshot chunks replaced); it sees that as a record
missing or inconsistent, and repeats itself once under the write lock, when database and
cache agree. Only a second failure is reported as corruption. The entry cache is updated
between the two (after the batch lands, before `_Cache` is replaced), so it is never behind
the database a reader may see; its own short lock is never held across I/O. A read view
(`RocksAppData.read_view`) is taken on the event loop and read by one worker thread: it
sees the database as of when it was taken, whatever is written meanwhile.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar, cast

from rocksdict import (
    Checkpoint,
    ColumnFamily,
    DBRecoveryMode,
    Options,
    Rdict,
    RdictIter,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from raftkv.raft.core.errors import (
    InvalidArgument,
    InvariantViolation,
    LogCompacted,
    LogUnavailable,
    SnapshotOutOfDate,
)
from raftkv.raft.core.log import limit_size
from raftkv.raft.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.raft.storage.base import AppBatch, StorageClosed, StorageCorrupt
from raftkv.raft.storage.records import (
    EMPTY_STORED_SNAPSHOT,
    RecordInvalid,
    StoredSnapshot,
    decode_blob,
    decode_entry,
    decode_format_version,
    decode_hard_state,
    decode_index_key,
    decode_index_term,
    decode_stored_snapshot,
    encode_blob,
    encode_chunk_key,
    encode_entry,
    encode_format_version,
    encode_hard_state,
    encode_index_key,
    encode_index_term,
    encode_stored_snapshot,
)
from raftkv.raft.storage.watermark import DurabilityWatermark

__all__ = [
    "DEFAULT_ENTRY_CACHE_BYTES",
    "FORMAT_VERSION",
    "SNAPSHOT_CHUNK_SIZE",
    "RocksAppData",
    "RocksStorage",
    "StorageOpenError",
]

# The layout version of the database, stored under raft_meta:format_version. A database of
# a newer version is refused rather than misread.
FORMAT_VERSION = 1
SNAPSHOT_CHUNK_SIZE = 1 << 20
# A scan reads this many items per RocksDB iterator (see RocksAppData.scan).
_SCAN_PAGE_SIZE = 1024
# The default budget of the entry cache: about 40 k entries of 16-byte commands, or 8 MiB of
# large ones. Larger serves followers further behind from memory, but every cached entry is
# an object Python's full garbage collections walk (170 k of them add ~25 ms to each).
DEFAULT_ENTRY_CACHE_BYTES = 8 << 20
# What one cached entry costs beyond its data (the Entry, its bytes object, a list slot),
# measured on CPython 3.11: counted against entry_cache_bytes.
_CACHED_ENTRY_OVERHEAD_BYTES = 192

_LOG_FAMILY = "raft_log"
_STATE_FAMILY = "raft_state"
_SNAPSHOT_FAMILY = "raft_snapshot"
_APP_DATA_FAMILY = "app_data"
_FAMILIES = (_LOG_FAMILY, _STATE_FAMILY, _SNAPSHOT_FAMILY, _APP_DATA_FAMILY)

_VOTE_KEY = b"raft_vote"
_FORMAT_VERSION_KEY = b"raft_meta:format_version"
_COMPACTED_KEY = b"raft_meta:compacted"
_SNAPSHOT_META_KEY = b"raft_snapshot_meta"
_APPLIED_KEY = b"raft_applied"

# A range covering every key of the fixed-width key spaces (8-byte log keys, 4-byte chunk
# keys): the empty key sorts first, and nine 0xff bytes after any shorter key.
_FIRST_KEY = b""
_PAST_LAST_KEY = b"\xff" * 9

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StorageOpenError(Exception):
    """The database could not be opened: it is missing (with `create=False`), already open,
    written by a newer raftkv, or RocksDB refused it. The message says which."""


# -- the database ----------------------------------------------------------------------------

# Real paths of the databases open in this process, to refuse a second open with a clear
# error instead of RocksDB's lock error.
_open_paths: set[str] = set()
_open_paths_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Handles:
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


def _items(family: Rdict, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) with start <= key < end (end None: to the last key), in key order."""
    options = ReadOptions()
    if end is not None:
        options.set_iterate_upper_bound(end)
    # rocksdict reads the bound through `options` while iterating (and iterates past it
    # once `options` is freed), so this generator holds it until the iteration is over.
    # Raw mode: keys and values are bytes.
    yield from cast("Iterator[tuple[bytes, bytes]]", family.items(from_key=start, read_opt=options))


def _get(family: Rdict, key: bytes) -> bytes | None:
    return cast("bytes | None", family.get(key))


def _first_key(family: Rdict) -> bytes | None:
    iterator = family.iter()
    iterator.seek_to_first()
    return cast("bytes", iterator.key()) if iterator.valid() else None


def _last_key(family: Rdict) -> bytes | None:
    iterator = family.iter()
    iterator.seek_to_last()
    return cast("bytes", iterator.key()) if iterator.valid() else None


class _Database:
    """The open RocksDB database shared by RocksStorage and RocksAppData: handles, the
    write lock, and errors that name the path, column family and key.

    rocksdict keeps a database open (its LOCK file held) while any column family object or
    iterator of it is alive. So every handle lives in `_handles`, dropped whole by `close`,
    and no iterator outlives the call that made it.
    """

    def __init__(self, path: str, *, create: bool) -> None:
        self.path = path
        # Serialises every write and `close`, and a reader's retry (module docstring).
        self.write_lock = threading.Lock()
        # Read views not closed yet: `close` closes them, so none keeps the database open.
        # Guarded by their own lock, never held while waiting on I/O (unlike write_lock,
        # held through fsyncs), so that making a view never waits for a write.
        self._views: weakref.WeakSet[RocksReadView] = weakref.WeakSet()
        self._views_lock = threading.Lock()
        self._sync = WriteOptions()
        self._sync.sync = True
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
            raise StorageOpenError(
                f"cannot open the RocksDB database at {path}: {error}"
            ) from error
        self._handles: _Handles | None = _Handles(
            database=database,
            log=database.get_column_family(_LOG_FAMILY),
            state=database.get_column_family(_STATE_FAMILY),
            snapshot=database.get_column_family(_SNAPSHOT_FAMILY),
            app=database.get_column_family(_APP_DATA_FAMILY),
            log_handle=database.get_column_family_handle(_LOG_FAMILY),
            state_handle=database.get_column_family_handle(_STATE_FAMILY),
            snapshot_handle=database.get_column_family_handle(_SNAPSHOT_FAMILY),
            app_handle=database.get_column_family_handle(_APP_DATA_FAMILY),
        )

    def handles(self) -> _Handles:
        handles = self._handles
        if handles is None:
            raise StorageClosed(f"the RocksDB database at {self.path} is closed")
        return handles

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        # A write that fails is not retried: RocksDB may refuse every later one (it does
        # after a batch it rejects), and the node must stop.
        self.handles().database.write(batch, self._sync if sync else self._no_sync)

    def add_view(self, view: RocksReadView) -> None:
        with self._views_lock:
            self._views.add(view)

    def close(self) -> None:
        with self.write_lock:
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
        record = _get(self.handles().state, key)
        if record is None:
            return default
        return self.decode(_STATE_FAMILY, key.decode(), decode, record)


# -- Raft storage ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cache:
    """What the read methods answer from memory, for one state of the database.

    Invariants: compacted_index <= snapshot.metadata.index; compacted_index <= last_index;
    last_term is the term at last_index (compacted_term when the log is empty).
    """

    hard_state: HardState
    snapshot: StoredSnapshot
    # The last discarded entry, as MemoryStorage's dummy entry: first index is one above.
    compacted_index: int
    compacted_term: int
    last_index: int
    last_term: int


class _EntryCache:
    """The newest entries of the log, decoded, within a memory budget (module docstring).

    Invariants: `entries` hold the log's entries `first`, `first + 1`, ... through the last
    one `persist` wrote, each equal to its record in the database once that write landed;
    `size` is their data plus _CACHED_ENTRY_OVERHEAD_BYTES each, at most `max_bytes` (the
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
            self.size -= len(entry.data) + _CACHED_ENTRY_OVERHEAD_BYTES
            count += 1
        del self.entries[:count]
        self.first += count


def _cached_size(entries: Sequence[Entry]) -> int:
    return sum(len(entry.data) for entry in entries) + _CACHED_ENTRY_OVERHEAD_BYTES * len(entries)


class RocksStorage:
    """Durable `RaftStorage` in the RocksDB database at `path` (created if missing unless
    `create` is false). Opening validates the format version and loads the cache; a
    damaged record raises StorageCorrupt, a database that cannot be used StorageOpenError.

    `entry_cache_bytes` bounds the memory of the newest entries kept decoded (module
    docstring); more serves followers further behind without reading RocksDB, 0 turns the
    cache off.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        entry_cache_bytes: int = DEFAULT_ENTRY_CACHE_BYTES,
    ) -> None:
        if entry_cache_bytes < 0:
            raise InvalidArgument(f"entry_cache_bytes must be >= 0: {entry_cache_bytes}")
        self._entry_cache = _EntryCache(entry_cache_bytes)
        real_path = os.path.realpath(os.fspath(path))
        remove_stale_checkpoints(real_path)
        self._database = _Database(real_path, create=create)
        try:
            self._check_format_version()
            self._cache = self._load_cache()
            self._watermark = DurabilityWatermark(real_path)
            self._watermark.check(self._cache.hard_state, self._cache.last_index)
            applied = self._database.read_state(_APPLIED_KEY, decode_index_term, (0, 0))
        except BaseException:
            self._database.close()
            raise
        self._app_data = RocksAppData(self._database, applied)

    @property
    def path(self) -> str:
        return self._database.path

    # -- opening ---------------------------------------------------------------------------

    def _check_format_version(self) -> None:
        database = self._database
        handles = database.handles()
        record = _get(handles.state, _FORMAT_VERSION_KEY)
        if record is None:
            families = (handles.log, handles.state, handles.snapshot, handles.app)
            if any(_first_key(family) is not None for family in families):
                raise database.corrupt(
                    _STATE_FAMILY, _FORMAT_VERSION_KEY.decode(), "missing in a database with data"
                )
            batch = WriteBatch(raw_mode=True)
            batch.put(
                _FORMAT_VERSION_KEY, encode_format_version(FORMAT_VERSION), handles.state_handle
            )
            database.write(batch, sync=True)
            return
        version = database.decode(
            _STATE_FAMILY, _FORMAT_VERSION_KEY.decode(), decode_format_version, record
        )
        if version > FORMAT_VERSION:
            raise StorageOpenError(
                f"the RocksDB database at {database.path} has format version {version}; this "
                f"raftkv reads version {FORMAT_VERSION} and older: upgrade raftkv"
            )
        if version != FORMAT_VERSION:
            raise database.corrupt(
                _STATE_FAMILY, _FORMAT_VERSION_KEY.decode(), f"no format version {version} exists"
            )

    def _load_cache(self) -> _Cache:
        database = self._database
        handles = database.handles()
        hard_state = database.read_state(_VOTE_KEY, decode_hard_state, HardState())
        snapshot = database.read_state(
            _SNAPSHOT_META_KEY, decode_stored_snapshot, EMPTY_STORED_SNAPSHOT
        )
        compacted_index, compacted_term = database.read_state(
            _COMPACTED_KEY, decode_index_term, (0, 0)
        )
        if compacted_index > snapshot.metadata.index:
            raise database.corrupt(
                _STATE_FAMILY,
                _COMPACTED_KEY.decode(),
                f"compacted index {compacted_index} is beyond the snapshot at "
                f"{snapshot.metadata.index}",
            )
        last_index, last_term = compacted_index, compacted_term
        first_key = _first_key(handles.log)
        if first_key is not None:
            first_index = self._log_index(first_key)
            if first_index != compacted_index + 1:
                raise database.corrupt(
                    _LOG_FAMILY,
                    f"index {first_index}",
                    f"the log starts at {first_index} but the compacted index is {compacted_index}",
                )
            last_key = _last_key(handles.log)
            assert last_key is not None  # the log is not empty
            last_index = self._log_index(last_key)
            record = _get(handles.log, last_key)
            assert record is not None  # nothing writes to a database being opened
            last_term = self._decode_entry(last_index, record).term
        return _Cache(hard_state, snapshot, compacted_index, compacted_term, last_index, last_term)

    # -- Storage protocol (reads) ----------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        self._database.handles()
        cache = self._cache
        return cache.hard_state, cache.snapshot.metadata.conf_state

    def first_index(self) -> int:
        self._database.handles()
        return self._cache.compacted_index + 1

    def last_index(self) -> int:
        self._database.handles()
        return self._cache.last_index

    def term(self, index: int) -> int:
        return self._consistently(self._term, index)

    def entries(self, low: int, high: int, max_size: int) -> list[Entry]:
        return self._consistently(self._entries, low, high, max_size)

    def snapshot(self) -> Snapshot:
        return self._consistently(self._snapshot)

    def _consistently(
        self,
        read: Callable[Concatenate[_Handles, _Cache, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """`read` against the cache and the database, repeated once under the write lock if
        it finds them inconsistent (see the module docstring)."""
        try:
            return read(self._database.handles(), self._cache, *args, **kwargs)
        except StorageCorrupt:
            with self._database.write_lock:
                return read(self._database.handles(), self._cache, *args, **kwargs)

    def _term(self, handles: _Handles, cache: _Cache, index: int) -> int:
        if index == cache.last_index:
            return cache.last_term
        if index == cache.compacted_index:
            return cache.compacted_term
        if index < cache.compacted_index:
            raise LogCompacted(
                f"index {index} is compacted (first index {cache.compacted_index + 1})"
            )
        if index > cache.last_index:
            raise LogUnavailable(f"index {index} is beyond the last index {cache.last_index}")
        term = self._entry_cache.term(index)
        if term is not None:
            return term
        record = _get(handles.log, encode_index_key(index))
        if record is None:
            raise self._database.corrupt(_LOG_FAMILY, f"index {index}", "missing from the log")
        return self._decode_entry(index, record).term

    def _entries(
        self, handles: _Handles, cache: _Cache, low: int, high: int, max_size: int
    ) -> list[Entry]:
        if low <= cache.compacted_index:
            raise LogCompacted(
                f"index {low} is compacted (first index {cache.compacted_index + 1})"
            )
        if high > cache.last_index + 1:
            raise LogUnavailable(f"entries up to {high} requested, last index {cache.last_index}")
        if low > high:
            raise InvalidArgument(f"low {low} > high {high}")
        if low == high:
            return []
        cached_from = self._entry_cache.cached_from(low, high)
        entries = self._read_entries(handles, low, cached_from, max_size)
        if cached_from == high or len(entries) < cached_from - low:
            return entries  # nothing cached, or the size limit was reached
        cached = self._entry_cache.slice(cached_from, high)
        if cached is None:  # evicted meanwhile: read the database after all
            cached = self._read_entries(handles, cached_from, high, max_size)
        return limit_size([*entries, *cached] if entries else cached, max_size)

    def _read_entries(self, handles: _Handles, low: int, high: int, max_size: int) -> list[Entry]:
        """Entries [low, high) from the database, within `max_size` bytes (at least one)."""
        entries: list[Entry] = []
        if low == high:
            return entries
        # As `raftkv.raft.core.log.limit_size`, but stopping the read at the limit. The hot
        # loop checks the index inside each record; keys are looked at only to explain a
        # failure.
        size = 0
        index = low
        for key, record in _items(handles.log, encode_index_key(low), encode_index_key(high)):
            try:
                entry = decode_entry(record)
            except RecordInvalid as error:
                raise self._log_corrupt(index, key, str(error)) from error
            if entry.index != index:
                raise self._log_corrupt(index, key, f"the record holds index {entry.index}")
            size += entry.payload_size
            if size > max_size and entries:
                return entries
            entries.append(entry)
            index += 1
        if index != high:
            raise self._database.corrupt(_LOG_FAMILY, f"index {index}", "missing from the log")
        return entries

    def _log_corrupt(self, index: int, key: bytes, reason: str) -> StorageCorrupt:
        """The error for a bad record at `key` met where entry `index` was expected."""
        if key != encode_index_key(index):
            return self._database.corrupt(_LOG_FAMILY, f"index {index}", "missing from the log")
        return self._database.corrupt(_LOG_FAMILY, f"index {index}", reason)

    def _snapshot(self, handles: _Handles, cache: _Cache) -> Snapshot:
        stored = cache.snapshot
        chunks: list[bytes] = []
        for key, record in _items(handles.snapshot, _FIRST_KEY, None):
            number = len(chunks)
            if key != encode_chunk_key(number):
                raise self._database.corrupt(
                    _SNAPSHOT_FAMILY, f"chunk {number}", f"missing (found key {key.hex()})"
                )
            chunks.append(
                self._database.decode(_SNAPSHOT_FAMILY, f"chunk {number}", decode_blob, record)
            )
        data = b"".join(chunks)
        if len(data) != stored.data_length or hashlib.sha256(data).digest() != stored.data_sha256:
            raise self._database.corrupt(
                _SNAPSHOT_FAMILY,
                "data",
                f"{len(data)} bytes in {len(chunks)} chunks do not match the snapshot "
                f"metadata ({stored.data_length} bytes, sha256 {stored.data_sha256.hex()})",
            )
        return Snapshot(stored.metadata, data)

    def _log_index(self, key: bytes) -> int:
        return self._database.decode(_LOG_FAMILY, f"key {key.hex()}", decode_index_key, key)

    def _decode_entry(self, index: int, record: bytes) -> Entry:
        entry = self._database.decode(_LOG_FAMILY, f"index {index}", decode_entry, record)
        if entry.index != index:
            raise self._database.corrupt(
                _LOG_FAMILY, f"index {index}", f"the record holds index {entry.index}"
            )
        return entry

    # -- RaftStorage (writes) --------------------------------------------------------------

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        """RaftStorage.persist, as one RocksDB write batch. Everything is validated before
        the batch is written, so a call that raises has changed nothing."""
        with self._database.write_lock:
            handles = self._database.handles()
            cache = self._cache
            batch = WriteBatch(raw_mode=True)
            stored_snapshot = cache.snapshot
            compacted_index, compacted_term = cache.compacted_index, cache.compacted_term
            last_index, last_term = cache.last_index, cache.last_term
            if snapshot is not None:
                metadata = snapshot.metadata
                if metadata.index <= stored_snapshot.metadata.index:
                    raise SnapshotOutOfDate(
                        f"snapshot at {metadata.index} is not newer than "
                        f"{stored_snapshot.metadata.index}"
                    )
                # The whole log goes, as in MemoryStorage: the core hands over a snapshot
                # only when the log lacks the snapshot's last entry (etcd's raft.restore),
                # so nothing after it could be kept.
                batch.delete_range(_FIRST_KEY, _PAST_LAST_KEY, handles.log_handle)
                stored_snapshot = self._put_snapshot(batch, handles, metadata, snapshot.data)
                batch.put(
                    _COMPACTED_KEY,
                    encode_index_term(metadata.index, metadata.term),
                    handles.state_handle,
                )
                compacted_index = last_index = metadata.index
                compacted_term = last_term = metadata.term
            written: Sequence[Entry] = ()
            if entries and entries[-1].index > compacted_index:
                if entries[0].index <= compacted_index:
                    entries = entries[compacted_index + 1 - entries[0].index :]
                first_new = entries[0].index
                if first_new > last_index + 1:
                    raise InvariantViolation(
                        f"missing log entry: last index {last_index}, appending at {first_new}"
                    )
                for offset, entry in enumerate(entries):
                    if entry.index != first_new + offset:
                        raise InvariantViolation(
                            f"entries to append are not consecutive: {entry.index} after "
                            f"{first_new + offset - 1}"
                        )
                    batch.put(
                        encode_index_key(entry.index), encode_entry(entry), handles.log_handle
                    )
                # Truncate the conflicting suffix: the new entries overwrite their indices;
                # older entries beyond the new last index go.
                if entries[-1].index < last_index:
                    batch.delete_range(
                        encode_index_key(entries[-1].index + 1),
                        encode_index_key(last_index + 1),
                        handles.log_handle,
                    )
                last_index, last_term = entries[-1].index, entries[-1].term
                written = entries
            if hard_state is not None:
                batch.put(_VOTE_KEY, encode_hard_state(hard_state), handles.state_handle)
            if batch.is_empty():
                return
            self._database.write(batch, sync=sync)
            if snapshot is not None:
                self._entry_cache.clear()
            self._entry_cache.put(written)
            self._cache = _Cache(
                cache.hard_state if hard_state is None else hard_state,
                stored_snapshot,
                compacted_index,
                compacted_term,
                last_index,
                last_term,
            )
            if sync:
                self._watermark.after_sync(self._cache.hard_state)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """RaftStorage.create_snapshot. Synced: snapshots are rare, and a node's recovery
        (and a lagging follower's) starts from the latest one."""
        with self._database.write_lock:
            handles = self._database.handles()
            cache = self._cache
            if index <= cache.snapshot.metadata.index:
                raise SnapshotOutOfDate(
                    f"snapshot at {index} is not newer than {cache.snapshot.metadata.index}"
                )
            metadata = SnapshotMetadata(index, self._term(handles, cache, index), conf_state)
            batch = WriteBatch(raw_mode=True)
            stored = self._put_snapshot(batch, handles, metadata, data)
            self._database.write(batch, sync=True)
            self._cache = replace(cache, snapshot=stored)
            return Snapshot(metadata, data)

    def compact(self, compact_index: int) -> None:
        """RaftStorage.compact, as a range delete.

        Raises LogCompacted / LogUnavailable as MemoryStorage does, and InvalidArgument
        beyond the latest snapshot: the state machine's applied index is not synced
        (AppData.commit), so after a crash the entries after the snapshot may be needed to
        bring it back.

        Not synced: losing a compaction in a crash only leaves more log than needed, and by
        the prefix property it cannot survive without the snapshot it relies on.
        """
        with self._database.write_lock:
            handles = self._database.handles()
            cache = self._cache
            if compact_index <= cache.compacted_index:
                raise LogCompacted(f"index {compact_index} is already compacted")
            if compact_index > cache.last_index:
                raise LogUnavailable(
                    f"compact {compact_index} is beyond the last index {cache.last_index}"
                )
            if compact_index > cache.snapshot.metadata.index:
                raise InvalidArgument(
                    f"compact {compact_index} is beyond the latest snapshot at "
                    f"{cache.snapshot.metadata.index}"
                )
            term = self._term(handles, cache, compact_index)
            batch = WriteBatch(raw_mode=True)
            batch.delete_range(_FIRST_KEY, encode_index_key(compact_index + 1), handles.log_handle)
            batch.put(_COMPACTED_KEY, encode_index_term(compact_index, term), handles.state_handle)
            self._database.write(batch, sync=False)
            self._entry_cache.discard_to(compact_index)
            self._cache = replace(cache, compacted_index=compact_index, compacted_term=term)

    def reset_to_snapshot(self, snapshot: Snapshot, hard_state: HardState) -> None:
        """Disaster recovery only (`raftkv.raft.recovery.force_new_cluster`): replace the
        whole log and the stored snapshot with `snapshot`, and the hard state with
        `hard_state`, in one synced batch. Unlike `persist`, the snapshot may be at the
        stored snapshot's index (the membership in it differs). Never used by a running
        node: it breaks the log's history on purpose."""
        metadata = snapshot.metadata
        if hard_state.commit != metadata.index:
            raise InvalidArgument("the hard state must commit exactly the snapshot's index")
        with self._database.write_lock:
            handles = self._database.handles()
            batch = WriteBatch(raw_mode=True)
            batch.delete_range(_FIRST_KEY, _PAST_LAST_KEY, handles.log_handle)
            stored = self._put_snapshot(batch, handles, metadata, snapshot.data)
            batch.put(
                _COMPACTED_KEY,
                encode_index_term(metadata.index, metadata.term),
                handles.state_handle,
            )
            batch.put(_VOTE_KEY, encode_hard_state(hard_state), handles.state_handle)
            self._database.write(batch, sync=True)
            self._entry_cache.clear()
            self._cache = _Cache(
                hard_state, stored, metadata.index, metadata.term, metadata.index, metadata.term
            )
            self._watermark.record(hard_state)  # the state goes back on purpose

    def _put_snapshot(
        self, batch: WriteBatch, handles: _Handles, metadata: SnapshotMetadata, data: bytes
    ) -> StoredSnapshot:
        """Add the writes replacing the stored snapshot to `batch`."""
        batch.delete_range(_FIRST_KEY, _PAST_LAST_KEY, handles.snapshot_handle)
        for number, offset in enumerate(range(0, len(data), SNAPSHOT_CHUNK_SIZE)):
            chunk = data[offset : offset + SNAPSHOT_CHUNK_SIZE]
            batch.put(encode_chunk_key(number), encode_blob(chunk), handles.snapshot_handle)
        stored = StoredSnapshot(metadata, len(data), hashlib.sha256(data).digest())
        batch.put(_SNAPSHOT_META_KEY, encode_stored_snapshot(stored), handles.state_handle)
        return stored

    def app_data(self) -> RocksAppData:
        self._database.handles()
        return self._app_data

    def close(self) -> None:
        """Close the database; later calls raise StorageClosed. Idempotent. Call it once
        every other user has stopped: a read already running when the database closes gets
        rocksdict's DbClosedError."""
        self._database.close()
        self._entry_cache.clear()


# -- application data ------------------------------------------------------------------------


def _describe_app_key(key: bytes) -> str:
    shown = repr(key[:64])
    return f"key {shown}..." if len(key) > 64 else f"key {shown}"


_checkpoint_numbers = itertools.count(1)


class CheckpointView:
    """A FrozenAppData over a RocksDB checkpoint: opened (as its own RocksStorage) on the
    first scan, in whatever thread calls it; deleted by `close`."""

    def __init__(self, path: Path, applied: tuple[int, int]) -> None:
        self.path = path
        self.applied = applied

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        storage = RocksStorage(self.path, create=False)
        try:
            yield from storage.app_data().scan()
        finally:
            storage.close()

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


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

    def __init__(self, database: _Database, scanner: RdictIter, getter: RdictIter) -> None:
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
            raise self._database.corrupt(_APP_DATA_FAMILY, where, str(error)) from error


def remove_stale_checkpoints(database_path: str) -> None:
    """Checkpoints left by a crash while a snapshot was being built are garbage."""
    shutil.rmtree(database_path + ".checkpoints", ignore_errors=True)


class RocksAppData:
    """`AppData` in the app_data column family of a RocksStorage's database.

    Keys are stored as given; values as blob records, so a damaged value is reported on
    read. The applied (index, term) is raft_state's raft_applied, written in the same batch
    as the data it covers.
    """

    def __init__(self, database: _Database, applied: tuple[int, int]) -> None:
        self._database = database
        # Invariant: what raft_applied holds; replaced only after the batch writing it lands.
        self._applied = applied

    def applied(self) -> tuple[int, int]:
        self._database.handles()
        return self._applied

    def get(self, key: bytes) -> bytes | None:
        record = _get(self._database.handles().app, key)
        if record is None:
            return None
        return self._database.decode(_APP_DATA_FAMILY, _describe_app_key(key), decode_blob, record)

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
        value = self._database.decode(_APP_DATA_FAMILY, _describe_app_key(key), decode_blob, record)
        return key, value

    def _scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        while True:
            page = [
                (
                    key,
                    self._database.decode(
                        _APP_DATA_FAMILY, _describe_app_key(key), decode_blob, record
                    ),
                )
                for key, record in islice(
                    _items(self._database.handles().app, start, end), _SCAN_PAGE_SIZE
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
                _APPLIED_KEY, encode_index_term(applied_index, applied_term), handles.state_handle
            )
            self._database.write(write, sync=False)
            self._applied = (applied_index, applied_term)

    def read_view(self) -> RocksReadView:
        """SupportsReadView.read_view: a view over two RocksDB iterators made now (one
        for scans, one for point reads). Without the write lock (a writer holds it through
        its fsync): a RocksDB write batch is seen whole or not at all, and the app space's
        batches are committed by the thread that takes views, between two of them."""
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
            last_key = _last_key(handles.app)
            if last_key is not None:
                # No key sorts after every other: delete up to the last key, then that key.
                write.delete_range(b"", last_key, handles.app_handle)
                write.delete(last_key, handles.app_handle)
            for key, value in items:
                write.put(key, encode_blob(value), handles.app_handle)
            write.put(
                _APPLIED_KEY, encode_index_term(applied_index, applied_term), handles.state_handle
            )
            self._database.write(write, sync=True)
            self._applied = (applied_index, applied_term)
