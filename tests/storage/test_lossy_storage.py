"""LossyMemoryStorage keeps exactly the synced prefix of its writes across a crash."""

from __future__ import annotations

from raftkv.raft.core.types import Entry, HardState, NodeId
from raftkv.testing.lossy_storage import LossyMemoryStorage


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=index) for index in range(first, last + 1)]


def test_a_crash_forgets_unsynced_writes_only() -> None:
    storage = LossyMemoryStorage()
    storage.persist(HardState(term=1, vote=NodeId(1)), entries(1, 3), None, sync=True)
    storage.persist(HardState(term=1, vote=NodeId(1), commit=3), entries(4, 5), None, sync=False)
    assert storage.last_index() == 5  # visible before the crash
    storage.lose_unsynced()
    assert storage.last_index() == 3
    assert storage.hard_state == HardState(term=1, vote=NodeId(1))
    assert storage.writes_lost == 1


def test_a_sync_makes_earlier_unsynced_writes_durable() -> None:
    storage = LossyMemoryStorage()
    storage.persist(HardState(term=1, commit=0), entries(1, 2), None, sync=False)
    storage.persist(None, entries(3, 4), None, sync=True)
    storage.lose_unsynced()
    assert storage.last_index() == 4
    assert storage.writes_lost == 0


def test_later_appends_do_not_leak_into_the_durable_copy() -> None:
    storage = LossyMemoryStorage()
    storage.persist(None, entries(1, 2), None, sync=True)
    storage.persist(None, entries(3, 3), None, sync=False)  # appends in place
    storage.lose_unsynced()
    assert [entry.index for entry in storage.entries(1, 3, 1 << 20)] == [1, 2]
