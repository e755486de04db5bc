"""`raftkv dev`: a local cluster of `raftkv serve` child processes, for trying raftkv out.

Node i (1-based) listens for clients on `base_port + i - 1` and for peers on
`peer_base_port + i - 1` (8080.. and 7080.. by default) and keeps its data in
`<data_dir>/<i>`. Each child's log lines are printed prefixed with its id. Ctrl-C or SIGTERM
stops every child gracefully (SIGTERM to each, then SIGKILL after a deadline) and returns.

With `tls`, peers speak mutual TLS and the client ports (HTTP, etcd's gRPC) serve TLS, with
certificates from a throwaway CA kept in `<data_dir>/certs` (`raftkv.server.certificates`):
made on the first run, reused by the next ones while they are valid for these nodes, made
again when not. Clients trust `<data_dir>/certs/ca.pem`; none is asked for a certificate.

Each child runs in its own session, so a terminal's Ctrl-C reaches only this supervisor
(which then stops the children once, in order) and not the children directly; and each child
watches its stdin, a pipe from this supervisor: if the supervisor dies without stopping them
(kill -9), the pipe closes and the children stop themselves. No orphans either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from raftkv.server.certificates import CertificateError, ClusterDirectory, ensure_cluster
from raftkv.server.settings import format_cluster

# How long children get to stop after SIGTERM before SIGKILL.
STOP_DEADLINE_S = 15.0
# How long a child may take to print its started line.
START_DEADLINE_S = 60.0


@dataclass(frozen=True)
class DevCluster:
    nodes: int = 3
    base_port: int = 8080
    peer_base_port: int = 7080
    # etcd's v3 gRPC API on etcd_base_port + i - 1 (0: not served).
    etcd_base_port: int = 2379
    data_dir: Path = Path("data/dev")
    host: str = "127.0.0.1"
    log_level: str = "info"
    # Peers use mutual TLS with the certificates in `certificates` (data_dir/certs).
    tls: bool = False

    @property
    def certificates(self) -> ClusterDirectory:
        return ClusterDirectory(self.data_dir / "certs")

    def client_address(self, node: int) -> str:
        return f"{self.host}:{self.base_port + node - 1}"

    def peer_address(self, node: int) -> str:
        return f"{self.host}:{self.peer_base_port + node - 1}"

    def etcd_address(self, node: int) -> str:
        """Where node `node` serves etcd's API ("" when it does not)."""
        if not self.etcd_base_port:
            return ""
        return f"{self.host}:{self.etcd_base_port + node - 1}"

    def command(self, node: int) -> list[str]:
        cluster = {member: self.peer_address(member) for member in range(1, self.nodes + 1)}
        return [
            sys.executable,
            "-m",
            "raftkv",
            "serve",
            "--id",
            str(node),
            "--data-dir",
            str(self.data_dir / str(node)),
            "--listen-client",
            self.client_address(node),
            "--listen-peer",
            self.peer_address(node),
            "--listen-client-grpc",
            self.etcd_address(node),
            "--initial-cluster",
            format_cluster(cluster),
            "--log-level",
            self.log_level,
            "--stop-on-stdin-eof",
            *self.tls_flags(node),
        ]

    def tls_flags(self, node: int) -> list[str]:
        if not self.tls:
            return []
        files = self.certificates.node(node)
        return [
            *("--peer-ca-file", str(self.certificates.ca_file)),
            *("--peer-cert-file", str(files.cert_file)),
            *("--peer-key-file", str(files.key_file)),
            # The same certificate serves clients (server and client use, valid for
            # 127.0.0.1 and localhost); no client certificate is asked for.
            *("--cert-file", str(files.cert_file)),
            *("--key-file", str(files.key_file)),
        ]

    def endpoints(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://{self.client_address(node)}" for node in range(1, self.nodes + 1)]

    def ca_file(self) -> Path | None:
        """The CA clients trust (with `tls`), else None."""
        return self.certificates.ca_file if self.tls else None

    def etcd_endpoints(self) -> list[str]:
        """etcd's gRPC endpoints (empty when not served), for etcdctl --endpoints."""
        if not self.etcd_base_port:
            return []
        return [self.etcd_address(node) for node in range(1, self.nodes + 1)]


async def _relay(node: int, stream: asyncio.StreamReader | None, started: asyncio.Event) -> None:
    """Print the child's output lines prefixed with its id; note its started line."""
    if stream is None:
        return
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        with contextlib.suppress(ValueError):
            document = json.loads(text)
            if isinstance(document, dict) and "started" in document:
                started.set()
                continue
        print(f"[node {node}] {text}", file=sys.stderr, flush=True)


def prepare_certificates(cluster: DevCluster) -> bool:
    """The certificates `cluster.tls` needs, in place (made or reused); False, after one
    line saying why, if they cannot be."""
    try:
        ensure_cluster(cluster.certificates.path, range(1, cluster.nodes + 1))
    except CertificateError as error:
        print(f"raftkv dev: {error}", file=sys.stderr, flush=True)
        return False
    return True


async def run_dev(cluster: DevCluster) -> int:
    if cluster.tls and not prepare_certificates(cluster):
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    children: dict[int, asyncio.subprocess.Process] = {}
    relays: list[asyncio.Task[None]] = []
    try:
        started: dict[int, asyncio.Event] = {}
        for node in range(1, cluster.nodes + 1):
            process = await asyncio.create_subprocess_exec(
                *cluster.command(node),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            children[node] = process
            started[node] = asyncio.Event()
            relays.append(asyncio.create_task(_relay(node, process.stdout, started[node])))
            relays.append(asyncio.create_task(_relay(node, process.stderr, started[node])))
        if not await _wait_started(children, started, stop):
            return 1
        removed = await removed_nodes(cluster.endpoints(), ca_file=cluster.ca_file())
        if removed:
            print(
                f"raftkv dev: node(s) {', '.join(map(str, removed))} of the old cluster in "
                f"{cluster.data_dir} were removed from it, so they answer every request with "
                f"'removed'; stopping: to start over, delete {cluster.data_dir} and run it again",
                file=sys.stderr,
                flush=True,
            )
            return 1
        etcd_endpoints = ",".join(cluster.etcd_endpoints())
        etcd_line = f"; etcd API (etcdctl --endpoints={etcd_endpoints})" if etcd_endpoints else ""
        ca = cluster.certificates.ca_file
        tls_line = (
            f"; peers use mutual TLS and clients TLS (CA {ca}, each node's certificate and "
            f"key beside it: see raftkv certs create --help): raftkv --cacert {ca} ..., "
            f"curl --cacert {ca} {cluster.endpoints()[0]}/v1/cluster"
            + (f", etcdctl --cacert {ca} --endpoints=..." if etcd_endpoints else "")
            if cluster.tls
            else ""
        )
        print(
            f"raftkv dev: {cluster.nodes} nodes; endpoints {','.join(cluster.endpoints())}"
            f"{etcd_line}{tls_line}; data in {cluster.data_dir}. Ctrl-C stops them.",
            file=sys.stderr,
            flush=True,
        )
        # The ready line comes last: whoever waits for it has the line above too (a test
        # that read the line above as soon as it saw "ready" once found it not written yet).
        ready: dict[str, object] = {"cluster": "ready", "endpoints": cluster.endpoints()}
        if etcd_endpoints:
            ready["etcd_endpoints"] = cluster.etcd_endpoints()
        if cluster.tls:
            ready["ca_file"] = str(cluster.certificates.ca_file)
        print(json.dumps(ready), flush=True)
        exits = {asyncio.create_task(process.wait()): node for node, process in children.items()}
        stop_task = asyncio.create_task(stop.wait())
        try:
            while exits:
                done, _ = await asyncio.wait(
                    [stop_task, *exits], return_when=asyncio.FIRST_COMPLETED
                )
                if stop_task in done:
                    return 0
                for task in done:
                    node = exits.pop(task)
                    print(
                        f"raftkv dev: node {node} exited with {children[node].returncode}",
                        file=sys.stderr,
                        flush=True,
                    )
            return 1
        finally:
            for task in [stop_task, *exits]:
                task.cancel()
    finally:
        await _stop_children(children)
        for relay in relays:
            relay.cancel()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)


async def removed_nodes(
    endpoints: list[str],
    timeout_s: float = 15.0,
    interval_s: float = 0.1,
    *,
    ca_file: Path | None = None,
) -> list[int]:
    """The nodes (1-based, in endpoint order) whose `/v1/status` says they were removed
    from the cluster: a data dir left by an earlier run in which they were.

    A restarted node learns it was removed only once it has replayed its log (or heard
    from a member), a moment after it prints that it started; so each node is asked
    until it says it was removed, or has settled (it knows a leader and has applied what
    it knows is committed), for at most `timeout_s`. A node that does not answer is not
    counted (its own log says why)."""
    import aiohttp  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    removed: set[int] = set()
    settled: set[int] = set()
    client_timeout = aiohttp.ClientTimeout(total=min(timeout_s, 5.0))
    # https endpoints (`raftkv dev --tls`): the dev cluster's own CA.
    tls = ssl.create_default_context(cafile=ca_file) if ca_file is not None else True
    connector = aiohttp.TCPConnector(ssl=tls)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        while True:
            for node, endpoint in enumerate(endpoints, start=1):
                if node in removed or node in settled:
                    continue
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(f"{endpoint}/v1/status") as response:
                        status = await response.json()
                    if not isinstance(status, dict):
                        continue
                    if status.get("removed") is True:
                        removed.add(node)
                    elif status.get("leader") and status.get("applied_index", 0) >= status.get(
                        "commit_index", 0
                    ):
                        settled.add(node)
            if len(removed) + len(settled) == len(endpoints) or loop.time() >= deadline:
                return sorted(removed)
            await asyncio.sleep(interval_s)


async def _wait_started(
    children: dict[int, asyncio.subprocess.Process],
    started: dict[int, asyncio.Event],
    stop: asyncio.Event,
) -> bool:
    waits = [asyncio.create_task(event.wait()) for event in started.values()]
    exits = [asyncio.create_task(process.wait()) for process in children.values()]
    stop_task = asyncio.create_task(stop.wait())
    try:
        async with asyncio.timeout(START_DEADLINE_S):
            while not all(event.is_set() for event in started.values()):
                await asyncio.wait([*waits, *exits, stop_task], return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    return False
                for node, process in children.items():
                    if process.returncode is not None:
                        print(
                            f"raftkv dev: node {node} exited with {process.returncode} "
                            "while starting (see its log above)",
                            file=sys.stderr,
                            flush=True,
                        )
                        return False
    except TimeoutError:
        print("raftkv dev: the nodes did not start in time", file=sys.stderr, flush=True)
        return False
    finally:
        for task in [*waits, *exits, stop_task]:
            task.cancel()
    return True


async def _stop_children(children: dict[int, asyncio.subprocess.Process]) -> None:
    for process in children.values():
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    for node, process in children.items():
        try:
            async with asyncio.timeout(STOP_DEADLINE_S):
                await process.wait()
        except TimeoutError:
            print(f"raftkv dev: node {node} did not stop; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
