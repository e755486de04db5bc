"""A damaged record stops RocksStorage with StorageCorrupt naming the path, column family
and key; it is never skipped. Each test damages a closed database with a raw Rdict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from storage_helpers import CONF_STATE, make_entries, rewrite_raw

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.types import Entry, HardState, NodeId
from raftkv.raft.storage.base import AppBatch, StorageCorrupt
from raftkv.raft.storage.records import (
    encode_blob,
    encode_chunk_key,
    encode_entry,
    encode_format_version,
    encode_index_key,
)
from raftkv.raft.storage.rocks import SNAPSHOT_CHUNK_SIZE, RocksStorage, StorageOpenError

SNAPSHOT_DATA = bytes(range(256)) * (SNAPSHOT_CHUNK_SIZE // 256 + 10)  # two chunks


def populated_database(directory: Path) -> str:
    """A closed database with every kind of record: entries 6..50 (compacted at 5), a
    hard state, a snapshot at 10 in two chunks, and an application value under b'key'."""
    storage = RocksStorage(directory / "db")
    storage.persist(
        HardState(3, NodeId(1), 40), make_entries(1, *[1] * 20, *[3] * 30), None, sync=True
    )
    storage.create_snapshot(10, CONF_STATE, SNAPSHOT_DATA)
    storage.compact(5)
    batch = AppBatch()
    batch.put(b"key", b"value")
    storage.app_data().commit(batch, 40, 3)
    storage.close()
    return storage.path


def flip_last_byte(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01])


@dataclass(frozen=True)
class Target:
    """A record to damage, the read that finds it (None: opening does), and how the error
    names it."""

    family: str
    key: bytes
    read: Callable[[RocksStorage], object] | None
    named: str


TARGETS = {
    "log entry read by entries()": Target(
        "raft_log", encode_index_key(42), lambda s: s.entries(6, 51, NO_LIMIT), "raft_log index 42"
    ),
    "log entry read by term()": Target(
        "raft_log", encode_index_key(42), lambda s: s.term(42), "raft_log index 42"
    ),
    "last log entry": Target("raft_log", encode_index_key(50), None, "raft_log index 50"),
    "hard state": Target("raft_state", b"raft_vote", None, "raft_state raft_vote"),
    "snapshot metadata": Target(
        "raft_state", b"raft_snapshot_meta", None, "raft_state raft_snapshot_meta"
    ),
    "compacted index": Target(
        "raft_state", b"raft_meta:compacted", None, "raft_state raft_meta:compacted"
    ),
    "applied index": Target("raft_state", b"raft_applied", None, "raft_state raft_applied"),
    "snapshot chunk": Target(
        "raft_snapshot", encode_chunk_key(1), lambda s: s.snapshot(), "raft_snapshot chunk 1"
    ),
    "app value read by get()": Target(
        "app_data", b"key", lambda s: s.app_data().get(b"key"), "app_data key b'key'"
    ),
    "app value read by scan()": Target(
        "app_data", b"key", lambda s: list(s.app_data().scan()), "app_data key b'key'"
    ),
}


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (flip_last_byte, "checksum mismatch"),
        (lambda value: b"\x09" + value[1:], "unknown record version 9"),
        (lambda value: value[:3], "truncated record"),
        (lambda value: value[:-1], "checksum mismatch"),
    ],
    ids=["flipped byte", "unknown version", "truncated header", "truncated payload"],
)
def test_a_damaged_record_raises_storage_corrupt_naming_it(
    tmp_path: Path, target: Target, damage: Callable[[bytes], bytes], reason: str
) -> None:
    path = populated_database(tmp_path)
    rewrite_raw(path, target.family, target.key, damage)
    with pytest.raises(StorageCorrupt) as raised:
        storage = RocksStorage(path, create=False)
        try:
            assert target.read is not None, "the damage should have been found on open"
            target.read(storage)
        finally:
            storage.close()
    assert f"corrupt record in {path}: {target.named}: " in str(raised.value)
    assert reason in str(raised.value)


def test_a_well_formed_record_of_the_wrong_shape_is_corrupt(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    wrong_shape = encode_blob(msgspec.msgpack.encode((3, 42)))  # valid envelope, 2 fields
    rewrite_raw(path, "raft_log", encode_index_key(42), lambda _: wrong_shape)
    storage = RocksStorage(path, create=False)
    with pytest.raises(StorageCorrupt, match=r"raft_log index 42: malformed payload"):
        storage.entries(40, 45, NO_LIMIT)
    storage.close()


def test_an_entry_under_the_wrong_key_is_corrupt(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    misplaced = encode_entry(Entry(term=3, index=41))
    rewrite_raw(path, "raft_log", encode_index_key(42), lambda _: misplaced)
    storage = RocksStorage(path, create=False)
    with pytest.raises(StorageCorrupt, match=r"raft_log index 42: the record holds index 41"):
        storage.term(42)
    storage.close()


def test_a_hole_in_the_log_is_corrupt(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    rewrite_raw(path, "raft_log", encode_index_key(42), lambda _: None)
    storage = RocksStorage(path, create=False)
    assert storage.entries(6, 42, NO_LIMIT)[-1].index == 41  # reads before the hole work
    with pytest.raises(StorageCorrupt, match=r"raft_log index 42: missing from the log"):
        storage.entries(40, 45, NO_LIMIT)
    with pytest.raises(StorageCorrupt, match=r"raft_log index 42: missing from the log"):
        storage.term(42)
    storage.close()


def test_a_log_that_does_not_start_after_the_compacted_index_is_corrupt(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    rewrite_raw(path, "raft_log", encode_index_key(6), lambda _: None)
    with pytest.raises(StorageCorrupt, match=r"the log starts at 7 but the compacted index is 5"):
        RocksStorage(path, create=False)


def test_a_missing_snapshot_chunk_is_corrupt(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    rewrite_raw(path, "raft_snapshot", encode_chunk_key(1), lambda _: None)
    storage = RocksStorage(path, create=False)
    with pytest.raises(StorageCorrupt, match=r"raft_snapshot data: .* do not match"):
        storage.snapshot()
    storage.close()


def test_a_swapped_snapshot_chunk_fails_the_sha256(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    # A valid record, but not the data the metadata describes.
    rewrite_raw(path, "raft_snapshot", encode_chunk_key(0), lambda value: encode_blob(b"x" * 2**20))
    storage = RocksStorage(path, create=False)
    with pytest.raises(StorageCorrupt, match=r"raft_snapshot data: .* do not match"):
        storage.snapshot()
    storage.close()


def test_a_database_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    rewrite_raw(path, "raft_state", b"raft_meta:format_version", lambda _: encode_format_version(2))
    with pytest.raises(StorageOpenError, match=r"format version 2; .* upgrade raftkv"):
        RocksStorage(path, create=False)
    # The refusal released the database.
    rewrite_raw(path, "raft_state", b"raft_meta:format_version", lambda _: encode_format_version(1))
    RocksStorage(path, create=False).close()


def test_a_database_with_data_but_no_format_version_is_corrupt(tmp_path: Path) -> None:
    path = populated_database(tmp_path)
    rewrite_raw(path, "raft_state", b"raft_meta:format_version", lambda _: None)
    with pytest.raises(StorageCorrupt, match=r"raft_meta:format_version: missing"):
        RocksStorage(path, create=False)
