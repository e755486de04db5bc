"""Memory of watch fan-out: one `raftkv serve` node, many `prev_kv` watchers, large puts.

Starts `python -m raftkv serve` (one node, in a temporary directory, on free ports), opens
`--watchers` watches of one key with `prev_kv=true` over raw sockets, of which `--dead`
never read (a 4 KiB receive buffer: the server's writes to them block), then puts
`--puts` values of `--value-bytes` each. It reports the server's resident memory (VmRSS)
idle, at its peak and at the end of `--wait-s` (long enough for `watch_send_timeout_s`,
10 s, to end the dead watchers), and what the watch metrics say. Extra server flags go
after `--`:

    .venv/bin/python benchmarks/watch_fanout_memory.py [--watchers 100] [--dead 50] \\
        [--puts 4] [--value-bytes 1048576] [--wait-s 14] [-- --watch-max-total-buffered-bytes N]

RSS after the peak also depends on the allocator: memory Python frees is not always given
back to the system at once (glibc keeps freed heap pages it cannot trim).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from raftkv.testing.processes import free_port, wait_until


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def watcher(port: int, reads: bool, received: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if not reads:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(b"GET /v1/watch?key=k&prev_kv=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    try:
        if not reads:
            await asyncio.Event().wait()  # holds the connection open, never reading
        while chunk := await reader.read(1 << 20):
            received[0] += len(chunk)
    finally:
        writer.close()


async def measure(arguments: argparse.Namespace, server_flags: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="raftkv-watch-memory-"))
    port = free_port()
    out = root / "serve.out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raftkv",
            "serve",
            "--data-dir",
            str(root / "data"),
            "--listen-client",
            f"127.0.0.1:{port}",
            "--listen-peer",
            f"127.0.0.1:{free_port()}",
            "--log-level",
            "warning",
            *server_flags,
        ],
        stdout=out.open("wb"),
        stderr=(root / "serve.err").open("wb"),
        stdin=subprocess.DEVNULL,
    )
    watchers: list[asyncio.Task[None]] = []
    try:
        wait_until(lambda: b'"started"' in out.read_bytes(), 60, "the node to start")
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=30) as http:
            deadline = time.monotonic() + 30
            while (await http.put(f"{url}/v1/kv/warm", json={"value": "up"})).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the node did not take a write within 30 s")
                await asyncio.sleep(0.1)
            idle = rss_mib(process.pid)
            received = [0]
            watchers = [
                asyncio.create_task(watcher(port, number >= arguments.dead, received))
                for number in range(arguments.watchers)
            ]
            await asyncio.sleep(1)  # let every watch start
            for number in range(arguments.puts):
                value = f"{number}" * arguments.value_bytes
                answer = await http.put(
                    f"{url}/v1/kv/k", json={"value": value[: arguments.value_bytes]}
                )
                answer.raise_for_status()
            peak = 0
            until = time.monotonic() + arguments.wait_s
            while time.monotonic() < until:
                peak = max(peak, rss_mib(process.pid))
                await asyncio.sleep(0.1)
            end = rss_mib(process.pid)
            metrics = (await http.get(f"{url}/metrics")).text
        print(
            f"watchers={arguments.watchers} dead={arguments.dead} puts={arguments.puts} "
            f"value_bytes={arguments.value_bytes} flags={' '.join(server_flags) or '-'}"
        )
        print(f"RSS MiB: idle {idle}, peak {peak}, after {arguments.wait_s:g} s {end}")
        print(f"bytes received by the reading watchers: {received[0]}")
        for line in metrics.splitlines():
            if line.startswith(("raftkv_watch", 'raftkv_limit_hits_total{limit="watch')):
                print(line)
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--dead", type=int, default=50, help="watchers that never read")
    parser.add_argument("--puts", type=int, default=4)
    parser.add_argument("--value-bytes", type=int, default=1 << 20)
    parser.add_argument("--wait-s", type=float, default=14.0)
    arguments, server_flags = parser.parse_known_args()
    if server_flags[:1] == ["--"]:
        server_flags = server_flags[1:]
    asyncio.run(measure(arguments, server_flags))


if __name__ == "__main__":
    main()
