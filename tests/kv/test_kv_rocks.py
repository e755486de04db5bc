"""The KV state machine on RocksDB: replicas agree byte for byte, and a restart resumes
from the meta records and the lease records alone."""

from __future__ import annotations

from pathlib import Path

from kv_helpers import CountingAppData, apply_in_batches, comparable, random_workload

from raftkv.kv import KvSettings, KvStateMachine, Range
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage


def test_memory_and_rocksdb_replicas_end_byte_identical(tmp_path: Path) -> None:
    settings = KvSettings(max_exactly_once_clients=4)
    commands = random_workload(seed=3, count=600)
    in_memory = KvStateMachine(MemoryAppData(), settings)
    storage = RocksStorage(tmp_path / "rocks")
    try:
        on_disk = KvStateMachine(storage.app_data(), settings)
        memory_results = apply_in_batches(in_memory, commands, 7)
        disk_results = apply_in_batches(on_disk, commands, 64)
        assert comparable(memory_results) == comparable(disk_results)
        assert on_disk.state_hash() == in_memory.state_hash()
        assert list(storage.app_data().scan()) == list(in_memory.app.scan())
        assert on_disk.applied_index() == in_memory.applied_index() == 600
    finally:
        storage.close()


def test_a_restart_resumes_from_the_meta_records_and_the_leases(tmp_path: Path) -> None:
    path = tmp_path / "rocks"
    commands = random_workload(seed=9, count=300)
    storage = RocksStorage(path)
    try:
        before = KvStateMachine(storage.app_data())
        apply_in_batches(before, commands, 25)
        expected = (
            before.state_hash(),
            before.current_revision(),
            before.compacted_revision(),
            before.applied_index(),
            before.range(Range(b"\0", b"\0")),
        )
    finally:
        storage.close()

    storage = RocksStorage(path, create=False)
    try:
        app = CountingAppData(storage.app_data())
        after = KvStateMachine(app)
        # meta:mvcc, the compacted revision's log entry (whether a watch can start there),
        # meta:sessions, meta:hash_check, meta:nospace_alarms and meta:auth, one scan of
        # the lease records, and one of the latest index: the live keys, counted at once
        # on an AppData without read views (this wrapper), in the background on RocksDB's
        # (key_count). Not of the history.
        assert after.compacted_revision() > 0
        assert (app.scans, app.gets) == (2, 6)
        assert (
            after.state_hash(),
            after.current_revision(),
            after.compacted_revision(),
            after.applied_index(),
            after.range(Range(b"\0", b"\0")),
        ) == expected
        # And it carries on exactly as a replica that never stopped.
        more = random_workload(seed=10, count=50)
        apply_in_batches(after, more, 10, first_index=301)
        reference = KvStateMachine(MemoryAppData())
        apply_in_batches(reference, commands + more, 50)
        assert after.state_hash() == reference.state_hash()
    finally:
        storage.close()
