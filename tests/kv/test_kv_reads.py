"""Reads served outside the log (issue 12 C13/C14): MVCC views, read-only txns, and the
per-request read budget (entries scanned, bytes answered)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kv_helpers import apply_in_batches, random_workload

from raftkv.kv import DeleteRange, KvStateMachine, Put, Range, ScanTooLarge, Txn, TxnCompare
from raftkv.kv.commands import RangeResponse, is_read_only
from raftkv.kv.mvcc import MvccStore, MvccView
from raftkv.kv.read_budget import KV_OVERHEAD_BYTES, ReadBudget
from raftkv.raft.storage.base import StorageClosed
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage

UNBOUNDED = ReadBudget()


def reads_of(rng: random.Random, revision: int, compacted: int) -> list[Range | Txn]:
    """A mix of ranges and read-only txns over the workload's key space (see kv_helpers)."""
    keys = [bytes([byte]) * length for byte in b"\x00a\xffb" for length in (1, 2, 3)]
    reads: list[Range | Txn] = [Range(b"\0", b"\0"), Range(b"\0", b"\0", count_only=True)]
    for _ in range(12):
        key = rng.choice(keys)
        past = rng.randint(max(1, compacted), revision)
        reads.append(
            Range(
                key,
                rng.choice([b"", b"\0", rng.choice(keys)]),
                limit=rng.randint(0, 3),
                revision=rng.choice([0, past]),
                keys_only=rng.random() < 0.3,
            )
        )
    for _ in range(4):
        ranges = [Range(rng.choice(keys), rng.choice([b"", b"\0"])) for _ in range(2)]
        compare = TxnCompare(rng.choice(keys), "version", ">", 0)
        reads.append(Txn([compare], ranges, ranges[::-1]))
    return reads


def read(view: MvccView, request: Range | Txn) -> object:
    try:
        if isinstance(request, Range):
            return view.range(request, ReadBudget())
        return view.txn(request, ReadBudget())
    except Exception as error:  # a refusal is part of the answer: compare it too
        return (type(error), str(error))


def read_all(view: MvccView, requests: list[Range | Txn]) -> list[object]:
    return [read(view, request) for request in requests]


def test_a_threaded_view_answers_the_state_it_was_taken_at_whatever_applies_after(
    tmp_path: Path,
) -> None:
    """The view is a snapshot: puts, deletes and compactions applied after it was taken
    (while a worker thread reads it) change nothing it answers."""
    commands = random_workload(seed=12, count=700)
    storage = RocksStorage(tmp_path / "rocks")
    rng = random.Random(5)
    try:
        machine = KvStateMachine(storage.app_data())
        with ThreadPoolExecutor(1) as worker:
            for start in range(0, 600, 100):
                apply_in_batches(machine, commands[start : start + 100], 10, first_index=start + 1)
                reads = reads_of(rng, machine.current_revision(), machine.compacted_revision())
                live = machine.read_view(threaded=False)
                expected = [read(live, request) for request in reads]
                expected_hash = live.state_hash()
                view = machine.read_view(threaded=True)
                assert view.threaded and view.revision == machine.current_revision()
                # Applied after the view was taken, before it is read.
                apply_in_batches(machine, commands[600:700], 10, first_index=start + 101)
                answered = worker.submit(read_all, view, reads)
                hashed = worker.submit(view.state_hash)
                assert answered.result() == expected
                assert hashed.result() == expected_hash
                view.close()
                # Undo the extra commands' effect on later rounds: start over from the log.
                machine.restore(_empty_snapshot(), 0, 0)
                apply_in_batches(machine, commands[: start + 100], 10)
    finally:
        storage.close()


def _empty_snapshot() -> bytes:
    return KvStateMachine(MemoryAppData()).snapshot()


def test_a_read_only_txn_answers_as_it_would_through_the_log() -> None:
    machine = KvStateMachine(MemoryAppData())
    apply_in_batches(machine, random_workload(seed=4, count=300), 20)
    rng = random.Random(8)
    store = machine._store  # the log's path: MvccStore.txn, as apply runs it
    for request in reads_of(rng, store.current_revision(), store.compacted_revision()):
        if not isinstance(request, Txn):
            continue
        revision = store.current_revision()
        view = machine.read_view(threaded=False)
        assert view.txn(request, UNBOUNDED) == store.txn(request)
        assert store.current_revision() == revision  # a read creates no revision


def test_is_read_only_is_true_only_without_puts_and_deletes_in_either_branch() -> None:
    assert is_read_only(Txn([], [Range(b"a")], [Range(b"b", b"\0")]))
    assert is_read_only(Txn([TxnCompare(b"a", "version", "=", 0)]))
    assert not is_read_only(Txn([], [Range(b"a")], [Put(b"a", b"1")]))
    assert not is_read_only(Txn([], [DeleteRange(b"a")], []))


