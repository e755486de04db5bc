"""Writes/s and reads/s of a 3-node `raftkv dev` cluster through the HTTP API.

Starts `python -m raftkv dev` (three `raftkv serve` processes, RocksDB with fsync, gRPC
between them) in a temporary directory on free ports, then for each mode and each number of
connections (1, 16, 64, 256) runs closed-loop clients for `--seconds` and reports requests/s
and p50/p99 latency:
- `write`: PUT of a 100-byte value to the leader (followers would forward: one more hop);
- `read-linearizable`: GET of a known key, spread over all three nodes (ReadIndex each);
- `read-serializable`: the same GET with consistency=serializable (local state).

The load generator is one asyncio process (aiohttp) on the same 2-core machine as the three
servers, so at high connection counts it competes with them for CPU: the numbers are a floor
for what the servers can do.

    .venv/bin/python benchmarks/http_kv.py [--seconds 5] [--connections 1,16,64,256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from raftkv.testing.processes import free_port

VALUE = "v" * 100
KEYS = 1000


def free_port_block(count: int) -> int:
    """A base port with `count` free ports after it (checked, not reserved)."""
    while True:
        base = free_port()  # below the ephemeral range, where client connections take theirs
        try:
            sockets = []
            for port in range(base, base + count):
                taken = socket.socket()
                sockets.append(taken)
                taken.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for taken in sockets:
                taken.close()
        return base


def start_cluster(root: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    out = root / "dev.out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raftkv",
            "dev",
            "--base-port",
            str(free_port_block(3)),
            "--peer-base-port",
            str(free_port_block(3)),
            "--data-dir",
            str(root / "data"),
            "--log-level",
            "warning",
        ],
        stdout=out.open("wb"),
        stderr=(root / "dev.err").open("wb"),
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while b'"ready"' not in out.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"raftkv dev did not start:\n{(root / 'dev.err').read_text()}")
        time.sleep(0.1)
    endpoints: list[str] = json.loads(out.read_text().splitlines()[-1])["endpoints"]
    return process, endpoints


async def leader_endpoint(session: aiohttp.ClientSession, endpoints: list[str]) -> str:
    for _ in range(200):
        for url in endpoints:
            async with session.get(f"{url}/v1/status") as response:
                status = await response.json()
            if status["leader"] and status["leader"] == status["id"]:
                return url
        await asyncio.sleep(0.05)
    raise SystemExit("no leader")


async def run_mode(
    mode: str, targets: list[str], connections: int, seconds: float
) -> tuple[float, float, float]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + seconds

        async def worker(number: int) -> None:
            nonlocal errors
            target = targets[number % len(targets)]
            sequence = 0
            while time.perf_counter() < stop_at:
                sequence += 1
                key = f"bench/{(number * 7919 + sequence) % KEYS}"
                started = time.perf_counter()
                if mode == "write":
                    request = session.put(f"{target}/v1/kv/{key}", json={"value": VALUE})
                elif mode == "read-linearizable":
                    request = session.get(f"{target}/v1/kv/{key}")
                else:
                    request = session.get(f"{target}/v1/kv/{key}?consistency=serializable")
                async with request as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker(number) for number in range(connections)))
        elapsed = time.perf_counter() - began
    if errors:
        print(f"  ({errors} requests failed)")
    latencies.sort()
    rate = len(latencies) / elapsed
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return rate, p50, p99


async def benchmark(endpoints: list[str], connection_counts: list[int], seconds: float) -> None:
    async with aiohttp.ClientSession() as session:
        leader = await leader_endpoint(session, endpoints)
        for index in range(KEYS):  # every key the reads ask for exists
            async with session.put(f"{leader}/v1/kv/bench/{index}", json={"value": VALUE}):
                pass
    print(f"leader {leader}; {KEYS} keys of {len(VALUE)} bytes; {seconds:g} s per run")
    print(f"{'mode':<20}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs 1':>8}")
    for mode in ("write", "read-linearizable", "read-serializable"):
        targets = [leader] if mode == "write" else endpoints
        baseline = None
        for connections in connection_counts:
            rate, p50, p99 = await run_mode(mode, targets, connections, seconds)
            baseline = baseline or rate
            print(
                f"{mode:<20}{connections:>6}{rate:>10,.0f}{p50:>9.2f}{p99:>9.2f}"
                f"{rate / baseline:>7.1f}x",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="1,16,64,256")
    arguments = parser.parse_args()
    counts = [int(part) for part in arguments.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="raftkv-http-bench-") as directory:
        process, endpoints = start_cluster(Path(directory))
        try:
            asyncio.run(benchmark(endpoints, counts, arguments.seconds))
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
