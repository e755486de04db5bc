"""`check_raft_storage` against both shipped storages, and against broken ones (it must
notice)."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_helpers import MemoryStorageFactory, RocksStorageFactory

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.types import Entry
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.testing import StorageFactory, check_raft_storage


def test_memory_storage_conforms() -> None:
    check_raft_storage(MemoryStorageFactory())


def test_rocks_storage_conforms(tmp_path: Path) -> None:
    check_raft_storage(RocksStorageFactory(tmp_path))


class _IgnoresMaxSize(MemoryStorage):
    """Broken on purpose: `entries` ignores `max_size`."""

    def entries(self, low: int, high: int, max_size: int) -> list[Entry]:
        return super().entries(low, high, NO_LIMIT)


class _BrokenFactory:
    durable = False

    def __init__(self, make: type[MemoryStorage]) -> None:
        self._make = make

    def create(self) -> RaftStorage:
        return self._make()

    def reopen(self, storage: RaftStorage) -> RaftStorage:
        return storage


class _ForgetfulFactory(MemoryStorageFactory):
    durable = True

    def reopen(self, storage: RaftStorage) -> RaftStorage:
        return MemoryStorage()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (_BrokenFactory(_IgnoresMaxSize), "max size"),
        (_ForgetfulFactory(), "after reopening"),
    ],
    ids=["ignores max_size", "forgets on reopen"],
)
def test_the_suite_notices_a_broken_storage(factory: StorageFactory, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_raft_storage(factory)
