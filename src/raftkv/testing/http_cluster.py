"""An in-process raftkv cluster behind real HTTP servers, on a manual clock: for tests of
code that talks to raftkv over its HTTP API (the Python client, the CLI, an application's
own client code), fast and deterministic.

`http_cluster()` starts a 3-node `LocalCluster` of KV state machines with one HTTP server
per node on 127.0.0.1 (an ephemeral port each) and every member's client URL published.
Async clients (`HttpCluster.client`) run in the cluster's event loop through `run`:
simulated time advances until the call is done, and the client's backoff and deadlines
use the same manual clock. Blocking code (a SyncClient, the CLI) runs in a worker thread
through `run_blocking`, while simulated time follows the wall clock.

    async def scenario() -> None:
        async with http_cluster() as api, api.client() as client:
            await api.run(client.put("k", "v"))

    run_scenario(scenario)  # raftkv.testing.local_cluster
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from random import Random
from typing import Any, TypeVar

import httpx
from aiohttp.test_utils import TestServer

from raftkv.client import Client, ClientSettings
from raftkv.kv import KvService, KvSettings, KvStateMachine, ReadLimits
from raftkv.kv.auth_service import AuthSettings
from raftkv.kv.passwords import CHEAP_COST
from raftkv.raft.storage.base import RaftStorage
from raftkv.server import HttpSettings, create_app
from raftkv.testing.local_cluster import LocalCluster
from raftkv.testing.processes import free_port

# Auth for clusters on a manual clock: the cheapest password hash, computed on the loop, so
# a login is not a thread racing simulated time.
TEST_AUTH = AuthSettings(password_cost=CHEAP_COST, hash_on_loop=True)

__all__ = ["HttpCluster", "closed_port_url", "http_cluster"]

T = TypeVar("T")

# How often simulated time catches up with the wall clock while blocking code runs.
_WALL_STEP_S = 0.005


def _kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 nothing listens on (bound, then released)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class HttpCluster:
    """The running cluster: its nodes (`cluster`), each node's `KvService` and client URL."""

    cluster: LocalCluster
    services: dict[int, KvService]
    # Node id -> its client URL ("http://127.0.0.1:port").
    urls: dict[int, str]
    servers: list[TestServer] = field(default_factory=list)

    def leader_id(self) -> int:
        leader = self.cluster.leader()
        assert leader is not None
        return int(leader.id)

    def follower_ids(self) -> list[int]:
        leader = self.leader_id()
        return [node for node in self.urls if node != leader]

    def endpoints(self, *nodes: int) -> list[str]:
        """The URLs of `nodes` in that order (every node's, by id, if none given)."""
        return [self.urls[node] for node in (nodes or sorted(self.urls))]

    def client(
        self,
        endpoints: list[str] | None = None,
        settings: ClientSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Client:
        """An async client on the cluster's manual clock."""
        return Client(
            endpoints if endpoints is not None else self.endpoints(),
            settings,
            transport=transport,
            rng=Random(0),
            sleep=self.cluster.clock.sleep,
            clock=self.cluster.clock.now,
        )

    async def run(self, awaitable: Awaitable[T]) -> T:
        return await self.cluster.complete(awaitable)

    async def run_blocking(
        self, function: Callable[..., T], *arguments: Any, timeout_s: float = 20.0
    ) -> T:
        """`function(*arguments)` in a worker thread, while this loop serves the cluster and
        advances its clock with the wall clock; fails after `timeout_s` (a bound for a
        hang, not a timing the test relies on)."""
        task = asyncio.ensure_future(asyncio.to_thread(function, *arguments))
        async with asyncio.timeout(timeout_s):
            last = time.monotonic()
            while not task.done():
                await asyncio.wait([task], timeout=_WALL_STEP_S)
                now = time.monotonic()
                self.cluster.clock.advance(now - last)
                last = now
        return task.result()

    def revision(self) -> int:
        return max(service.machine.current_revision() for service in self.services.values())


@asynccontextmanager
async def http_cluster(
    settings: HttpSettings | None = None,
    kv_settings: KvSettings | None = None,
    read_limits: ReadLimits | None = None,
) -> AsyncIterator[HttpCluster]:
    cluster = LocalCluster(3, state_machine=_kv_machine)
    await cluster.start()
    await cluster.wait_for_leader()
    api = HttpCluster(cluster, {}, {})
    try:
        for node_id, node in cluster.nodes.items():
            machine = node.state_machine
            assert isinstance(machine, KvStateMachine)
            service = KvService(node, machine, kv_settings, read_limits=read_limits)
            server = TestServer(
                create_app(service, settings or HttpSettings(auth=TEST_AUTH)),
                host="127.0.0.1",
                port=0,
            )
            await server.start_server()
            api.servers.append(server)
            api.services[int(node_id)] = service
            api.urls[int(node_id)] = f"http://127.0.0.1:{server.port}"
        for member, service in api.services.items():
            await cluster.complete(service.publish_member(member, api.urls[member]))
        await cluster.run_until(
            lambda: all(len(s.machine.member_client_urls()) == 3 for s in api.services.values())
        )
        yield api
    finally:
        for server in api.servers:
            await server.close()
        await cluster.stop()
