"""Harnesses for the client tests (the in-process cluster behind HTTP servers they share
with the CLI tests is `raftkv.testing.http_cluster`).

- `Stub`: a scripted server for httpx.MockTransport: each request gets the next reply.
- `FakeTime`: a clock whose sleeps return at once and move it forward.
- `Intercept`: a transport that forwards to the network, letting a test replace an answer
  after the server acted on the request (a lost answer, a 504).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any, TypeVar

import httpx
import msgspec

from raftkv.client import Client, ClientSettings

T = TypeVar("T")

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
