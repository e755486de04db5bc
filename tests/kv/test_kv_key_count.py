"""The store's count of its live keys (raftkv.kv.key_count), and the range counts it makes
cheap: the total is exact after every write, rolled-back request, restore and reopen, and
a count answered from it equals the keys actually in the range."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from kv_helpers import apply_in_batches, random_workload

from raftkv.kv import KvStateMachine
from raftkv.kv.commands import Put, Range, Txn
from raftkv.kv.errors import LeaseNotFound
from raftkv.kv.layout import INDEX_PREFIX, prefix_successor
from raftkv.kv.mvcc import MvccStore
from raftkv.kv.read_budget import ReadBudget
from raftkv.raft.storage.base import AppData
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage


def index_entries(app: AppData) -> int:
    return sum(1 for _ in app.scan(INDEX_PREFIX, prefix_successor(INDEX_PREFIX)))


def counted(machine: KvStateMachine) -> int | None:
    assert machine.wait_for_live_key_count(30)
    return machine.live_keys()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["memory", "rocks"])
def test_the_count_follows_every_write_restore_and_reopen(
    kind: str, seed: int, tmp_path: Path
) -> None:
    """Puts, deletes, txns (some refused half way, so rolled back), lease revokes and
    compactions, with a restore from a snapshot and a reopen in the middle."""
    commands = random_workload(seed=seed, count=600)
    storage = RocksStorage(tmp_path / "rocks") if kind == "rocks" else None
    app: AppData = storage.app_data() if storage is not None else MemoryAppData()
    try:
        machine = KvStateMachine(app)
        for start in range(0, 300, 20):
            apply_in_batches(machine, commands[start : start + 20], 5, first_index=start + 1)
            assert counted(machine) == index_entries(app)
        snapshot = machine.snapshot()
        apply_in_batches(machine, commands[300:400], 10, first_index=301)
        machine.restore(snapshot, 300, 1)
        assert counted(machine) == index_entries(app)
        reopened = KvStateMachine(app)
        # Written before the reopened store's background count may have finished: it
        # counted the state as the store opened, and these writes on top.
        apply_in_batches(reopened, commands[300:600], 10, first_index=301)
        assert counted(reopened) == index_entries(app)
    finally:
        if storage is not None:
            storage.close()


@pytest.mark.parametrize("seed", [4, 5])
def test_a_count_from_the_total_equals_the_keys_in_the_range(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    storage = RocksStorage(tmp_path / "rocks")
    try:
        machine = KvStateMachine(storage.app_data())
        apply_in_batches(machine, random_workload(seed=seed, count=400), 20)
        assert counted(machine) is not None
        keys = [bytes([rng.choice(b"\x00a\xffb")]) * rng.randint(1, 3) for _ in range(12)]
        for _ in range(300):
            key, range_end = rng.choice(keys), rng.choice([b"\0", rng.choice(keys)])
            everything = Range(key, range_end)
            request = Range(key, range_end, limit=rng.randint(0, 3), count_only=rng.random() < 0.3)
            for view in (
                machine.read_view(threaded=False),
                machine.read_view(threaded=True),
            ):
                try:
                    truth = len(view.range(everything, ReadBudget()).kvs)
                    assert view.range(request, ReadBudget()).count == truth
                finally:
                    view.close()
            assert machine.range(request).count == truth
    finally:
        storage.close()


def test_a_limited_range_over_many_keys_scans_a_few_entries_for_its_exact_count() -> None:
    store = MvccStore(MemoryAppData())
    for number in range(2_000):
        store.put(Put(b"key/%05d" % number, b"v"))
    store.put(Put(b"other", b"v"))
    store.commit(1, 1)
    view = store.view(threaded=False)
    # The 10 it answers, then turns: 1 in the range, the one key outside, 2 in the range,
    # the end of the keys outside.
    result = view.range(Range(b"key/", b"key0", limit=10), ReadBudget(max_scan_entries=14))
    assert (len(result.kvs), result.count, result.more) == (10, 2_000, True)
    everything = view.range(Range(b"\0", b"\0", count_only=True), ReadBudget(max_scan_entries=1))
    assert everything.count == 2_001


def test_a_refused_request_leaves_the_count_as_it_was() -> None:
    store = MvccStore(MemoryAppData())
    store.put(Put(b"a", b"1"))
    with pytest.raises(LeaseNotFound):
        store.txn(Txn([], [Put(b"b", b"2"), Put(b"c", b"3", lease=99)]))
    assert store.live_keys.total() == 1
    assert store.range(Range(b"\0", b"\0", count_only=True)).count == 1


def test_a_count_stopped_by_close_never_answers_wrong(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "rocks")
    try:
        store = MvccStore(storage.app_data())
        for number in range(500):
            store.put(Put(b"k%03d" % number, b"v"))
        store.commit(1, 1)
        reopened = MvccStore(storage.app_data())
        reopened.close()  # the count may have finished first, or not: either is right
        assert reopened.live_keys.wait(30)
        assert reopened.live_keys.total() in (None, 500)
        assert reopened.range(Range(b"k", b"l", limit=1)).count == 500
    finally:
        storage.close()
