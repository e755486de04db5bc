"""Storage factories for the conformance suite, and helpers shared by this folder's tests:
what a reader sees of a storage, and raw access to a RocksStorage's database (to damage
it on purpose)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

from rocksdict import Options, Rdict

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.types import ConfState, Entry, NodeId
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.storage.rocks import RocksStorage

CONF_STATE = ConfState(voters=frozenset({NodeId(1), NodeId(2), NodeId(3)}))


class MemoryStorageFactory:
    durable = False

    def create(self) -> RaftStorage:
        return MemoryStorage()

    def reopen(self, storage: RaftStorage) -> RaftStorage:
        return storage


class RocksStorageFactory:
    """A new database directory under `directory` for each storage."""

    durable = True

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._created = 0

    def create(self) -> RaftStorage:
        self._created += 1
        return RocksStorage(self._directory / f"db{self._created}")

    def reopen(self, storage: RaftStorage) -> RaftStorage:
        assert isinstance(storage, RocksStorage)
        storage.close()
        return RocksStorage(storage.path, create=False)


def make_entries(first_index: int, *terms: int) -> list[Entry]:
    """Entries whose data names their index and term."""
    return [
        Entry(term=term, index=index, data=b"entry %d of term %d" % (index, term))
        for index, term in enumerate(terms, start=first_index)
    ]


def visible_state(storage: RaftStorage) -> dict[str, object]:
    """Everything the read methods show, by name (terms of every index included)."""
    first, last = storage.first_index(), storage.last_index()
    return {
        "first_index": first,
        "last_index": last,
        "terms": [storage.term(index) for index in range(first - 1, last + 1)],
        "entries": storage.entries(first, last + 1, NO_LIMIT),
        "entries within 30 bytes": storage.entries(first, last + 1, 30) if last >= first else [],
        "initial_state": storage.initial_state(),
        "snapshot": storage.snapshot(),
        "applied": storage.app_data().applied(),
        "app_data": list(storage.app_data().scan()),
    }


def _open_raw(path: str) -> Rdict:
    families = [name for name in Rdict.list_cf(path, Options(raw_mode=True)) if name != "default"]
    return Rdict(
        path,
        Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in families},
    )


def rewrite_raw(
    path: str, family: str, key: bytes, change: Callable[[bytes], bytes | None]
) -> None:
    """Replace the value at `key` in column family `family` of the closed database at
    `path` by `change(value)` (None deletes it), bypassing RocksStorage."""
    database = _open_raw(path)
    try:
        column_family = database.get_column_family(family)
        value = column_family.get(key)
        assert isinstance(value, bytes), f"no {key!r} in {family}"
        changed = change(value)
        if changed is None:
            column_family.delete(key)
        else:
            column_family.put(key, changed)
        # Every column family object keeps the database open: drop it before closing.
        del column_family
    finally:
        database.close()


def raw_keys(path: str, family: str) -> list[bytes]:
    """The keys of column family `family` of the closed database at `path`."""
    database = _open_raw(path)
    try:
        column_family = database.get_column_family(family)
        keys = [cast("bytes", key) for key, _ in column_family.items()]
        del column_family
        return keys
    finally:
        database.close()
