"""The console's routes (`raftkv.server.routes`, area `console`): the page and its files,
and what the page reads beyond the rest of the API (`raftkv.api.console`).

While the app runs, `recording` (an aiohttp cleanup context) observes the node once per
`ConsoleSettings.interval_s` into the event ring and the metrics history, and owns the
HTTP client session that asks the other members for their state.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs, web

from raftkv.api.console import (
    ConsoleMember,
    ConsoleMembersAnswer,
    ConsoleNodeAnswer,
    EventsAnswer,
    HistoryAnswer,
)
from raftkv.kv.service import KvService
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.raft.driver.errors import Stopped
from raftkv.raft.tasks import cancel_and_wait
from raftkv.server.cluster_api import cluster_answer
from raftkv.server.console.assets import PAGE, Asset, asset
from raftkv.server.console.events import EventRing
from raftkv.server.console.history import History
from raftkv.server.console.members import SharedGathering, gather_members
from raftkv.server.console.observation import observation_of
from raftkv.server.exposure import ClientWarning
from raftkv.server.http_common import ApiError, int_query, json_answer
from raftkv.server.metrics import Metrics
from raftkv.server.node_api import status_answer

__all__ = ["VERSION", "ConsoleHandlers", "ConsoleSettings"]

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("raftkv")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()

# What the page may load and reach: this node only. No inline script or style, no frame
# around it (clickjacking), no plugin.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated at each load (answered 304 while unchanged): a node upgraded in place
    # serves its new page at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    # How often the node is observed for the event ring and the history (seconds). Each
    # observation collects the node's metrics (as a scrape does): ~1 ms of the loop.
    interval_s: float = 1.0
    # Points of history kept: 600 at one a second is 10 minutes (~120 KiB).
    history_points: int = 600
    # Events kept (the oldest go first).
    max_events: int = 256
    # How long the members route waits for each other member's answer: one that is down
    # costs the page this long at most, once per refresh.
    member_timeout_s: float = 1.0
    # How this node reaches the others' https:// client URLs (None: the system's CAs, no
    # client certificate).
    member_tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        for name in ("interval_s", "member_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigInvalid(f"ConsoleSettings.{name} must be a positive number")
        for name in ("history_points", "max_events"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigInvalid(f"ConsoleSettings.{name} must be >= 1, got {value!r}")


def _asset_response(request: web.Request, found: Asset) -> web.Response:
    headers = {**_PAGE_HEADERS, hdrs.ETAG: found.etag}
    if request.headers.get(hdrs.IF_NONE_MATCH) == found.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, hdrs.CONTENT_TYPE: found.content_type})


def _after_query(request: web.Request) -> float:
    text = request.query.get("after", "0")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise ApiError(
            400, "invalid_request", f"after must be a number of seconds >= 0, got {text[:32]!r}"
        )
    return value


class ConsoleHandlers:
    def __init__(
        self,
        service: KvService,
        metrics: Metrics,
        settings: ConsoleSettings,
        security_warnings: tuple[ClientWarning, ...] = (),
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.settings = settings
        self.security_warnings = security_warnings
        self.events = EventRing(settings.max_events)
        self.history = History(settings.history_points, settings.interval_s)
        self._session: aiohttp.ClientSession | None = None
        # Half an interval: pages refreshing every interval each get a new gathering.
        self._gathering = SharedGathering(
            self._gather, time.monotonic, fresh_s=settings.interval_s / 2
        )

    # -- observing --------------------------------------------------------------------------

    def observe(self, at: float) -> None:
        """Read the node's metrics and membership into the ring and the history."""
        try:
            status = self.service.status()
        except Stopped:
            return  # not started yet, or gone: nothing to observe
        observation = observation_of(
            at, self.metrics.registry.collect(), status.voters, status.learners
        )
        self.events.observe(observation)
        self.history.observe(observation)

    async def recording(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: observe every interval while the app runs."""
        connector = aiohttp.TCPConnector(
            ssl=self.settings.member_tls if self.settings.member_tls is not None else True
        )
        self._session = aiohttp.ClientSession(connector=connector)
        task = asyncio.create_task(self._observe_every_interval(), name="raftkv-console")
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await self._gathering.close()
            await self._session.close()
            self._session = None

    async def _observe_every_interval(self) -> None:
        while True:
            self.observe(time.time())
            await asyncio.sleep(self.settings.interval_s)

    # -- the page ---------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        """GET /ui: the console's page."""
        found = asset(PAGE)
        assert found is not None, "the console's page is package data: a broken install"
        return _asset_response(request, found)

    async def asset(self, request: web.Request) -> web.Response:
        """GET /ui/{asset}: one of the page's files, by name."""
        name = request.match_info["asset"]
        found = asset(name)
        if found is None:
            raise ApiError(404, "not_found", f"the console has no file {name[:64]!r}")
        return _asset_response(request, found)

    # -- what the page reads ----------------------------------------------------------------

    async def list_events(self, request: web.Request) -> web.Response:
        after = int_query(request, "after")
        ring = self.events
        return json_answer(
            EventsAnswer(
                member=int(self.service.member_id),
                capacity=ring.capacity,
                dropped=ring.dropped,
                events=ring.after(after),
            )
        )

    async def list_history(self, request: web.Request) -> web.Response:
        history = self.history
        return json_answer(
            HistoryAnswer(
                member=int(self.service.member_id),
                interval_s=history.interval_s,
                capacity=history.capacity,
                points=history.points(_after_query(request)),
            )
        )

    def node_answer(self) -> ConsoleNodeAnswer:
        failure = self.service.failure
        return ConsoleNodeAnswer(
            version=VERSION,
            health="ok" if failure is None else f"failed: {failure}",
            status=status_answer(self.service, self.security_warnings),
        )

    async def node(self, request: web.Request) -> web.Response:
        return json_answer(self.node_answer())

    async def _gather(self) -> list[ConsoleMember]:
        session = self._session
        if session is None:
            raise ApiError(503, "stopped", "the console is not running")
        service = self.service
        # The members as /v1/cluster lists them (a removed node is not one of them).
        urls = {member.id: member.client_url for member in cluster_answer(service).members}
        return await gather_members(
            session,
            urls,
            int(service.member_id),
            self.node_answer(),
            self.settings.member_timeout_s,
        )

    async def members(self, request: web.Request) -> web.Response:
        members = await self._gathering.members()
        return json_answer(
            ConsoleMembersAnswer(
                member=int(self.service.member_id),
                timeout_s=self.settings.member_timeout_s,
                members=members,
            )
        )
