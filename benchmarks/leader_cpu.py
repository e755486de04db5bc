"""CPU per request on each raftkv member under a wrk load: where the leader's one core goes.

Starts raftkv as `vs_etcd.py` does (3 × `raftkv serve` on 127.0.0.1, fresh data dirs, the
environment passed on: `RAFTKV_EVENT_LOOP=uvloop` in front measures that loop), writes the
read keys, warms up for 3 s, then runs `--reps` wrk cells of `--duration` seconds and prints,
for each, requests/s, latencies and the CPU time (user + system, from /proc) each member
spent per request answered: the leader's is what bounds throughput on a busy machine, and
it moves less with the machine's noise than requests/s do.

    .venv/bin/python benchmarks/leader_cpu.py [--op put|range|range_serializable]
        [--conns 64] [--reps 3] [--duration 6] [--nodes 3|1] [--http-workers 0]

`--nodes 1` measures one node alone on the machine (as a member on a machine of its own
is); `--http-workers N` gives each node N front processes (their CPU is reported beside
the leader's: docs/performance.md#front-processes-the-second-core).

Linux only. Every process it starts is stopped by its PID when it ends or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

# vs_etcd sits beside this script: on the path however it is run (python, runpy).
if "vs_etcd" not in sys.modules:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_etcd import (
    OPS,
    BenchError,
    Load,
    Raftkv,
    choose_ports,
    find_tool,
    parse_wrk_result,
    run_wrk,
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of the live children of process `pid` (a member's
    front processes, `http_workers`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for child in children:
        with contextlib.suppress(FileNotFoundError):
            total += cpu_seconds(int(child))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=OPS, default="put")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per cell")
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=3)
    parser.add_argument("--http-workers", type=int, default=0, help="front processes per node")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/raftkv-leader-cpu"))
    options = parser.parse_args()
    os.environ["RAFTKV_HTTP_WORKERS"] = str(options.http_workers)  # the members inherit it
    try:
        wrk = find_tool(None, "wrk", "apt-get install wrk")
        _, client_ports = choose_ports()
        cluster = Raftkv(options.work_dir, client_ports[: options.nodes])
        try:
            leader = cluster.start()
            cluster.populate(leader)
            first = cluster.client_ports.index(int(leader.rsplit(":", 1)[1]))
            nodes = options.nodes
            pids = [cluster.processes[(first + step) % nodes].popen.pid for step in range(nodes)]
            run_wrk(wrk, cluster, leader, Load(options.op, options.conns, 3))  # warm-up
            for _ in range(options.reps):
                before = [cpu_seconds(pid) for pid in pids] + [children_cpu_seconds(pids[0])]
                load = Load(options.op, options.conns, options.duration)
                result = parse_wrk_result(run_wrk(wrk, cluster, leader, load).stdout)
                after = [cpu_seconds(pid) for pid in pids] + [children_cpu_seconds(pids[0])]
                micros = [
                    (end - start) / max(result.requests, 1) * 1e6
                    for start, end in zip(before, after, strict=True)
                ]
                fronts = f" (its fronts {micros[-1]:.0f})" if options.http_workers else ""
                followers = " and ".join(f"{value:.0f}" for value in micros[1:-1])
                print(
                    f"{options.op} c={options.conns}: {result.rps:,.0f} req/s, p50 "
                    f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; CPU µs per request: "
                    f"leader {micros[0]:.0f}{fronts}"
                    + (f", followers {followers}" if followers else ""),
                    flush=True,
                )
        finally:
            cluster.stop()
    except BenchError as error:
        print(f"leader_cpu: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
