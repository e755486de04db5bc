"""benchmarks/leader_cpu.py's one measurement of its own: a process's CPU time from /proc.
Nothing here starts raftkv or wrk."""

from __future__ import annotations

import os
import time

from bench_helpers import load_benchmark


def test_cpu_seconds_counts_what_the_process_spends() -> None:
    load_benchmark("vs_etcd")  # what leader_cpu imports
    module = load_benchmark("leader_cpu")
    before = module.cpu_seconds(os.getpid())
    started = time.process_time()
    while time.process_time() - started < 0.2:  # busy: CPU time, not a wait
        pass
    spent = module.cpu_seconds(os.getpid()) - before
    assert 0.1 <= spent <= 5.0
