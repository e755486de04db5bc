"""benchmarks/sync_gil.py's two writers both persist durably what they are given, and the
old way's patch of the database is undone after it (a benchmark that compared a writer
with one that wrote nothing would measure nothing)."""

from __future__ import annotations

from pathlib import Path

from bench_helpers import load_benchmark
from raftkv.raft.core.types import HardState, NodeId
from raftkv.raft.storage.rocks import RocksStorage


def test_both_writers_persist_their_entries(tmp_path: Path) -> None:
    module = load_benchmark("sync_gil")
    storage = RocksStorage(tmp_path / "db")
    try:
        storage.persist(HardState(1, NodeId(1), 0), [], None, sync=True)
        counted, persists = module.persists_beside(storage, 0.05)
        assert counted.turns > 0 and persists > 0
        with module.synced_writes_held_under_the_gil(storage.database):
            _, old_persists = module.persists_beside(storage, 0.05)
        assert old_persists > 0
        assert "write" not in vars(storage.database)
        assert "sync_log" not in vars(storage.database)
        last = storage.last_index()
        assert last == persists + old_persists
    finally:
        storage.close()
    reopened = RocksStorage(tmp_path / "db", create=False)
    assert reopened.last_index() == last
    reopened.close()
