"""benchmarks/leader_cpu.py's one measurement of its own: a process's CPU time from /proc.
Nothing here starts raftkv or wrk."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def test_cpu_seconds_counts_what_the_process_spends() -> None:
    if "vs_etcd" not in sys.modules:
        _load("vs_etcd")  # what leader_cpu imports, loaded as tests/test_bench_vs_etcd does
    module = _load("leader_cpu")
    before = module.cpu_seconds(os.getpid())
    started = time.process_time()
    while time.process_time() - started < 0.2:  # busy: CPU time, not a wait
        pass
    spent = module.cpu_seconds(os.getpid()) - before
    assert 0.1 <= spent <= 5.0
