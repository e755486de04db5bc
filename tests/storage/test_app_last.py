"""`AppData.last(start, end)`: the greatest item in [start, end), on both storages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.raft.storage.base import AppBatch, RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.storage.rocks import RocksStorage


@pytest.fixture(params=["memory", "rocks"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RaftStorage]:
    made: RaftStorage = (
        MemoryStorage() if request.param == "memory" else RocksStorage(tmp_path / "db")
    )
    yield made
    made.close()


def test_last_finds_the_greatest_key_below_the_end_and_not_below_the_start(
    storage: RaftStorage,
) -> None:
    batch = AppBatch()
    for key in (b"a1", b"a2", b"a3", b"b1"):
        batch.put(key, b"value " + key)
    app = storage.app_data()
    app.commit(batch, 1, 1)
    assert app.last(b"a", b"b") == (b"a3", b"value a3")
    assert app.last(b"a", b"a3") == (b"a2", b"value a2")  # the end is excluded
    assert app.last(b"a2", b"a3") == (b"a2", b"value a2")  # the start is included
    assert app.last(b"a4", b"b") is None  # nothing in range though a smaller key exists
    assert app.last(b"", b"a1") is None
    assert app.last(b"", b"\xff") == (b"b1", b"value b1")
    assert app.last(b"c", b"d") is None
