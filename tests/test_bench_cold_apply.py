"""benchmarks/cold_apply.py's measurement: each timed apply stores its put (a benchmark that
timed applies refused for a bad command would measure nothing)."""

from __future__ import annotations

from pathlib import Path

from bench_helpers import load_benchmark
from raftkv.kv import KvStateMachine, Range
from raftkv.raft.storage.rocks import RocksStorage


def test_each_timed_apply_stores_its_put(tmp_path: Path) -> None:
    module = load_benchmark("cold_apply")
    storage = RocksStorage(tmp_path)
    try:
        machine = KvStateMachine(storage.app_data())
        for sleep in (True, False):
            first = 1 if sleep else 21
            assert module.median_apply_us(machine, first, 20, 0.0001, sleep=sleep) > 0
        stored = machine.range(Range(b"key/", b"key0"))
        assert [item.key for item in stored.kvs] == [b"key/%08d" % index for index in range(1, 41)]
        assert machine.applied_index() == 40
    finally:
        storage.close()
