"""The MVCC history's hash at a revision (raftkv.kv.history_hash, MvccView.history_hash):
what etcd's HashKV(revision) answers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from kv_helpers import apply_in_batches, random_workload

from raftkv.kv import Compact, DeleteRange, KvStateMachine, Put, ScanTooLarge
from raftkv.kv.errors import Compacted, FutureRevision
from raftkv.kv.history_hash import HistoryHash
from raftkv.kv.layout import HISTORY_PREFIX, prefix_successor
from raftkv.kv.mvcc import MvccStore
from raftkv.kv.read_budget import ReadBudget
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage

UNBOUNDED = ReadBudget()


def hash_at(store: MvccStore, revision: int, budget: ReadBudget = UNBOUNDED) -> HistoryHash:
    view = store.view(threaded=False)
    try:
        return view.history_hash(revision, budget)
    finally:
        view.close()


def random_writes(store: MvccStore, rng: random.Random, count: int, index: int) -> int:
    """`count` puts and deletes (no compaction) over a few keys, committed one by one from
    log index `index`; the next index."""
    keys = [b"a", b"b", b"b\x00", b"c", b"\xff"]
    for _ in range(count):
        key = rng.choice(keys)
        if rng.random() < 0.75:
            store.put(Put(key, rng.randbytes(rng.randint(0, 6))))
        else:
            store.delete_range(DeleteRange(key, rng.choice([b"", b"\0"])))
        store.commit(index, 1)
        index += 1
    return index


def test_members_fed_the_same_commands_hash_alike_at_every_revision(tmp_path: Path) -> None:
    """Two state machines — one in memory, one on RocksDB read by a snapshot view — fed the
    same commands in different batches hash alike at every revision they can still read."""
    commands = random_workload(seed=16, count=400)
    storage = RocksStorage(tmp_path / "rocks")
    try:
        memory = KvStateMachine(MemoryAppData())
        rocks = KvStateMachine(storage.app_data())
        apply_in_batches(memory, commands, 1)
        apply_in_batches(rocks, commands, 17)
        current, compacted = memory.current_revision(), memory.compacted_revision()
        assert (rocks.current_revision(), rocks.compacted_revision()) == (current, compacted)
        assert compacted > 0  # the workload compacts: the bound is exercised
        live, snapshot = memory.read_view(threaded=False), rocks.read_view(threaded=True)
        assert snapshot.threaded
        digests = set()
        for revision in range(compacted, current + 1):
            expected = live.history_hash(revision, UNBOUNDED)
            assert snapshot.history_hash(revision, UNBOUNDED) == expected
            assert (expected.revision, expected.compacted_revision) == (revision, compacted)
            assert expected.current_revision == current
            digests.add(expected.digest)
        # Each revision changed something: each has its own hash.
        assert len(digests) == current - compacted + 1
        live.close()
        snapshot.close()
    finally:
        storage.close()


def test_a_hash_at_a_revision_is_unchanged_by_later_writes() -> None:
    store = MvccStore(MemoryAppData())
    rng = random.Random(7)
    index = random_writes(store, rng, 60, index=1)
    before = {
        revision: hash_at(store, revision) for revision in range(1, store.current_revision() + 1)
    }
    current = store.current_revision()
    random_writes(store, rng, 60, index)
    assert store.current_revision() > current
    for revision, expected in before.items():
        again = hash_at(store, revision)
        assert again.digest == expected.digest
        assert again.current_revision == store.current_revision()


def test_revision_0_hashes_the_current_revision() -> None:
    store = MvccStore(MemoryAppData())
    random_writes(store, random.Random(3), 10, index=1)
    current = hash_at(store, store.current_revision())
    assert hash_at(store, 0) == current
    assert hash_at(store, -5) == current  # as etcd: any revision <= 0 is the current one


def test_only_revisions_from_the_compacted_one_to_the_current_one_are_hashed() -> None:
    store = MvccStore(MemoryAppData())
    index = random_writes(store, random.Random(4), 10, index=1)
    store.compact(Compact(5))
    store.commit(index, 1)
    with pytest.raises(Compacted):
        hash_at(store, 4)
    with pytest.raises(FutureRevision):
        hash_at(store, store.current_revision() + 1)
    assert hash_at(store, 5).compacted_revision == 5  # at the compacted revision: allowed


def test_the_hash_covers_what_compaction_keeps_and_changes_with_a_compaction() -> None:
    """Entries at or below the compacted revision that compaction keeps (a key's newest
    one) are hashed: two stores whose only difference is an old value hash apart. A
    compaction drops history, so it changes the hash at a revision above it."""
    hashes = []
    for old_value in (b"one", b"two"):
        store = MvccStore(MemoryAppData())
        store.put(Put(b"old", old_value))  # revision 2, never written again
        for number in range(4):
            store.put(Put(b"new", b"%d" % number))
        store.commit(1, 1)
        before = hash_at(store, 6)
        store.compact(Compact(4))
        store.commit(2, 1)
        after = hash_at(store, 6)
        assert after.digest != before.digest and after.compacted_revision == 4
        hashes.append(after.digest)
    assert hashes[0] != hashes[1]


def test_the_hash_scans_every_stored_version_within_the_budget() -> None:
    store = MvccStore(MemoryAppData())
    random_writes(store, random.Random(9), 20, index=1)
    view = store.view(threaded=False)
    entries = sum(1 for _ in view._source.scan(HISTORY_PREFIX, prefix_successor(HISTORY_PREFIX)))
    # Revision 2 needs the whole history read (later versions are skipped, not avoided).
    assert view.history_hash(2, ReadBudget(max_scan_entries=entries)).revision == 2
    with pytest.raises(ScanTooLarge):
        view.history_hash(2, ReadBudget(max_scan_entries=entries - 1))
