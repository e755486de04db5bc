"""Harnesses for the client tests (tests/cli uses them too).

- `http_cluster()`: a 3-node LocalCluster (manual clock) with one HTTP server per node on
  127.0.0.1 and every member's client URL published. Async clients run in the cluster's
  event loop through `run` (simulated time advances until the call is done; the client's
  backoff and deadlines use the same manual clock); blocking code (SyncClient, the CLI)
  runs in a worker thread through `run_blocking`, while simulated time follows the wall
  clock.
- `Stub`: a scripted server for httpx.MockTransport: each request gets the next reply.
- `FakeTime`: a clock whose sleeps return at once and move it forward.
- `Intercept`: a transport that forwards to the network, letting a test replace an answer
  after the server acted on the request (a lost answer, a 504).
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
import msgspec
from aiohttp.test_utils import TestServer

from raftkv.client import Client, ClientSettings
from raftkv.kv import KvService, KvSettings, KvStateMachine, ReadLimits
from raftkv.raft.storage.base import RaftStorage
from raftkv.server import HttpSettings, create_app
from raftkv.testing.local_cluster import LocalCluster
from raftkv.testing.processes import free_port

T = TypeVar("T")

# How often simulated time catches up with the wall clock while blocking code runs.
_WALL_STEP_S = 0.005


def kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 nothing listens on (bound, then released)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class HttpCluster:
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
    cluster = LocalCluster(3, state_machine=kv_machine)
    await cluster.start()
    await cluster.wait_for_leader()
    api = HttpCluster(cluster, {}, {})
    try:
        for node_id, node in cluster.nodes.items():
            machine = node.state_machine
            assert isinstance(machine, KvStateMachine)
            service = KvService(node, machine, kv_settings, read_limits=read_limits)
            server = TestServer(create_app(service, settings), host="127.0.0.1", port=0)
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


# -- stubs -----------------------------------------------------------------------------------


def answer(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, content=msgspec.json.encode(body))


def error(status: int, code: str, message: str = "scripted") -> httpx.Response:
    return answer(status, {"error": {"code": code, "message": message}})


def header(revision: int = 5, leader: int = 0) -> dict[str, int]:
    """An answer's header; leader 0 (unknown) keeps the client from asking /v1/cluster."""
    return {"revision": revision, "leader": leader}


PUT_OK = answer(200, {"header": header()})
TXN_OK = answer(200, {"header": header(), "succeeded": True, "responses": []})


Reply = httpx.Response | Exception


class Stub:
    """A scripted server: the n-th request gets the n-th reply (an exception is raised, as
    the transport would). Records every request."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.replies, f"unscripted request {request.method} {request.url}"
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return httpx.Response(reply.status_code, content=reply.content)  # a fresh copy

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def hosts(self) -> list[str]:
        return [f"http://{request.url.netloc.decode()}" for request in self.requests]

    def bodies(self) -> list[Any]:
        """The JSON bodies of the requests that had one."""
        return [
            msgspec.json.decode(request.content) for request in self.requests if request.content
        ]


def refused(url: str) -> httpx.ConnectError:
    return httpx.ConnectError(f"[Errno 111] Connection refused: {url}")


def lost() -> httpx.ReadError:
    return httpx.ReadError("connection reset by peer")


@dataclass
class FakeTime:
    """A clock for stub tests: sleeping records the delay and moves the clock."""

    now_s: float = 0.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.now_s

    def sleep_sync(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_s += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleep_sync(seconds)


STUB_ENDPOINTS = ["http://node-a:1", "http://node-b:2", "http://node-c:3"]


def against_stub(
    stub: Stub,
    operation: Callable[[Client], Awaitable[T]],
    settings: ClientSettings | None = None,
    fake: FakeTime | None = None,
) -> T:
    """`operation(client)` for a Client whose requests `stub` answers, on `fake` time."""
    fake = fake if fake is not None else FakeTime()

    async def scenario() -> T:
        async with Client(
            STUB_ENDPOINTS,
            settings,
            transport=stub.transport(),
            rng=Random(0),
            sleep=fake.sleep,
            clock=fake.now,
        ) as client:
            return await operation(client)

    return asyncio.run(scenario())


# -- faults on a real connection ------------------------------------------------------------

Fault = Callable[[httpx.Request, httpx.Response], httpx.Response]


class Intercept(httpx.AsyncBaseTransport):
    """Forwards every request to the network; `faults` (popped in order, for requests that
    `matches`) replace the server's answer after the server acted on the request. Records
    every request it forwarded."""

    def __init__(self, matches: Callable[[httpx.Request], bool], *faults: Fault) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._matches = matches
        self.faults = list(faults)
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self._inner.handle_async_request(request)
        if not (self.faults and self._matches(request)):
            return response
        await response.aread()
        return self.faults.pop(0)(request, response)

    async def aclose(self) -> None:
        await self._inner.aclose()


def answer_504(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.content
    return error(504, "timeout", "the write's outcome is unknown (injected)")


def lose_answer(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.content
    raise httpx.ReadError("connection lost after the request was sent (injected)")


def session_of(request: httpx.Request) -> tuple[str, int]:
    body = msgspec.json.decode(request.content)
    return body["client_id"], body["sequence"]
