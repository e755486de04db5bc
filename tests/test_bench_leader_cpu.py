"""benchmarks/leader_cpu.py's measurements of its own: a process's CPU time from /proc,
and its live children's. Nothing here starts raftkv or wrk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench_helpers import load_benchmark
from raftkv.testing.processes import wait_until


def test_cpu_seconds_counts_what_the_process_spends() -> None:
    load_benchmark("vs_etcd")  # what leader_cpu imports
    module = load_benchmark("leader_cpu")
    before = module.cpu_seconds(os.getpid())
    started = time.process_time()
    while time.process_time() - started < 0.2:  # busy: CPU time, not a wait
        pass
    spent = module.cpu_seconds(os.getpid()) - before
    assert 0.1 <= spent <= 5.0


def test_children_cpu_seconds_counts_the_live_children() -> None:
    """What a member's front processes spend: its live children's CPU time. The parent
    here is a shell whose one child is busy."""
    load_benchmark("vs_etcd")
    module = load_benchmark("leader_cpu")
    busy = f"{sys.executable} -c 'while True: pass' & wait"
    parent = subprocess.Popen(["sh", "-c", busy], start_new_session=True)
    try:
        wait_until(
            lambda: module.children_cpu_seconds(parent.pid) >= 0.2, 30, "the child to spend CPU"
        )
        assert module.cpu_seconds(parent.pid) < 0.2  # the shell itself only waits
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