def loaded_store(keys: int, value_bytes: int) -> MvccStore:
    store = MvccStore(MemoryAppData())
    for number in range(keys):
        store.put(Put(b"k/%04d" % number, b"v" * value_bytes))
    store.commit(1, 1)
    return store


def test_the_scan_budget_counts_every_entry_a_request_reads_and_refuses_past_it() -> None:
    store = loaded_store(100, 1)
    view = store.view(threaded=False)
    # The count reads the rest of the range and the keys outside it in turns, until one
    # of them ends (key_count). Every key is in this range, so it reads the key it answers
    # and one more before it finds no key outside: 2 entries.
    prefix = Range(b"k/", b"k0", limit=1)
    result = view.range(prefix, ReadBudget(max_scan_entries=2))
    assert (len(result.kvs), result.count, result.more) == (1, 100, True)
    with pytest.raises(ScanTooLarge) as refused:
        view.range(prefix, ReadBudget(max_scan_entries=1))
    assert refused.value.code == "scan_too_large" and "max_scan_entries=1" in str(refused.value)
    # Half of them: the answered key, then turns of 1, 2, 4, 8, 16 keys in the range and
    # as many outside it, then the range's last 18 keys: 81 entries.
    half = Range(b"k/", b"k/0050", limit=1)
    result = view.range(half, ReadBudget(max_scan_entries=81))
    assert (len(result.kvs), result.count, result.more) == (1, 50, True)
    with pytest.raises(ScanTooLarge):
        view.range(half, ReadBudget(max_scan_entries=80))
    # The budget is the request's: two ranges of 60 entries each do not fit 100.
    halves = [Range(b"k/", b"k/0060", count_only=True), Range(b"k/0040", b"k0", count_only=True)]
    with pytest.raises(ScanTooLarge):
        view.txn(Txn([], halves), ReadBudget(max_scan_entries=100))
    # A past revision reads the history: one entry per stored version.
    store.put(Put(b"k/0000", b"again"))
    store.commit(2, 1)
    past = Range(b"k/0000", b"k/0001", revision=2)
    assert store.view(threaded=False).range(past, ReadBudget(max_scan_entries=2)).count == 1
    with pytest.raises(ScanTooLarge):
        store.view(threaded=False).range(past, ReadBudget(max_scan_entries=1))


def test_the_response_budget_answers_what_fits_with_more_and_an_exact_count() -> None:
    store = loaded_store(10, 100)
    view = store.view(threaded=False)
    each = len(b"k/0000") + 100 + KV_OVERHEAD_BYTES
    budget = ReadBudget(max_response_bytes=3 * each)
    result = view.range(Range(b"k/", b"k0"), budget)
    assert ([kv.key for kv in result.kvs], result.count, result.more) == (
        [b"k/0000", b"k/0001", b"k/0002"],
        10,
        True,
    )
    # The first key-value is answered whatever its size.
    first = view.range(Range(b"k/", b"k0"), ReadBudget(max_response_bytes=1))
    assert (len(first.kvs), first.count, first.more) == (1, 10, True)
    # Once full, later ranges of the request answer none (count still exact).
    txn = Txn([], [Range(b"k/", b"k0", limit=2), Range(b"k/0005"), Range(b"k/", b"k0")])
    answer = view.txn(txn, ReadBudget(max_response_bytes=2 * each + 1))
    assert all(isinstance(response, RangeResponse) for response in answer.responses)
    shapes = [
        (len(response.kvs), response.count, response.more)
        for response in answer.responses
        if isinstance(response, RangeResponse)
    ]
    assert shapes == [(2, 10, True), (0, 1, True), (0, 10, True)]
    # Within the budget, nothing changes: more only when limit leaves keys out.
    whole = view.range(Range(b"k/", b"k0", limit=10), ReadBudget(max_response_bytes=10 * each))
    assert (len(whole.kvs), whole.more) == (10, False)


def test_a_closed_rocksdb_view_stops_a_scan_and_never_keeps_the_database_open(
    tmp_path: Path,
) -> None:
    storage = RocksStorage(tmp_path / "rocks")
    store = MvccStore(storage.app_data())
    for number in range(10):
        store.put(Put(b"k/%d" % number, b"v"))
    store.commit(1, 1)
    view = store.view(threaded=True)
    scan = storage.app_data().read_view().scan()
    assert next(scan)[0] < next(scan)[0]
    view.close()
    with pytest.raises(StorageClosed):
        view.range(Range(b"k/", b"k0"), ReadBudget())
    # Views still open when the database closes are closed with it: it can reopen at once.
    storage.close()
    with pytest.raises(StorageClosed):
        next(scan)
    del scan
    RocksStorage(tmp_path / "rocks").close()
