"""Property: any sequence of writes gives the same reads from RocksStorage as from
MemoryStorage, the reference, including across reopens of the RocksDB database, whatever
the budget of its entry cache (off, a few entries, so that reads span the cache and the
database and entries are evicted, or all of them)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from storage_helpers import CONF_STATE, make_entries, visible_state

from raftkv.raft.core.types import HardState, NodeId, Snapshot, SnapshotMetadata
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.storage.rocks import DEFAULT_ENTRY_CACHE_BYTES, RocksStorage
from raftkv.raft.storage.watermark import WATERMARK_FILE

# Operations name positions relative to the log at the time they run, so that most of them
# land near its ends (where the interesting cases are) and some just outside.


@dataclass(frozen=True)
class Persist:
    hard_state: HardState | None
    start: int  # first entry's index, relative to last_index() + 1
    terms: list[int]
    snapshot: tuple[int, int] | None  # (index relative to last_index(), term)
    sync: bool


@dataclass(frozen=True)
class Compact:
    index: int  # relative to first_index() - 1


@dataclass(frozen=True)
class CreateSnapshot:
    index: int  # relative to first_index() - 1


@dataclass(frozen=True)
class Reopen:
    pass


Operation = Persist | Compact | CreateSnapshot | Reopen

hard_states = st.none() | st.builds(
    HardState,
    term=st.integers(0, 9),
    vote=st.integers(0, 3).map(NodeId),
    commit=st.integers(0, 40),
)
operations = st.one_of(
    st.builds(
        Persist,
        hard_state=hard_states,
        start=st.integers(-4, 1),
        terms=st.lists(st.integers(1, 9), max_size=5),
        snapshot=st.none() | st.tuples(st.integers(-3, 4), st.integers(1, 9)),
        sync=st.booleans(),
    ),
    st.builds(Compact, index=st.integers(-1, 6)),
    st.builds(CreateSnapshot, index=st.integers(-1, 8)),
    st.just(Reopen()),
)


def run(storage: RaftStorage, operation: Operation, model: MemoryStorage) -> str:
    """Apply `operation`, resolved against `model`'s state, and name its outcome."""
    try:
        match operation:
            case Persist(hard_state, start, terms, snapshot, sync):
                installed = None
                if snapshot is not None:
                    index = model.last_index() + snapshot[0]
                    installed = Snapshot(
                        SnapshotMetadata(index, snapshot[1], CONF_STATE), b"image %d" % index
                    )
                first = model.last_index() + 1 + start
                storage.persist(hard_state, make_entries(first, *terms), installed, sync=sync)
            case Compact(index):
                storage.compact(model.first_index() - 1 + index)
            case CreateSnapshot(index):
                index = model.first_index() - 1 + index
                storage.create_snapshot(index, CONF_STATE, b"image %d" % index)
            case Reopen():
                pass
    except Exception as error:
        return type(error).__name__
    return "ok"


def forget_watermark(storage: RocksStorage) -> None:
    """The hard states here are random, not a Raft history (terms and commits go back),
    which the durability watermark rightly refuses at open; this test is about reads."""
    Path(storage.path, WATERMARK_FILE).unlink(missing_ok=True)


# About three cached entries of make_entries' size.
SMALL_ENTRY_CACHE_BYTES = 700


@settings(max_examples=80, deadline=None)
@given(
    st.lists(operations, max_size=30),
    st.sampled_from([0, SMALL_ENTRY_CACHE_BYTES, DEFAULT_ENTRY_CACHE_BYTES]),
)
def test_rocks_storage_reads_like_memory_storage(
    history: list[Operation], entry_cache_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        model = MemoryStorage()
        storage = RocksStorage(Path(directory) / "db", entry_cache_bytes=entry_cache_bytes)
        try:
            for operation in history:
                if isinstance(operation, Compact):
                    target = model.first_index() - 1 + operation.index
                    if target > model.snapshot().metadata.index:
                        continue  # RocksStorage refuses it by design; MemoryStorage allows it
                if isinstance(operation, Reopen):
                    storage.close()
                    forget_watermark(storage)
                    storage = RocksStorage(
                        storage.path, create=False, entry_cache_bytes=entry_cache_bytes
                    )
                # Both run against the state before the operation: the model's.
                outcome = run(storage, operation, model)
                assert outcome == run(model, operation, model), operation
                assert visible_state(storage) == visible_state(model), operation
            # What is on disk, not only what the caches say, must match the model.
            storage.close()
            forget_watermark(storage)
            storage = RocksStorage(storage.path, create=False)
            assert visible_state(storage) == visible_state(model), "after the final reopen"
        finally:
            storage.close()
