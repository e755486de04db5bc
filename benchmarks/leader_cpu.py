"""CPU per request on each raftkv member under a wrk load: where the leader's one core goes.

Starts raftkv as `vs_etcd.py` does (3 × `raftkv serve` on 127.0.0.1, fresh data dirs, the
environment passed on: `RAFTKV_EVENT_LOOP=uvloop` in front measures that loop), writes the
read keys, warms up for 3 s, then runs `--reps` wrk cells of `--duration` seconds and prints,
for each, requests/s, latencies and the CPU time (user + system, from /proc) each member
spent per request answered: the leader's is what bounds throughput on a busy machine, and
it moves less with the machine's noise than requests/s do.

    .venv/bin/python benchmarks/leader_cpu.py [--op put|range|range_serializable]
        [--conns 64] [--reps 3] [--duration 6]

Linux only. Every process it starts is stopped by its PID when it ends or fails.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=OPS, default="put")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per cell")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/raftkv-leader-cpu"))
    options = parser.parse_args()
    try:
        wrk = find_tool(None, "wrk", "apt-get install wrk")
        _, client_ports = choose_ports()
        cluster = Raftkv(options.work_dir, client_ports)
        try:
            leader = cluster.start()
            cluster.populate(leader)
            first = cluster.client_ports.index(int(leader.rsplit(":", 1)[1]))
            pids = [cluster.processes[(first + step) % 3].popen.pid for step in range(3)]
            run_wrk(wrk, cluster, leader, Load(options.op, options.conns, 3))  # warm-up
            for _ in range(options.reps):
                before = [cpu_seconds(pid) for pid in pids]
                load = Load(options.op, options.conns, options.duration)
                result = parse_wrk_result(run_wrk(wrk, cluster, leader, load).stdout)
                after = [cpu_seconds(pid) for pid in pids]
                micros = [
                    (end - start) / max(result.requests, 1) * 1e6
                    for start, end in zip(before, after, strict=True)
                ]
                print(
                    f"{options.op} c={options.conns}: {result.rps:,.0f} req/s, p50 "
                    f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; CPU µs per request: "
                    f"leader {micros[0]:.0f}, followers {micros[1]:.0f} and {micros[2]:.0f}",
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
