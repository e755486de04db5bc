"""Harnesses for the server tests: a 3-node LocalCluster (real Nodes, manual clock) with
one aiohttp server per node on 127.0.0.1, every request run inside `cluster.complete`,
which advances simulated time until the answer has been read.

- `started()` / `Api`: the KV routes; state machines on the wall clock.
- `started_with_leases()` / `LeaseWatchApi`: lease countdowns and watch progress on the
  cluster's clock, optional LeaseKeepers; `Watcher` reads a watch stream, `stuck_watcher`
  opens one that never reads; `real_time_until` waits on what runs on the event loop's own
  clock.
- `served()` / `Served`: one node's API behind the real client port
  (`raftkv.server.listener.ClientPort`), for what only a real socket shows.
- `error_code`: the code of a JSON error body, checking its shape; `Scrape`: a parsed
  /metrics answer; `metrics_text`: a node's /metrics.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from raftkv.kv import KvService, KvSettings, KvStateMachine, LeaseKeeper, ReadLimits, WatchSettings
from raftkv.kv.lease_keeper import LeaseKeeperSettings
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.server import HttpSettings, create_app
from raftkv.server.app import METRICS
from raftkv.server.listener import ClientPort, ClientPortSettings
from raftkv.testing.http_cluster import TEST_AUTH
from raftkv.testing.local_cluster import LocalCluster

Json = Any


# -- the KV routes -------------------------------------------------------------------------


def _kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


@dataclass
class Api:
    cluster: LocalCluster
    services: dict[int, KvService]
    clients: dict[int, TestClient[Any, Any]]

    async def call(self, node: int, method: str, path: str, **kwargs: Any) -> tuple[int, Json]:
        async def request() -> tuple[int, Json]:
            async with self.clients[node].request(method, path, **kwargs) as response:
                return response.status, await response.json()

        return await self.cluster.complete(request())

    def revision(self) -> int:
        return max(service.machine.current_revision() for service in self.services.values())

    def follower(self) -> int:
        leader = self.cluster.leader()
        assert leader is not None
        return next(node for node in self.services if node != leader.id)


@asynccontextmanager
async def started(
    settings: HttpSettings | None = None, kv_settings: KvSettings | None = None
) -> AsyncIterator[Api]:
    cluster = LocalCluster(3, state_machine=_kv_machine)
    await cluster.start()
    await cluster.wait_for_leader()
    services: dict[int, KvService] = {}
    clients: dict[int, TestClient[Any, Any]] = {}
    try:
        for node_id, node in cluster.nodes.items():
            machine = node.state_machine
            assert isinstance(machine, KvStateMachine)
            services[node_id] = KvService(node, machine, kv_settings)
            app = create_app(services[node_id], settings or HttpSettings(auth=TEST_AUTH))
            client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
            await client.start_server()
            clients[node_id] = client
        yield Api(cluster, services, clients)
    finally:
        for client in clients.values():
            await client.close()
        await cluster.stop()


def error_code(body: Json) -> str:
    assert set(body) == {"error"}
    # Only `compacted` carries more: where the history starts now.
    extra = (
        {"compact_revision", "oldest_revision"} if body["error"]["code"] == "compacted" else set()
    )
    assert set(body["error"]) == {"code", "message"} | extra
    code: str = body["error"]["code"]
    return code


# -- the real client port ---------------------------------------------------------------


# How long `Served.raw` waits for the server's whole answer before the test fails.
RAW_WAIT_S = 10.0


def status_of(status_line: bytes) -> int:
    """The status code of an HTTP status line (b"HTTP/1.1 421 Misdirected Request": 421)."""
    return int(status_line.split()[1])


@dataclass
class Served:
    cluster: LocalCluster
    service: KvService
    port: ClientPort
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.port}"

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async def request() -> tuple[int, Any]:
            async with self.session.request(method, self.url + path, **kwargs) as response:
                return response.status, await response.json()

        return await self.cluster.complete(request())

    async def raw(self, request: bytes) -> tuple[bytes, dict[str, str], Any]:
        """Send `request` as it is and read until the server closes the connection (a
        request with Connection: close, or one the server closes after answering): the
        answer's status line, headers (lower-case names) and JSON body (None if empty)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port.port)
        try:
            writer.write(request)
            async with asyncio.timeout(RAW_WAIT_S):
                answer = await reader.read()  # until the server closes
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (x.split(":", 1) for x in lines)}
        return status_line.encode(), headers, json.loads(body) if body else None

    async def keys(self) -> list[str]:
        """Every key in the store."""
        status, answer = await self.call("GET", "/v1/kv?prefix=true&key=")
        assert status == 200
        return [kv["key"] for kv in answer.get("kvs", [])]

    async def metric(self, name: str, **labels: str) -> float:
        async def scrape() -> str:
            async with self.session.get(self.url + "/metrics") as response:
                return await response.text()

        for family in text_string_to_metric_families(await self.cluster.complete(scrape())):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        raise AssertionError(f"no sample {name} {labels}")


