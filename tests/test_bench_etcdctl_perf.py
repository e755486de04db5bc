"""The pure parts of benchmarks/etcdctl_perf.py: what `etcdctl check perf` printed, and the
table. Nothing here starts etcd, raftkv or etcdctl."""

from __future__ import annotations

import pytest

from bench_helpers import load_benchmark

# The script imports vs_etcd, its neighbour: loaded first, it is found in sys.modules.
load_benchmark("vs_etcd")
perf = load_benchmark("etcdctl_perf")

PASSED = """\
 59 / 60   98.33% 60 / 60  100.00% 1m0s
PASS: Throughput is 150 writes/s
PASS: Slowest request took 0.189209s
PASS: Stddev is 0.013192s
PASS
"""
# As etcdctl 3.5 printed it for raftkv at load m (2026-12-06): the failed measures have no
# "FAIL: " prefix.
FAILED = """\
Defragmented "127.0.0.1:19282"
FAIL: Throughput too low: 812 writes/s
Slowest request took too long: 1.504410s
PASS: Stddev is 0.083120s
FAIL
"""


def test_a_passed_and_a_failed_check_are_read() -> None:
    assert perf.parse_check_perf(PASSED) == perf.PerfResult(True, 150.0, 0.189209, 0.013192)
    assert perf.parse_check_perf(FAILED) == perf.PerfResult(False, 812.0, 1.50441, 0.08312)


def test_an_etcdctl_that_measured_nothing_is_an_error() -> None:
    with pytest.raises(perf.BenchError, match=r"measured nothing.*connection refused"):
        perf.parse_check_perf("Error: connection refused\n")


def test_the_table_has_each_system_and_the_ratios() -> None:
    results = {
        ("s", "etcd"): (perf.parse_check_perf(PASSED), 40.0),
        ("s", "raftkv"): (perf.parse_check_perf(FAILED), 90.0),
    }
    table = perf.perf_table(results)
    assert "| s | etcd | PASS | 150 | 0.189 | 0.013 | 40 |" in table
    assert "| s | raftkv | FAIL | 812 | 1.504 | 0.083 | 90 |" in table
    assert "| s | raftkv/etcd | | 5.41 | 7.95 | | |" in table
