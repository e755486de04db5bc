"""KvService's reads outside the log (issue 12 C13/C14), on a 3-node LocalCluster over
RocksDB: read-only txns never reach the log, scans run on a read thread over a snapshot,
and every read is bounded (entries scanned, bytes answered)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from kv_helpers import last_indexes, started, stop

from raftkv.kv import (
    Put,
    Range,
    RangeResponse,
    ReadLimits,
    ScanTooLarge,
    Txn,
    TxnCompare,
)
from raftkv.kv.errors import InvalidRequest
from raftkv.kv.mvcc import MvccView
from raftkv.kv.read_budget import ReadBudget
from raftkv.testing.local_cluster import run_scenario


def test_a_read_only_txn_never_reaches_the_log(tmp_path: Path) -> None:
    """It used to be proposed and applied by every member (26-30 s of frozen loops for 128
    count_only prefix ranges over 100k keys)."""

    async def scenario() -> None:
        cluster, services = await started(tmp_path)
        await cluster.complete(services[1].put(b"k/1", b"one"))
        await cluster.complete(services[1].put(b"k/2", b"two"))
        before = last_indexes(cluster)
        txn = Txn(
            [TxnCompare(b"k/1", "value", "=", b"one")],
            [Range(b"k/", b"k0", count_only=True), Range(b"k/2")],
            [Range(b"k/1")],
        )
        for node in (1, 2, 3):
            # With a session too: a read changes nothing, so there is nothing to record.
            result = await cluster.complete(
                services[node].txn(txn, client_id=f"reader-{node}", sequence=7)
            )
            assert result.succeeded and result.header.revision == 3
            count, second = result.responses
            assert isinstance(count, RangeResponse) and count.count == 2
            assert isinstance(second, RangeResponse) and second.kvs[0].value == b"two"
            serial = await cluster.complete(services[node].txn(txn, serializable=True))
            assert serial == result
        assert last_indexes(cluster) == before
        # A txn that writes still goes through the log; serializable is for reads only.
        with pytest.raises(InvalidRequest):
            await cluster.complete(services[2].txn(Txn([], [Put(b"k/3", b"3")]), serializable=True))
        written = await cluster.complete(services[2].txn(Txn([], [Put(b"k/3", b"3")])))
        assert written.header.revision == 4
        await stop(cluster, services)

    run_scenario(scenario)


def test_a_scan_reads_on_a_read_thread_the_state_at_its_read_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes applied while the read thread scans are not in its answer; the loop goes on
    (it applies them) meanwhile."""
    entered, release = threading.Event(), threading.Event()
    threads: list[str] = []
    original = MvccView.range

    def held_range(view: MvccView, request: Range, budget: ReadBudget) -> RangeResponse:
        threads.append(threading.current_thread().name)
        entered.set()
        assert release.wait(10)
        return original(view, request, budget)

    monkeypatch.setattr(MvccView, "range", held_range)

    async def scenario() -> None:
        cluster, services = await started(tmp_path)
        service = services[2]
        for number in range(5):
            await cluster.complete(service.put(b"k/%d" % number, b"old"))
        reading = asyncio.ensure_future(service.range(Range(b"k/", b"k0")))
        await cluster.run_until(entered.is_set)
        # The loop is free: writes commit and apply while the read thread is held.
        await cluster.complete(service.put(b"k/0", b"new"))
        await cluster.complete(service.put(b"k/9", b"new"))
        release.set()
        result = await cluster.complete(reading)
        assert [kv.value for kv in result.kvs] == [b"old"] * 5
        assert result.count == 5 and result.header.revision == 6
        assert threads == [threads[0]] and threads[0].startswith("raftkv-read")
        await stop(cluster, services)

    run_scenario(scenario)


def test_every_read_is_bounded_by_the_read_limits(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = ReadLimits(max_scan_entries=50, max_txn_scan_entries=20, max_response_bytes=1)
        cluster, services = await started(tmp_path, limits)
        service = services[3]
        batch = [Put(b"k/%02d" % number, b"v") for number in range(40)]
        await cluster.complete(service.txn(Txn([], batch)))
        # What a count scans depends on whether the store has counted its live keys yet
        # (key_count): it has, so the scans below are the counted ones.
        assert all(each.machine.wait_for_live_key_count(10) for each in services.values())
        result = await cluster.complete(service.range(Range(b"k/", b"k0")))
        assert (len(result.kvs), result.count, result.more) == (1, 40, True)
        # Half of the keys in the range, half outside: each count scans 35 entries (turns
        # of 1, 2, 4 and 8 keys in the range and outside it, then the range's last 5).
        half = Range(b"k/", b"k/20", count_only=True)
        assert (await cluster.complete(service.range(half))).count == 20
        with pytest.raises(ScanTooLarge, match="max_scan_entries=50"):
            await cluster.complete(service.txn(Txn([], [half, half])))
        # A txn that writes: its ranges are scanned here first, and refused unproposed.
        before = last_indexes(cluster)
        with pytest.raises(ScanTooLarge, match="max_txn_scan_entries=20"):
            await cluster.complete(service.txn(Txn([], [Put(b"x", b"1"), half])))
        assert last_indexes(cluster) == before
        # Within it, it applies, and its answer is cut to max_response_bytes like a read's.
        small = Txn([], [Put(b"x", b"1"), Range(b"k/", b"k/10")])
        written = await cluster.complete(service.txn(small))
        answered = written.responses[1]
        assert isinstance(answered, RangeResponse)
        assert (len(answered.kvs), answered.count, answered.more) == (1, 10, True)
        await stop(cluster, services)

    run_scenario(scenario)


def test_the_state_hash_is_read_off_the_loop_and_equals_the_machines(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster, services = await started(tmp_path)
        await cluster.complete(services[1].put(b"a", b"1"))
        for service in services.values():
            await cluster.run_until(lambda service=service: service.machine.current_revision() == 2)
            digest = await cluster.complete(service.state_hash())
            assert digest == service.machine.state_hash()
        await stop(cluster, services)

    run_scenario(scenario)