@asynccontextmanager
async def served(
    http: HttpSettings | None = None,
    port: ClientPortSettings | None = None,
    limits: ReadLimits | None = None,
    node: NodeSettings | None = None,
) -> AsyncIterator[Served]:
    """A one-node cluster's API served by the real client port on 127.0.0.1."""
    cluster = LocalCluster(1, state_machine=_kv_machine, settings=node)
    await cluster.start()
    await cluster.wait_for_leader()
    only = cluster.nodes[next(iter(cluster.nodes))]
    machine = only.state_machine
    assert isinstance(machine, KvStateMachine)
    service = KvService(only, machine, read_limits=limits)
    app = create_app(service, http or HttpSettings(auth=TEST_AUTH))
    client_port = ClientPort(app, "127.0.0.1", 0, port or ClientPortSettings())
    app[METRICS].client_port = client_port
    await client_port.start()
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            yield Served(cluster, service, client_port, session)
    finally:
        await client_port.close()
        service.close()
        await cluster.stop()


# -- leases and watches ----------------------------------------------------------------------


@dataclass
class LeaseWatchApi:
    cluster: LocalCluster
    services: dict[int, KvService]
    clients: dict[int, TestClient[Any, Any]]
    keepers: dict[int, LeaseKeeper]

    async def call(self, node: int, method: str, path: str, **kwargs: Any) -> tuple[int, Json]:
        async def request() -> tuple[int, Json]:
            async with self.clients[node].request(method, path, **kwargs) as response:
                return response.status, await response.json()

        return await self.cluster.complete(request())

    def leader(self) -> int:
        leader = self.cluster.leader()
        assert leader is not None
        return int(leader.id)

    def follower(self) -> int:
        return next(node for node in self.services if node != self.leader())

    async def open_watch(self, node: int, query: str) -> Watcher:
        response = await self.cluster.complete(self.clients[node].get(f"/v1/watch?{query}"))
        return Watcher(self.cluster, response)


@dataclass
class Watcher:
    cluster: LocalCluster
    response: ClientResponse

    async def message(self, *, max_seconds: float = 30.0) -> Json:
        line = await self.cluster.complete(
            self.response.content.readline(), max_seconds=max_seconds
        )
        assert line.endswith(b"\n"), f"stream ended: {line!r}"
        return json.loads(line)

    async def events(self, count: int) -> list[Json]:
        """The next `count` events (skipping progress messages), checking message order."""
        found: list[Json] = []
        while len(found) < count:
            message = await self.message()
            assert message["type"] in ("events", "progress"), message
            found.extend(message.get("events", []))
        return found

    def close(self) -> None:
        self.response.close()


@asynccontextmanager
async def started_with_leases(
    settings: HttpSettings | None = None,
    watch_settings: WatchSettings | None = None,
    keepers: bool = False,
) -> AsyncIterator[LeaseWatchApi]:
    def machine(storage: RaftStorage) -> KvStateMachine:
        return KvStateMachine(
            storage.app_data(), clock=cluster.clock, watch_settings=watch_settings
        )

    cluster = LocalCluster(3, state_machine=machine)
    await cluster.start()
    await cluster.wait_for_leader()
    services: dict[int, KvService] = {}
    clients: dict[int, TestClient[Any, Any]] = {}
    running: dict[int, LeaseKeeper] = {}
    try:
        for node_id, node in cluster.nodes.items():
            kv = node.state_machine
            assert isinstance(kv, KvStateMachine)
            services[node_id] = KvService(node, kv)
            app = create_app(services[node_id], settings or HttpSettings(auth=TEST_AUTH))
            client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
            await client.start_server()
            clients[node_id] = client
            if keepers:
                running[node_id] = LeaseKeeper(
                    services[node_id], LeaseKeeperSettings(interval_s=0.1)
                )
                running[node_id].start()
                app[METRICS].lease_keeper = running[node_id]
        yield LeaseWatchApi(cluster, services, clients, running)
    finally:
        for keeper in running.values():
            await keeper.stop()
        for service in services.values():
            service.machine.watch_hub.close()
        for client in clients.values():
            await client.close()
        await cluster.stop()


async def metrics_text(client: TestClient[Any, Any]) -> str:
    async with client.get("/metrics") as response:
        return await response.text()


async def stuck_watcher(api: LeaseWatchApi, node: int, query: str) -> socket.socket:
    """A watch whose client never reads (a tiny receive buffer: the server's writes block
    soon). Returns the client's socket."""
    server = api.clients[node].server
    assert server.port is not None
    client = socket.create_connection(("127.0.0.1", server.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    client.sendall(f"GET /v1/watch?{query} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return client


async def real_time_until(condition: Any, what: str, seconds: float = 10.0) -> None:
    """A bounded wait in real time, for what runs on the event loop's own clock (aiohttp's
    writes, the watch route's send and last-words bounds)."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


# -- metrics -----------------------------------------------------------------------------------


class Scrape:
    """One parsed /metrics answer: sample name + labels -> value."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.families.values()
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def label_values(self, name: str, label: str) -> set[str]:
        return {
            dict(labels)[label]
            for sample_name, labels in self.samples
            if sample_name == name and label in dict(labels)
        }
