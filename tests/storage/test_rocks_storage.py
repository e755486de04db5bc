"""RocksStorage beyond the conformance suite: opening, what reaches the disk, the entry
cache, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from storage_helpers import CONF_STATE, make_entries, raw_keys, visible_state

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.errors import InvalidArgument, LogCompacted
from raftkv.raft.core.types import HardState, NodeId, Snapshot, SnapshotMetadata
from raftkv.raft.storage import entry_cache, rocks
from raftkv.raft.storage.base import AppBatch, RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.storage.records import encode_index_key
from raftkv.raft.storage.rocks import RocksStorage, StorageOpenError

# -- opening ---------------------------------------------------------------------------------


def test_opening_an_open_database_again_is_refused_clearly(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    with pytest.raises(StorageOpenError, match=r"already open"):
        RocksStorage(tmp_path / "." / "db")
    storage.close()
    RocksStorage(tmp_path / "db").close()


def test_an_unclosed_storage_releases_its_database_when_collected(tmp_path: Path) -> None:
    RocksStorage(tmp_path / "db")  # dropped at once without close()
    RocksStorage(tmp_path / "db").close()


def test_a_missing_database_is_not_created_when_create_is_false(tmp_path: Path) -> None:
    with pytest.raises(StorageOpenError, match=r"there is no RocksDB database at .*missing"):
        RocksStorage(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_values_that_are_not_bytes_are_refused_never_pickled(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    batch = AppBatch()
    batch.put(b"key", "a str")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.app_data().commit(batch, 1, 1)
    batch = AppBatch()
    batch.put("a str", b"value")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="bytes"):
        storage.app_data().commit(batch, 1, 1)
    assert storage.app_data().applied() == (0, 0)
    storage.close()


# -- what reaches the disk -------------------------------------------------------------------


def test_reopening_recovers_exactly_what_was_persisted(tmp_path: Path) -> None:
    model = MemoryStorage()
    storage = RocksStorage(tmp_path / "db")
    writes: list[tuple[HardState | None, int, list[int], Snapshot | None]] = [
        (HardState(1, NodeId(1), 0), 1, [1, 1, 1], None),
        (None, 4, [1, 2], None),
        (HardState(2, NodeId(2), 4), 3, [2, 2, 2, 2], None),  # conflicting suffix
        (None, 7, [], Snapshot(SnapshotMetadata(8, 3, CONF_STATE), b"image at 8")),
        (HardState(3, NodeId(2), 8), 9, [3, 3, 3], None),
    ]
    for hard_state, first_index, terms, snapshot in writes:
        for target in (model, storage):
            target.persist(hard_state, make_entries(first_index, *terms), snapshot, sync=False)
        expected = visible_state(model)
        storage.close()
        storage = RocksStorage(storage.path, create=False)
        assert visible_state(storage) == expected
    storage.close()


def test_a_synced_persist_fsyncs_after_its_write_outside_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fsync (rocksdict's flush_wal, which releases the GIL) must not hold the write
    # lock, or the event loop's commits of applied data would wait for the disk; and it
    # must come after the batch and before the watermark claims the state durable.
    storage = RocksStorage(tmp_path / "db")
    database = storage.database
    events: list[str] = []
    real_sync = database.sync_log

    def sync_log() -> None:
        assert not database.write_lock.locked(), "fsync under the write lock"
        # The batch has landed: its entries are readable before the sync ends.
        assert storage.last_index() == 3
        events.append("sync")
        real_sync()

    real_after_sync = storage._watermark.after_sync

    def after_sync(hard_state: HardState) -> None:
        events.append("watermark")
        real_after_sync(hard_state)

    monkeypatch.setattr(database, "sync_log", sync_log)
    monkeypatch.setattr(storage._watermark, "after_sync", after_sync)
    storage.persist(HardState(1, NodeId(1), 0), make_entries(1, 1, 1, 1), None, sync=True)
    assert events == ["sync", "watermark"]
    events.clear()
    storage.persist(None, make_entries(4, 1), None, sync=False)
    assert events == []
    storage.close()
    reopened = RocksStorage(tmp_path / "db", create=False)
    assert reopened.last_index() == 4
    assert reopened.initial_state()[0] == HardState(1, NodeId(1), 0)
    reopened.close()


def test_a_truncated_suffix_leaves_no_stale_entries_on_disk(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    storage.persist(None, make_entries(1, *[1] * 10), None, sync=True)
    storage.persist(None, make_entries(4, 2, 2), None, sync=True)
    storage.close()
    assert raw_keys(storage.path, "raft_log") == [encode_index_key(index) for index in range(1, 6)]
    reopened = RocksStorage(storage.path, create=False)
    assert reopened.last_index() == 5
    assert [entry.term for entry in reopened.entries(1, 6, NO_LIMIT)] == [1, 1, 1, 2, 2]
    reopened.close()


def test_compaction_and_snapshot_install_delete_the_log_on_disk(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    storage.persist(None, make_entries(1, *[1] * 10), None, sync=True)
    storage.create_snapshot(6, CONF_STATE, b"image at 6")
    storage.compact(6)
    storage.close()
    assert raw_keys(storage.path, "raft_log") == [encode_index_key(index) for index in range(7, 11)]
    storage = RocksStorage(storage.path, create=False)
    storage.persist(None, [], Snapshot(SnapshotMetadata(20, 2, CONF_STATE), b"x"), sync=True)
    storage.close()
    assert raw_keys(storage.path, "raft_log") == []


def test_compacting_beyond_the_latest_snapshot_is_refused(tmp_path: Path) -> None:
    # The applied index is not synced: after a crash the entries after the snapshot may be
    # needed to bring the state machine back.
    storage = RocksStorage(tmp_path / "db")
    storage.persist(None, make_entries(1, 1, 1, 1, 1), None, sync=True)
    storage.create_snapshot(2, CONF_STATE, b"")
    before = visible_state(storage)
    with pytest.raises(InvalidArgument, match=r"beyond the latest snapshot at 2"):
        storage.compact(3)
    assert visible_state(storage) == before
    storage.close()


def test_a_persist_with_nothing_to_write_writes_nothing(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    storage.persist(None, [], None, sync=True)
    storage.persist(None, make_entries(1, 1), None, sync=True)
    storage.persist(None, make_entries(1, 1)[:0], None, sync=False)
    assert (storage.first_index(), storage.last_index()) == (1, 1)
    storage.close()


def test_scan_across_pages_sees_every_key_once(tmp_path: Path) -> None:
    # More keys than one RocksDB iterator reads (1,024), with the page boundary inside a
    # run of keys that extend each other (b"k", b"k\x00", ...).
    keys = sorted(b"key %04d" % number for number in range(2500))
    keys += [b"key 1023" + b"\x00" * length for length in range(1, 4)]
    keys.sort()
    storage = RocksStorage(tmp_path / "db")
    batch = AppBatch()
    for key in keys:
        batch.put(key, key)
    storage.app_data().commit(batch, 1, 1)
    assert [key for key, _ in storage.app_data().scan()] == keys
    assert [key for key, _ in storage.app_data().scan(keys[1000], keys[2100])] == keys[1000:2100]
    # A scan abandoned halfway keeps nothing open: the database closes and reopens.
    next(storage.app_data().scan())
    storage.close()
    RocksStorage(storage.path, create=False).close()


# -- the entry cache -------------------------------------------------------------------------


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def decode(record: bytes) -> None:
        raise AssertionError("a log record was read and decoded")

    monkeypatch.setattr(rocks, "decode_entry", decode)


def test_entries_just_persisted_are_read_without_decoding_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a leader sends followers and every node applies was persisted moments ago.
    storage = RocksStorage(tmp_path / "db")
    storage.persist(None, make_entries(1, 1, 1, 1, 1, 2), None, sync=True)
    storage.persist(None, make_entries(5, 3, 3), None, sync=True)  # replaces 5 and 6
    with monkeypatch.context() as patched:
        forbid_decoding(patched)
        assert storage.entries(2, 7, NO_LIMIT) == make_entries(2, 1, 1, 1, 3, 3)
        assert [storage.term(index) for index in range(1, 7)] == [1, 1, 1, 1, 3, 3]
    storage.close()
    storage = RocksStorage(tmp_path / "db", create=False)
    with monkeypatch.context() as patched:
        forbid_decoding(patched)
        with pytest.raises(AssertionError, match="decoded"):
            storage.entries(2, 7, NO_LIMIT)  # reopened: read from the database
    assert storage.entries(2, 7, NO_LIMIT) == make_entries(2, 1, 1, 1, 3, 3)
    storage.close()


def test_the_entry_cache_keeps_the_newest_entries_within_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = make_entries(1, *[1] * 100)
    budget = 10 * (entry_cache.CACHED_ENTRY_OVERHEAD_BYTES + len(entries[0].data))
    storage = RocksStorage(tmp_path / "db", entry_cache_bytes=budget)
    for entry in entries:
        storage.persist(None, [entry], None, sync=False)
    with monkeypatch.context() as patched:
        forbid_decoding(patched)
        assert storage.entries(95, 101, NO_LIMIT) == entries[94:]
        with pytest.raises(AssertionError, match="decoded"):
            storage.entries(80, 101, NO_LIMIT)
    # Older entries come from the database, newer ones from the cache, in one answer.
    assert storage.entries(80, 101, NO_LIMIT) == entries[79:]
    storage.close()


def test_an_entry_cache_of_negative_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="entry_cache_bytes"):
        RocksStorage(tmp_path / "db", entry_cache_bytes=-1)


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "rocks", "rocks with a small entry cache"])
def test_a_reader_never_sees_half_a_persist(tmp_path: Path, kind: str) -> None:
    """The writer appends one entry at a time and, every tenth round, installs a snapshot
    beyond the log, which moves first and last index together. The first index never
    decreases and last >= first - 1 holds after every write, so reading first and then
    last must always give last >= first - 1, whatever the interleaving; a half-applied
    snapshot install (first moved, last not yet) would break it."""
    storage: RaftStorage = MemoryStorage()
    if kind == "rocks":
        storage = RocksStorage(tmp_path / "db")
    elif kind == "rocks with a small entry cache":
        storage = RocksStorage(tmp_path / "db", entry_cache_bytes=2000)
    rounds = 400
    done = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for round_number in range(1, rounds + 1):
                last = storage.last_index()
                storage.persist(None, make_entries(last + 1, round_number), None, sync=False)
                if round_number % 10 == 0:
                    snapshot = Snapshot(SnapshotMetadata(last + 5, round_number, CONF_STATE))
                    storage.persist(None, [], snapshot, sync=False)
        except BaseException as error:
            failures.append(error)
            raise
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not done.is_set() or reads == 0:
        first = storage.first_index()
        last = storage.last_index()
        assert last >= first - 1, f"read first index {first}, then last index {last}"
        try:
            entries = storage.entries(first, last + 1, NO_LIMIT)
        except LogCompacted:
            continue  # a snapshot landed between reading the bounds and the entries
        assert [entry.index for entry in entries] == list(range(first, first + len(entries)))
        reads += 1
    writer.join()
    assert not failures
    assert storage.last_index() == rounds + 4 * (rounds // 10)
    storage.close()
