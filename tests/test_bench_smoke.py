"""The benchmark scripts that need nothing outside the project run to the end at a tiny
size: two of them had stopped working unnoticed (raft_throughput built a TCP listen address
for the in-process network; kv_scale gave its node cluster id 0). What they measure is not
checked here: benchmarks are run by hand, never timed in `make test`."""

from __future__ import annotations

import subprocess
import sys

from bench_helpers import BENCHMARKS


def run_benchmark(name: str, *arguments: str) -> str:
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *arguments],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Traceback" not in finished.stderr, finished.stderr[-3000:]
    return finished.stdout


def test_raft_throughput_runs_on_each_transport() -> None:
    printed = run_benchmark(
        "raft_throughput", "--seconds", "0.2", "--transports", "inprocess,tcp", "--concurrency", "4"
    )
    assert "inprocess: 3 nodes" in printed and "tcp: 3 nodes" in printed
    printed = run_benchmark(
        "raft_throughput", "--seconds", "0.2", "--transports", "inprocess", "--batch-proposals"
    )
    assert "100-byte proposals, batched" in printed


def test_kv_scale_loads_restarts_and_reads() -> None:
    printed = run_benchmark("kv_scale", "--keys", "2000", "--reads", "20", "--no-snapshot-costs")
    assert "loaded 2,000 keys" in printed
    assert "restart to first linearizable GET" in printed
    assert "limit=10 range, whole key space" in printed
