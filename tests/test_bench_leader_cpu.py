"""benchmarks/leader_cpu.py's one measurement of its own: a process's CPU time from /proc.
Nothing here starts raftkv or wrk."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_cpu_seconds_counts_what_the_process_spends() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("leader_cpu", BENCHMARKS / "leader_cpu.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    before = module.cpu_seconds(os.getpid())
    started = time.process_time()
    while time.process_time() - started < 0.2:  # busy: CPU time, not a wait
        pass
    spent = module.cpu_seconds(os.getpid()) - before
    assert 0.1 <= spent <= 5.0
