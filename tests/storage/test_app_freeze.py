"""`AppData.freeze()`: a point-in-time copy of the app space, readable from another thread
while writes go on (RocksDB: a checkpoint; memory: a copy)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.raft.storage.base import AppBatch, RaftStorage, StorageClosed
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.storage.rocks import RocksStorage


@pytest.fixture(params=["memory", "rocks"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RaftStorage]:
    made: RaftStorage = (
        MemoryStorage() if request.param == "memory" else RocksStorage(tmp_path / "db")
    )
    yield made
    made.close()


def commit(storage: RaftStorage, index: int, **items: bytes) -> None:
    batch = AppBatch()
    for key, value in items.items():
        batch.put(key.encode(), value)
    storage.app_data().commit(batch, index, 1)


def test_a_frozen_view_keeps_its_moment_while_writes_go_on(storage: RaftStorage) -> None:
    commit(storage, 1, a=b"1", b=b"2")
    view = storage.app_data().freeze()
    commit(storage, 2, a=b"changed", c=b"3")
    assert view.applied == (1, 1)
    seen: list[tuple[bytes, bytes]] = []
    reader = threading.Thread(target=lambda: seen.extend(view.scan()))
    reader.start()
    reader.join(timeout=30)
    assert seen == [(b"a", b"1"), (b"b", b"2")]
    view.close()
    view.close()  # idempotent
    assert list(storage.app_data().scan()) == [(b"a", b"changed"), (b"b", b"2"), (b"c", b"3")]


def test_a_checkpoint_is_deleted_on_close_and_stale_ones_on_open(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    commit(storage, 1, a=b"1")
    view = storage.app_data().freeze()
    checkpoints = Path(storage.path + ".checkpoints")
    assert [path.name for path in checkpoints.iterdir()] == [view.path.name]  # type: ignore[attr-defined]
    view.close()
    assert list(checkpoints.iterdir()) == []
    storage.app_data().freeze()  # never closed: as if the process crashed
    storage.close()
    reopened = RocksStorage(tmp_path / "db")
    assert not checkpoints.exists()
    reopened.close()


def test_a_checkpoint_scan_stops_soon_after_close(tmp_path: Path) -> None:
    """Closed while a scan reads it (a stopping node's hash check of a large store), the
    scan ends at its next page with StorageClosed instead of reading on to the end."""
    storage = RocksStorage(tmp_path / "db")
    try:
        batch = AppBatch()
        for number in range(10_000):
            batch.put(b"k%05d" % number, b"v")
        storage.app_data().commit(batch, 1, 1)
        view = storage.app_data().freeze()
        scan = view.scan()
        assert next(scan) == (b"k00000", b"v")
        view.close()
        read = 0
        with pytest.raises(StorageClosed):
            for _ in scan:
                read += 1
        assert read < 2_048
        with pytest.raises(StorageClosed):
            next(iter(view.scan()))
    finally:
        storage.close()
