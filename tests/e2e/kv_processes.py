"""A raftkv cluster of real `python -m raftkv serve` processes for end-to-end tests.

Each node gets free loopback ports and a data dir under the test's tmp_path; its stdout
and stderr go to files there (so a full pipe never blocks it, and a failure can show the
log). Waits are bounded polls on conditions (a node's started line, a leader known by
every node), never bare sleeps. `stop()` SIGTERMs every node it started and SIGKILLs any
that outlive the deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from raftkv.testing.certificates import TlsFiles
from raftkv.testing.processes import free_port, wait_until

# Short ticks: elections in ~0.5 s keep failover tests quick.
TICK_MS = 50


class KvProcessCluster:
    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        etcd_grpc: bool = False,
        arguments: Sequence[str] = (),
        tls: TlsFiles | None = None,
        node_arguments: Callable[[int], Sequence[str]] = lambda node: (),
    ) -> None:
        self.root = root
        # More `raftkv serve` flags, for every node; and for each node its own (its
        # certificate, say).
        self.arguments = list(arguments)
        # TLS on every node's client port (one certificate for all, valid for 127.0.0.1):
        # the nodes serve https and ask clients for a certificate from the same CA.
        self.tls = tls
        if tls is not None:
            self.arguments += [
                "--cert-file", str(tls.cert_file),
                "--key-file", str(tls.key_file),
                "--client-ca-file", str(tls.ca_file),
            ]  # fmt: skip
        self.node_arguments = node_arguments
        root.mkdir(parents=True, exist_ok=True)
        self.ids = list(range(1, nodes + 1))
        self.client_ports = {node: free_port() for node in self.ids}
        self.peer_ports = {node: free_port() for node in self.ids}
        # etcd's v3 gRPC API (--listen-client-grpc) on a port of each node's own, when asked.
        self.etcd_grpc = etcd_grpc
        self.grpc_ports = {node: free_port() for node in self.ids} if etcd_grpc else {}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.http = (
            httpx.Client(timeout=10.0)
            if tls is None
            else httpx.Client(timeout=10.0, verify=tls.client_context())
        )

    def url(self, node: int) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.client_ports[node]}"

    def endpoints(self) -> list[str]:
        return [self.url(node) for node in self.ids]

    def grpc_endpoint(self, node: int) -> str:
        """host:port of `node`'s etcd gRPC API (only with etcd_grpc=True)."""
        return f"127.0.0.1:{self.grpc_ports[node]}"

    def grpc_endpoints(self) -> list[str]:
        return [self.grpc_endpoint(node) for node in self.ids]

    def log(self, node: int) -> str:
        path = self.root / f"node-{node}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def serve_command(self, node: int) -> list[str]:
        cluster = ",".join(f"{peer}=127.0.0.1:{self.peer_ports[peer]}" for peer in self.ids)
        return [
            sys.executable,
            "-m",
            "raftkv",
            "serve",
            "--id",
            str(node),
            "--data-dir",
            str(self.root / f"data-{node}"),
            "--listen-client",
            f"127.0.0.1:{self.client_ports[node]}",
            "--listen-peer",
            f"127.0.0.1:{self.peer_ports[node]}",
            "--initial-cluster",
            cluster,
            "--tick-interval-ms",
            str(TICK_MS),
            "--request-timeout-s",
            "3",
            *(["--listen-client-grpc", self.grpc_endpoint(node)] if self.etcd_grpc else []),
            *self.arguments,
            *self.node_arguments(node),
        ]

    def add_node(self) -> int:
        """Ports for one more node (not started); its id, never one used before: a removed
        member's id must not come back (it would find its own removal in the log)."""
        node = max([*self.ids, *self.client_ports]) + 1
        self.ids.append(node)
        self.client_ports[node] = free_port()
        self.peer_ports[node] = free_port()
        if self.etcd_grpc:
            self.grpc_ports[node] = free_port()
        return node

    def join_command(self, node: int, join: str, *, auto_promote: bool) -> list[str]:
        """Serve `node` joining the cluster at client URL `join` instead of founding one."""
        command = self.serve_command(node)
        at = command.index("--initial-cluster")
        del command[at : at + 2]
        command += ["--join", join] + (["--auto-promote"] if auto_promote else [])
        return command

    def start(
        self,
        node: int,
        environ: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.launch(node, environ, command)
        self.wait_started(node)

    def launch(
        self,
        node: int,
        environ: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """Start `node`'s process, not waiting for it to serve (wait_started)."""
        out = (self.root / f"node-{node}.out").open("wb")
        err = (self.root / f"node-{node}.err").open("ab")
        self.processes[node] = subprocess.Popen(
            command or self.serve_command(node),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(environ or {})},
        )
        out.close()
        err.close()

    def wait_started(self, node: int) -> None:
        def started() -> bool:
            process = self.processes[node]
            if process.poll() is not None:
                raise AssertionError(f"node {node} exited {process.returncode}:\n{self.log(node)}")
            return b'"started"' in (self.root / f"node-{node}.out").read_bytes()

        wait_until(started, 60, f"node {node} to start")

    def start_all(self, environ: dict[str, str] | None = None) -> None:
        # All at once: each process spends most of a second importing and opening its
        # store, which the others can do meanwhile.
        for node in self.ids:
            self.launch(node, environ)
        for node in self.ids:
            self.wait_started(node)
        self.wait_for_leader()

    def status(self, node: int) -> dict[str, Any] | None:
        try:
            response = self.http.get(f"{self.url(node)}/v1/status", timeout=2.0)
        except httpx.TransportError:
            return None
        answer: dict[str, Any] = response.json()
        return answer

    def running(self) -> list[int]:
        return [node for node, process in self.processes.items() if process.poll() is None]

    def wait_for_leader(self, timeout: float = 30) -> int:
        """The leader id once every running node knows the same one."""
        found: list[int] = []

        def agreed() -> bool:
            leaders = set()
            for node in self.running():
                status = self.status(node)
                leaders.add(0 if status is None else status["leader"])
            if len(leaders) == 1 and 0 not in leaders and leaders <= set(self.running()):
                found[:] = list(leaders)
                return True
            return False

        wait_until(agreed, timeout, "a leader every running node knows")
        return found[0]

    def metrics(self, node: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """`node`'s /metrics samples: (name, labels) -> value."""
        response = self.http.get(f"{self.url(node)}/metrics", timeout=5.0)
        assert response.status_code == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def request(self, node: int, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = self.http.request(method, f"{self.url(node)}{path}", **kwargs)
        return response.status_code, response.json()

    def kill(self, node: int, sig: int = signal.SIGKILL) -> int:
        process = self.processes[node]
        process.send_signal(sig)
        return process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.http.close()


def cli(
    cluster: KvProcessCluster, *arguments: str, cluster_tls: bool = True
) -> subprocess.CompletedProcess[str]:
    """`raftkv ARGUMENTS --endpoints <every running node>`, its output captured; for a TLS
    cluster with the cluster's CA and certificate, unless `cluster_tls` is False (the
    arguments then say what to show, if anything)."""
    endpoints = ",".join(cluster.url(node) for node in cluster.running())
    tls = cluster.tls
    if tls is not None and cluster_tls:
        arguments = (
            *arguments,
            *("--cacert", str(tls.ca_file), "--cert", str(tls.cert_file)),
            *("--key", str(tls.key_file)),
        )
    return subprocess.run(
        [sys.executable, "-m", "raftkv", *arguments, "--endpoints", endpoints],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def running_cluster(
    root: Path, nodes: int = 3, *, etcd_grpc: bool = False, environ: dict[str, str] | None = None
) -> Iterator[KvProcessCluster]:
    cluster = KvProcessCluster(root, nodes, etcd_grpc=etcd_grpc)
    try:
        cluster.start_all(environ)
        yield cluster
    finally:
        cluster.stop()


def last_json_line(path: Path) -> dict[str, Any]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer
