"""One front process: the client port's HTTP work on another core
(`python -m raftkv.server.fronts.front`, started by its member's `FrontedClientPort`).

It serves the KV routes itself (`raftkv.server.kv_api.KvHandlers` over a
`RemoteKvService`: each request becomes one call to the member) behind the member app's
request guards that need no node state (errors, protocol, Host, Origin, encoding, content
type), and forwards every other request to the member's own app over the member's private
HTTP socket (`MemberProxy`), streams included. So a client sees one API whichever process
took its connection.

Its configuration is one JSON line on stdin (`FrontConfig`); its listening socket is
inherited (descriptor `listen_fd`). It stops when stdin ends (its member stopped, or died:
the pipe closes with the member's process) or when its connection to the member's gateway
ends, never on SIGINT or SIGTERM (see `main`); in-flight requests get
`shutdown_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import signal
import socket
import sys
import time

import aiohttp
import msgspec
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict
from yarl import URL

from raftkv.raft.tasks import cancel_and_wait
from raftkv.server.app import errors_middleware, request_guards
from raftkv.server.browser_guards import BrowserGuards, cors_headers
from raftkv.server.fronts.protocol import FrontCounters, FrontObservation, max_frame_bytes
from raftkv.server.fronts.remote_service import (
    CURRENT_REQUEST,
    CurrentRequest,
    MemberChannel,
    MemberRefusal,
    RemoteKvService,
)
from raftkv.server.http_common import BODY_TIMEOUT, ApiError
from raftkv.server.kv_api import KvHandlers
from raftkv.server.listener import ClientPort, ClientPortSettings
from raftkv.server.metrics import UNMATCHED_ROUTE, error_code_of
from raftkv.server.routes import ROUTES

__all__ = ["PEER_HEADER", "FrontConfig", "MemberProxy", "create_front_app", "main"]

logger = logging.getLogger("raftkv.front")

# The header a front forwards its client's address in; the member's app trusts it only
# on its private socket, where every request comes from one of its fronts.
PEER_HEADER = "X-Raftkv-Front-Peer"
# How often a front reports its connection counters to its member.
_COUNTERS_INTERVAL_S = 1.0
# Hop-by-hop headers (RFC 9110 7.6.1): for one connection, never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class FrontConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a front needs from its member's settings (see ServerSettings for each)."""

    listen_fd: int
    gateway_path: str
    http_path: str
    max_body_bytes: int
    body_timeout_s: float
    request_timeout_s: float
    hosts: tuple[str, ...]
    origins: tuple[str, ...]
    max_connections: int
    keepalive_timeout_s: float
    shutdown_timeout_s: float


def _error_code(response: web.StreamResponse) -> str:
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes) or response.status < 400:
        return ""
    return error_code_of(body)


def _count(channel: MemberChannel) -> Middleware:
    """Outermost: name the request for its calls (CURRENT_REQUEST), and count it in the
    member's metrics when no call or forward did."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        current = CurrentRequest(
            route, request.method, time.monotonic(), request.headers.get(hdrs.AUTHORIZATION, "")
        )
        token = CURRENT_REQUEST.set(current)
        status, error_code = 500, ""
        try:
            response = await handler(request)
            status, error_code = response.status, _error_code(response)
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            CURRENT_REQUEST.reset(token)
            if not current.counted_by_member:
                channel.observe(
                    FrontObservation(
                        route,
                        request.method,
                        status,
                        time.monotonic() - current.started,
                        error_code,
                    )
                )

    return count


@web.middleware
async def _relay_member_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A call the member refused: its answer, as the member's app gives it."""
    try:
        return await handler(request)
    except MemberRefusal as refusal:
        answer = refusal.answer
        return web.Response(
            status=answer.status, body=answer.body, headers=CIMultiDict(answer.headers)
        )


class MemberProxy:
    """Forwards a request to the member's app over its private HTTP socket, and its answer
    back as it comes (a watch's stream as it is written)."""

    def __init__(self, http_path: str) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=http_path),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
        )

    async def close(self) -> None:
        await self.session.close()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP and name.lower() != PEER_HEADER.lower()
        )
        headers[PEER_HEADER] = request.remote or ""
        url = URL("http://member" + request.raw_path, encoded=True)
        try:
            async with self.session.request(
                request.method,
                url,
                headers=headers,
                data=request.content if request.body_exists else None,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            ) as upstream:
                CURRENT_REQUEST.get().counted_by_member = True  # the member's app answered
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        response.headers.add(name, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                    # The member went away mid-answer: cut the client's connection too, so
                    # it sees a cut answer (a watch resumes elsewhere), not a whole one.
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write_eof()
                return response
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise ApiError(
                503, "member_unavailable", f"the node is not answering ({error}): retry"
            ) from None


def _local_with_credentials(
    handler: Handler, proxy: MemberProxy, channel: MemberChannel
) -> Handler:
    """`handler`, but while auth is enabled a request without credentials is forwarded:
    the member's app refuses it (401) before reading its body, where the front would read
    it first (and answer 400 to a malformed one)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        if channel.auth_enabled and hdrs.AUTHORIZATION not in request.headers:
            return await proxy.forward(request)
        return await handler(request)

    return serve


def create_front_app(
    channel: MemberChannel, proxy: MemberProxy, config: FrontConfig
) -> web.Application:
    """The front's app: the KV routes served through `channel`, the rest forwarded."""
    app = web.Application(
        middlewares=[
            _count(channel),
            errors_middleware,
            _relay_member_refusals,
            request_guards(BrowserGuards(config.hosts, config.origins)),
        ],
        client_max_size=config.max_body_bytes,
    )
    app.on_response_prepare.append(cors_headers)
    app[BODY_TIMEOUT] = config.body_timeout_s
    handlers = KvHandlers(RemoteKvService(channel), config.request_timeout_s, config.max_body_bytes)
    for route in ROUTES:
        area, _, name = route.handler.partition(".")
        # The other routes are forwarded under their own templates, so a request the
        # front refuses itself is counted under its route, as the node's app counts it.
        handler: Handler = proxy.forward
        if area == "kv":
            handler = _local_with_credentials(operator.attrgetter(name)(handlers), proxy, channel)
        app.router.add_route(route.method, route.path, handler)
    app.router.add_route("*", "/{tail:.*}", proxy.forward)  # etcd's gateway, unknown routes
    return app


async def _serve(config: FrontConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def lost(reason: str) -> None:
        if not stop.is_set():
            logger.error("front %d: the node's gateway is gone (%s): stopping", os.getpid(), reason)
        stop.set()

    def stdin_readable() -> None:
        if not os.read(0, 4096):  # the member closed the pipe, or its process ended
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, stdin_readable)
    channel = MemberChannel(config.gateway_path, max_frame_bytes(config.max_body_bytes), lost)
    await channel.connect()
    proxy = MemberProxy(config.http_path)
    listening = socket.socket(fileno=config.listen_fd)
    port = ClientPort(
        create_front_app(channel, proxy, config),
        "",
        0,
        ClientPortSettings(
            max_connections=config.max_connections,
            keepalive_timeout_s=config.keepalive_timeout_s,
            shutdown_timeout_s=config.shutdown_timeout_s,
        ),
        sock=listening,
    )
    try:
        await port.start()
        reporting = asyncio.create_task(_report_counters(port, channel, stop))
        await stop.wait()
        await cancel_and_wait(reporting)
    finally:
        await port.close()
        await proxy.close()
        await channel.close()


async def _report_counters(port: ClientPort, channel: MemberChannel, stop: asyncio.Event) -> None:
    """Each second, the port's connection counters, for the member's /metrics."""
    while not stop.is_set():
        counters = FrontCounters(
            port.open_connections, port.refused_connections, port.accept_errors
        )
        channel.observe(counters)
        await asyncio.sleep(_COUNTERS_INTERVAL_S)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s raftkv.front: %(message)s"
    )
    # A front stops when its member says so (or dies), never on its own: a terminal's
    # Ctrl-C and a service manager's SIGTERM reach the whole group, and the member, which
    # gets them too, stops its fronts after their requests in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        config = msgspec.json.decode(sys.stdin.buffer.readline(), type=FrontConfig)
    except msgspec.DecodeError as error:
        print(f"raftkv front: bad configuration on stdin: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except OSError as error:
        print(f"raftkv front: cannot reach its node: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
