"""RocksStorage: `RaftStorage` and `AppData` on one RocksDB database per node (rocksdict).

Three parts, one module each: the database (`rocks_database.py`: its layout, opening it,
handles, the write lock, corruption reports), the Raft log store (this module: the log,
the hard state and the stored snapshot, with the entry cache of `entry_cache.py` and the
durability watermark of `watermark.py`), and the application's keyspace
(`rocks_app_data.py`: `RocksAppData`, its read views and checkpoints). `RocksStorage` opens
the database and hands the keyspace out through `app_data()`.

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
sync, `compact` and `AppData.commit` never do. Whatever survives a crash is a prefix of the
writes made (the prefix property, rocks_database.py): an unsynced write can be lost, but
never kept while an earlier write is lost, and a later synced write makes it durable too.

Entries: the newest entries of the log are also kept decoded in memory (`EntryCache`, up
to `entry_cache_bytes`), as etcd keeps its log in memory (entry_cache.py says why).

Threading (base.py): one writer thread calls `persist` / `create_snapshot` (the driver also
compacts from its event loop) while the event loop reads. Reads are lock-free: they answer
bounds, terms and the hard state from `_Cache`, which a writer replaces whole after its
batch has landed. A read that overlaps a write can therefore find the database one write
ahead of the cache (an entry deleted, snapshot chunks replaced); it sees that as a record
missing or inconsistent, and repeats itself once under the write lock, when database and
cache agree. Only a second failure is reported as corruption. The entry cache is updated
between the two (after the batch lands, before `_Cache` is replaced), so it is never behind
the database a reader may see.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Concatenate, ParamSpec, TypeVar

from rocksdict import WriteBatch

from raftkv.raft.core.errors import (
    InvalidArgument,
    InvariantViolation,
    LogCompacted,
    LogUnavailable,
    SnapshotOutOfDate,
)
from raftkv.raft.core.log import limit_size
from raftkv.raft.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.raft.storage.base import StorageCorrupt
from raftkv.raft.storage.entry_cache import EntryCache
from raftkv.raft.storage.records import (
    EMPTY_STORED_SNAPSHOT,
    RecordInvalid,
    StoredSnapshot,
    decode_blob,
    decode_entry,
    decode_hard_state,
    decode_index_key,
    decode_index_term,
    decode_stored_snapshot,
    encode_blob,
    encode_chunk_key,
    encode_entry,
    encode_hard_state,
    encode_index_key,
    encode_index_term,
    encode_stored_snapshot,
)
from raftkv.raft.storage.rocks_app_data import RocksAppData, remove_stale_checkpoints
from raftkv.raft.storage.rocks_database import (
    APPLIED_KEY,
    COMPACTED_KEY,
    FIRST_KEY,
    FORMAT_VERSION,
    LOG_FAMILY,
    PAST_LAST_KEY,
    SNAPSHOT_FAMILY,
    SNAPSHOT_META_KEY,
    STATE_FAMILY,
    VOTE_KEY,
    Handles,
    RocksDatabase,
    StorageOpenError,
    family_items,
    first_key_of,
    get_record,
    last_key_of,
)
from raftkv.raft.storage.watermark import DurabilityWatermark

# RocksStorage's public surface: what it takes, raises and hands out (FORMAT_VERSION,
# RocksAppData and StorageOpenError are defined beside the part they belong to).
__all__ = [
    "DEFAULT_ENTRY_CACHE_BYTES",
    "FORMAT_VERSION",
    "SNAPSHOT_CHUNK_SIZE",
    "RocksAppData",
    "RocksStorage",
    "StorageOpenError",
]

SNAPSHOT_CHUNK_SIZE = 1 << 20
# The default budget of the entry cache: about 40 k entries of 16-byte commands, or 8 MiB of
# large ones. Larger serves followers further behind from memory, but every cached entry is
# an object Python's full garbage collections walk (170 k of them add ~25 ms to each).
DEFAULT_ENTRY_CACHE_BYTES = 8 << 20

_P = ParamSpec("_P")
_T = TypeVar("_T")


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


class RocksStorage:
    """Durable `RaftStorage` in the RocksDB database at `path` (created if missing unless
    `create` is false). Opening validates the format version and loads the cache; a
    damaged record raises StorageCorrupt, a database that cannot be used StorageOpenError.

    `entry_cache_bytes` bounds the memory of the newest entries kept decoded
    (entry_cache.py); more serves followers further behind without reading RocksDB, 0 turns
    the cache off.
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
        self._entry_cache = EntryCache(entry_cache_bytes)
        real_path = os.path.realpath(os.fspath(path))
        remove_stale_checkpoints(real_path)
        self._database = RocksDatabase(real_path, create=create)
        try:
            self._cache = self._load_cache()
            self._watermark = DurabilityWatermark(real_path)
            self._watermark.check(self._cache.hard_state, self._cache.last_index)
            applied = self._database.read_state(APPLIED_KEY, decode_index_term, (0, 0))
        except BaseException:
            self._database.close()
            raise
        self._app_data = RocksAppData(self._database, applied)

    @property
    def path(self) -> str:
        return self._database.path

    @property
    def database(self) -> RocksDatabase:
        """The open database under this storage, shared with its AppData."""
        return self._database

    def compact_files(self) -> None:
        """See RocksDatabase.compact_files (blocking: on a worker thread)."""
        self._database.compact_files()

    # -- opening ---------------------------------------------------------------------------

    def _load_cache(self) -> _Cache:
        database = self._database
        handles = database.handles()
        hard_state = database.read_state(VOTE_KEY, decode_hard_state, HardState())
        snapshot = database.read_state(
            SNAPSHOT_META_KEY, decode_stored_snapshot, EMPTY_STORED_SNAPSHOT
        )
        compacted_index, compacted_term = database.read_state(
            COMPACTED_KEY, decode_index_term, (0, 0)
        )
        if compacted_index > snapshot.metadata.index:
            raise database.corrupt(
                STATE_FAMILY,
                COMPACTED_KEY.decode(),
                f"compacted index {compacted_index} is beyond the snapshot at "
                f"{snapshot.metadata.index}",
            )
        last_index, last_term = compacted_index, compacted_term
        first_key = first_key_of(handles.log)
        if first_key is not None:
            first_index = self._log_index(first_key)
            if first_index != compacted_index + 1:
                raise database.corrupt(
                    LOG_FAMILY,
                    f"index {first_index}",
                    f"the log starts at {first_index} but the compacted index is {compacted_index}",
                )
            last_key = last_key_of(handles.log)
            assert last_key is not None  # the log is not empty
            last_index = self._log_index(last_key)
            record = get_record(handles.log, last_key)
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
        read: Callable[Concatenate[Handles, _Cache, _P], _T],
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

    def _term(self, handles: Handles, cache: _Cache, index: int) -> int:
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
        record = get_record(handles.log, encode_index_key(index))
        if record is None:
            raise self._database.corrupt(LOG_FAMILY, f"index {index}", "missing from the log")
        return self._decode_entry(index, record).term

    def _entries(
        self, handles: Handles, cache: _Cache, low: int, high: int, max_size: int
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

    def _read_entries(self, handles: Handles, low: int, high: int, max_size: int) -> list[Entry]:
        """Entries [low, high) from the database, within `max_size` bytes (at least one)."""
        entries: list[Entry] = []
        if low == high:
            return entries
        # As `raftkv.raft.core.log.limit_size`, but stopping the read at the limit. The hot
        # loop checks the index inside each record; keys are looked at only to explain a
        # failure.
        size = 0
        index = low
        for key, record in family_items(handles.log, encode_index_key(low), encode_index_key(high)):
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
            raise self._database.corrupt(LOG_FAMILY, f"index {index}", "missing from the log")
        return entries

    def _log_corrupt(self, index: int, key: bytes, reason: str) -> StorageCorrupt:
        """The error for a bad record at `key` met where entry `index` was expected."""
        if key != encode_index_key(index):
            return self._database.corrupt(LOG_FAMILY, f"index {index}", "missing from the log")
        return self._database.corrupt(LOG_FAMILY, f"index {index}", reason)

    def _snapshot(self, handles: Handles, cache: _Cache) -> Snapshot:
        stored = cache.snapshot
        chunks: list[bytes] = []
        for key, record in family_items(handles.snapshot, FIRST_KEY, None):
            number = len(chunks)
            if key != encode_chunk_key(number):
                raise self._database.corrupt(
                    SNAPSHOT_FAMILY, f"chunk {number}", f"missing (found key {key.hex()})"
                )
            chunks.append(
                self._database.decode(SNAPSHOT_FAMILY, f"chunk {number}", decode_blob, record)
            )
        data = b"".join(chunks)
        if len(data) != stored.data_length or hashlib.sha256(data).digest() != stored.data_sha256:
            raise self._database.corrupt(
                SNAPSHOT_FAMILY,
                "data",
                f"{len(data)} bytes in {len(chunks)} chunks do not match the snapshot "
                f"metadata ({stored.data_length} bytes, sha256 {stored.data_sha256.hex()})",
            )
        return Snapshot(stored.metadata, data)

    def _log_index(self, key: bytes) -> int:
        return self._database.decode(LOG_FAMILY, f"key {key.hex()}", decode_index_key, key)

    def _decode_entry(self, index: int, record: bytes) -> Entry:
        entry = self._database.decode(LOG_FAMILY, f"index {index}", decode_entry, record)
        if entry.index != index:
            raise self._database.corrupt(
                LOG_FAMILY, f"index {index}", f"the record holds index {entry.index}"
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
                batch.delete_range(FIRST_KEY, PAST_LAST_KEY, handles.log_handle)
                stored_snapshot = self._put_snapshot(batch, handles, metadata, snapshot.data)
                batch.put(
                    COMPACTED_KEY,
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
                batch.put(VOTE_KEY, encode_hard_state(hard_state), handles.state_handle)
            if batch.is_empty():
                return
            self._database.write(batch, sync=False)
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
            written_state = self._cache.hard_state
        if not sync:
            return
        # The fsync outside the write lock (and the GIL: sync_log), so that the event
        # loop's commits of applied data and its reads go on meanwhile. Persists run one at
        # a time (the driver's Writer), so the state recorded is the one just synced.
        self._database.sync_log()
        with self._database.write_lock:
            self._watermark.after_sync(written_state)

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
            batch.delete_range(FIRST_KEY, encode_index_key(compact_index + 1), handles.log_handle)
            batch.put(COMPACTED_KEY, encode_index_term(compact_index, term), handles.state_handle)
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
            batch.delete_range(FIRST_KEY, PAST_LAST_KEY, handles.log_handle)
            stored = self._put_snapshot(batch, handles, metadata, snapshot.data)
            self._finish_reset(batch, handles, stored, hard_state)

    def reset_to_snapshot_pieces(
        self,
        metadata: SnapshotMetadata,
        pieces: Iterable[bytes],
        data_bytes: int,
        hard_state: HardState,
    ) -> None:
        """`reset_to_snapshot` for a snapshot too large to hold in memory (a new data dir
        seeded from a backup): its data comes as `pieces` (`data_bytes` in all) and is
        written a chunk at a time, one unsynced RocksDB write each; the snapshot's
        metadata, the log's bounds and `hard_state` come last, in one synced write, which
        makes every write before it durable too (the prefix property). Not atomic: a crash
        midway leaves chunks that no metadata covers, so the caller marks the database
        unfinished until this returns (raftkv.server.restore does, in member.json).
        InvalidArgument, before the last write, if the pieces do not hold `data_bytes`."""
        if hard_state.commit != metadata.index:
            raise InvalidArgument("the hard state must commit exactly the snapshot's index")
        with self._database.write_lock:
            handles = self._database.handles()
            first = WriteBatch(raw_mode=True)
            first.delete_range(FIRST_KEY, PAST_LAST_KEY, handles.log_handle)
            first.delete_range(FIRST_KEY, PAST_LAST_KEY, handles.snapshot_handle)
            self._database.write(first, sync=False)
            digest, length, number = hashlib.sha256(), 0, 0
            pending = bytearray()
            for piece in itertools.chain(pieces, [None]):
                if piece is not None:
                    digest.update(piece)
                    length += len(piece)
                    pending += piece
                while len(pending) >= SNAPSHOT_CHUNK_SIZE or (piece is None and pending):
                    chunk = bytes(pending[:SNAPSHOT_CHUNK_SIZE])
                    del pending[:SNAPSHOT_CHUNK_SIZE]
                    write = WriteBatch(raw_mode=True)
                    write.put(encode_chunk_key(number), encode_blob(chunk), handles.snapshot_handle)
                    self._database.write(write, sync=False)
                    number += 1
            if length != data_bytes:
                raise InvalidArgument(
                    f"the snapshot's pieces hold {length} bytes, not {data_bytes}"
                )
            stored = StoredSnapshot(metadata, length, digest.digest())
            last = WriteBatch(raw_mode=True)
            last.put(SNAPSHOT_META_KEY, encode_stored_snapshot(stored), handles.state_handle)
            self._finish_reset(last, handles, stored, hard_state)

    def _finish_reset(
        self, batch: WriteBatch, handles: Handles, stored: StoredSnapshot, hard_state: HardState
    ) -> None:
        """The end both resets share: the log starts after `stored`'s index, `hard_state`
        replaces the stored one, `batch` is written synced, and the caches and the
        durability watermark follow (the state goes back on purpose)."""
        metadata = stored.metadata
        batch.put(
            COMPACTED_KEY, encode_index_term(metadata.index, metadata.term), handles.state_handle
        )
        batch.put(VOTE_KEY, encode_hard_state(hard_state), handles.state_handle)
        self._database.write(batch, sync=True)
        self._entry_cache.clear()
        self._cache = _Cache(
            hard_state, stored, metadata.index, metadata.term, metadata.index, metadata.term
        )
        self._watermark.record(hard_state)

    def _put_snapshot(
        self, batch: WriteBatch, handles: Handles, metadata: SnapshotMetadata, data: bytes
    ) -> StoredSnapshot:
        """Add the writes replacing the stored snapshot to `batch`."""
        batch.delete_range(FIRST_KEY, PAST_LAST_KEY, handles.snapshot_handle)
        for number, offset in enumerate(range(0, len(data), SNAPSHOT_CHUNK_SIZE)):
            chunk = data[offset : offset + SNAPSHOT_CHUNK_SIZE]
            batch.put(encode_chunk_key(number), encode_blob(chunk), handles.snapshot_handle)
        stored = StoredSnapshot(metadata, len(data), hashlib.sha256(data).digest())
        batch.put(SNAPSHOT_META_KEY, encode_stored_snapshot(stored), handles.state_handle)
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
