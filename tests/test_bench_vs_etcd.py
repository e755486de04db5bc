"""The pure parts of benchmarks/vs_etcd.py: wrk's RESULT line, CPU counters, the CSV rows
and the ratio table. Nothing here starts etcd, raftkv or wrk."""

from __future__ import annotations

import pytest

from bench_helpers import load_benchmark

vs_etcd = load_benchmark("vs_etcd")

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:24080
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.32ms    2.10ms  55.45ms   96.12%
  639 requests in 2.00s, 151.12KB read
Requests/sec:    319.40
RESULT op=put requests=639 duration_s=2.001 rps=319.4 mean_ms=3.319 p50_ms=2.825 \
p90_ms=4.947 p99_ms=10.720 max_ms=55.450 err_status=3 err_connect=1 err_read=0 err_write=0 \
err_timeout=2
"""


def test_parse_wrk_result_reads_the_result_line_and_sums_the_errors() -> None:
    result = vs_etcd.parse_wrk_result(WRK_OUTPUT)
    assert result == vs_etcd.WrkResult(
        requests=639,
        rps=319.4,
        mean_ms=3.319,
        p50_ms=2.825,
        p90_ms=4.947,
        p99_ms=10.72,
        max_ms=55.45,
        errors=6,
    )


def test_parse_wrk_result_refuses_output_without_a_result_line() -> None:
    with pytest.raises(vs_etcd.BenchError, match="no RESULT line"):
        vs_etcd.parse_wrk_result("Running 2s test @ http://127.0.0.1:1\n")


def test_parse_wrk_result_refuses_a_result_line_missing_a_field() -> None:
    with pytest.raises(vs_etcd.BenchError, match="p99_ms"):
        vs_etcd.parse_wrk_result(WRK_OUTPUT.replace("p99_ms=10.720 ", ""))


def test_cpu_busy_counts_idle_and_iowait_as_not_busy() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    before = [100, 0, 50, 1000, 10, 0, 0, 0, 0, 0]
    after = [160, 0, 70, 1100, 20, 0, 0, 10, 0, 0]
    busy, steal = vs_etcd.cpu_busy(before, after)
    assert busy == pytest.approx(100 * 90 / 200)
    assert steal == pytest.approx(100 * 10 / 200)


def _row(system: str, op: str, conc: int, rep: int, *, rps: float, p99_ms: float) -> object:
    return vs_etcd.Row(
        system=system,
        op=op,
        conc=conc,
        rep=rep,
        rps=rps,
        mean_ms=1.0,
        p50_ms=p99_ms / 4,
        p90_ms=p99_ms / 2,
        p99_ms=p99_ms,
        max_ms=p99_ms * 2,
        errors=rep - 1,
        rev_delta=0,
        cpu_busy_pct=50.0 + rep,
        cpu_steal_pct=0.0,
        loadavg=1.0,
    )


def test_ratio_table_shows_medians_over_reps_and_raftkv_over_etcd() -> None:
    rows = [
        _row("etcd", "put", 1, 1, rps=1000, p99_ms=4.0),
        _row("etcd", "put", 1, 2, rps=1200, p99_ms=8.0),
        _row("etcd", "put", 1, 3, rps=1100, p99_ms=2.0),
        _row("raftkv", "put", 1, 1, rps=600, p99_ms=8.0),
        _row("raftkv", "put", 1, 2, rps=500, p99_ms=16.0),
        _row("raftkv", "put", 1, 3, rps=550, p99_ms=12.0),
        # raftkv alone (etcd's cell failed): no ratio to show
        _row("raftkv", "range", 64, 1, rps=9000, p99_ms=20.0),
        _row("etcd", "range_serializable", 256, 1, rps=4000, p99_ms=10.0),
        _row("raftkv", "range_serializable", 256, 1, rps=6000, p99_ms=5.0),
    ]
    assert vs_etcd.ratio_table(rows).splitlines() == [
        "| op | conns | etcd req/s (p50/p99 ms) | raftkv req/s (p50/p99 ms) | req/s ratio"
        " | p99 ratio | CPU % etcd/raftkv | errors etcd/raftkv |",
        "|---|---|---|---|---|---|---|---|",
        "| put | 1 | 1,100 (1.0/4.0) | 550 (3.0/12.0) | 0.50 | 3.00 | 52/52 | 3/3 |",
        "| range_serializable | 256 | 4,000 (2.5/10.0) | 6,000 (1.2/5.0) | 1.50 | 0.50"
        " | 51/51 | 0/0 |",
    ]


def test_ratio_table_shows_no_ratio_over_a_zero() -> None:
    rows = [
        _row("etcd", "put", 1, 1, rps=0, p99_ms=0.0),
        _row("raftkv", "put", 1, 1, rps=10, p99_ms=1.0),
    ]
    assert vs_etcd.ratio_table(rows).splitlines()[-1] == (
        "| put | 1 | 0 (0.0/0.0) | 10 (0.2/1.0) | - | - | 51/51 | 0/0 |"
    )


def test_format_row_writes_every_csv_column() -> None:
    text = vs_etcd.format_row(_row("raftkv", "put", 64, 2, rps=1234.5, p99_ms=8.0))
    assert list(text) == vs_etcd.CSV_COLUMNS
    assert text["system"] == "raftkv"
    assert text["conc"] == "64"
    assert text["rps"] == "1234.500"
    assert text["errors"] == "1"
