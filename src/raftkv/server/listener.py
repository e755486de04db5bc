"""The client port: the HTTP API's listening socket and its limits (issue 12, part C).

The node's event loop also runs Raft, so nothing a client does may hold it, and nothing a
client opens may take what the node needs: ~20k slow connections once used up the
process's file descriptors, RocksDB could then not open its WAL and the node stopped,
after 85 MB of accept-error tracebacks in 40 s. So:

- `ConnectionGate` caps the client connections open at once. It decides when a connection
  is made (exact, whatever the accept loop batches): beyond the cap the connection is
  closed at once and counted (`refused`); it never reaches aiohttp.
- aiohttp's own knobs do the rest (`ClientPort.start`): the keep-alive timer, which closes
  a connection idle that long and also one whose next request's headers are not all in
  by then (aiohttp arms it when a connection is made and after each answer, and fires it
  while no whole request has been parsed: the header read timeout against slowloris);
  request bodies are never inflated (`auto_decompress=False`: a `Content-Encoding` is
  refused by the API before its body is read); an unread body is drained for at most
  `_LINGER_S` after the answer. Reading a body is bounded by the API (`decode_body`).
- The request head: a line or header field over 8 KiB (`MAX_LINE_BYTES`,
  `MAX_FIELD_BYTES`) or more than `MAX_HEADERS` fields is refused by aiohttp's parser.
  A client that sends its head a byte at a time gains nothing: the keep-alive timer is not
  pushed back by bytes received, only by answers.
- `JsonErrorsRequestHandler`: a request aiohttp's parser refuses (a line over 8 KiB, too
  many headers, no method, no Host) is answered with the API's JSON error (400
  `malformed_request`), not aiohttp's text/plain with Python reprs; aiohttp logs it, which
  `raftkv.server.logs.BadRequestLines` makes one rate-limited line. A request line of
  another HTTP version than 1.0 or 1.1 is served as HTTP/1.1, for the app to answer 505
  (`REQUESTED_VERSION`).
- `AcceptErrorLog`: asyncio reports each failed accept (EMFILE, ENFILE, ENOBUFS, ENOMEM)
  to the loop's exception handler, with a traceback. This handler logs one line per
  interval with a count instead, and passes any other report on.
- `raise_open_files_limit`: at start the soft RLIMIT_NOFILE goes up to the hard limit,
  which must leave room for RocksDB and peers beyond the connection cap
  (`RESERVED_FILE_DESCRIPTORS`), or the node refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_request import BaseRequest

from raftkv.server.http_common import REQUESTED_VERSION, error_response
from raftkv.server.settings import SettingsInvalid

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_HEADERS",
    "MAX_LINE_BYTES",
    "RESERVED_FILE_DESCRIPTORS",
    "AcceptErrorLog",
    "ClientPort",
    "ClientPortSettings",
    "ConnectionGate",
    "JsonErrorsRequestHandler",
    "raise_open_files_limit",
]

logger = logging.getLogger("raftkv.server")

# File descriptors kept for everything but client connections: RocksDB (its WAL, manifest
# and table files: it keeps every table file open), peer connections and snapshot
# transfers, checkpoints, logs.
RESERVED_FILE_DESCRIPTORS = 1024
# How long an unread request body is drained after the answer before the connection is
# closed (aiohttp's lingering time; its default is 10 s). Lets a client still sending see
# the answer rather than a reset, without letting it hold the connection.
_LINGER_S = 2.0
# The request head's limits, aiohttp's defaults pinned here so that an upgrade cannot move
# them: a request line or one header field at most this many bytes, at most this many
# header fields (so a head holds at most ~1 MiB while it is parsed). A longer line or
# field, or more fields, is answered 400 `malformed_request`. The longest line the API
# needs is a GET of a 4 KiB key, base64 (5.4 KiB); larger things go in a JSON body.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128
# What asyncio's accept loop reports, in its exception handler context, when it runs out
# of descriptors or memory.
_ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"


@dataclass(frozen=True, slots=True)
class ClientPortSettings:
    """See ServerSettings for each (max_client_connections, http_keepalive_timeout_s,
    shutdown_timeout_s)."""

    max_connections: int = 1000
    keepalive_timeout_s: float = 10.0
    shutdown_timeout_s: float = 10.0
    # At most one accept-error line per this many seconds (AcceptErrorLog).
    accept_error_interval_s: float = 10.0


class ConnectionGate:
    """A protocol factory for `loop.create_server`: each accepted connection is served by
    `serve()`'s protocol (aiohttp's request handler) unless `max_connections` are already
    open; then it is closed at once and counted in `refused`.

    Invariant: `open` is the number of connections whose protocol `serve()` made and that
    are not lost yet (counted in connection_made and connection_lost, which asyncio calls
    exactly once each for a connection it made)."""

    def __init__(self, serve: Callable[[], asyncio.Protocol], max_connections: int) -> None:
        self.serve = serve
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Gated(self)


class _Gated(asyncio.Protocol):
    """One connection through the gate: decided when it is made, then every event goes to
    the request handler (none for a refused one)."""

    __slots__ = ("_gate", "_inner")

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if gate.open >= gate.max_connections:
            gate.refused += 1
            # A TCP server's transport (uvloop's is not an asyncio.Transport subclass).
            cast("asyncio.Transport", transport).abort()
            return
        gate.open += 1
        self._inner = gate.serve()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._gate.open -= 1
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class JsonErrorsRequestHandler(web.RequestHandler):
    """aiohttp's request handler (one per connection), answering what its parser refuses
    with the API's JSON error (see the module docstring)."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # Logs (a traceback for a 500; BadRequestLines makes a parse error one line) and
        # raises if an answer was already begun.
        super().handle_error(request, status, exc, message)
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            name = type(exc).__name__ if exc is not None else "unknown"
            response = error_response(500, "internal", f"internal error: {name}")
        else:
            text = _parse_error(exc, message)
            if _INVALID_VERSION in text:  # a version the parser does not know (HTTP/3.0)
                response = error_response(
                    505, "http_version_not_supported", f"{text}: send HTTP/1.1"
                )
            else:
                response = error_response(status, "malformed_request", text)
        response.force_close()
        return response


# What makes a request of a parsed message: aiohttp's Server.request_factory.
_RequestFactory = Callable[
    [
        RawRequestMessage,
        StreamReader,
        web.RequestHandler,
        AbstractStreamWriter,
        "asyncio.Task[None]",
    ],
    BaseRequest,
]
# Where a parser message starts quoting the request (a bytes or str repr).
_QUOTED = re.compile(r":\s*(?:b['\"]|bytearray\(|['\"])")


def _parse_error(error: BaseException | None, message: str | None) -> str:
    """One line saying what is wrong with a request aiohttp could not parse, without the
    parser's reprs of the request's bytes."""
    if isinstance(error, LineTooLong):
        return (
            f"a request line or header is longer than {error.args[1]} bytes: shorten it "
            "(keys and values longer than that go in a JSON body)"
        )
    text = message or (error.message if isinstance(error, HttpProcessingError) else "")
    # The parser's message: what is wrong (maybe on two lines), a blank line, the request
    # quoted and a caret under the wrong byte.
    said = " ".join(line.strip() for line in text.strip().split("\n\n", 1)[0].splitlines())
    said = _QUOTED.split(said, 1)[0].rstrip(" :.")[:200]
    return f"the request is not valid HTTP/1.1: {said or 'unreadable'}"


# How llhttp names a request line's unknown version.
_INVALID_VERSION = "Invalid HTTP version"


def _served_as_http11(factory: _RequestFactory) -> _RequestFactory:
    """`factory` (a Server's request_factory), making a request sent with another version
    than HTTP/1.0 or 1.1 an HTTP/1.1 one that closes its connection, the version asked for
    kept in REQUESTED_VERSION: the app answers it 505, with an HTTP/1.1 status line."""

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        if message.version in (HttpVersion10, HttpVersion11):
            return factory(message, payload, protocol, writer, task)
        served = message._replace(version=HttpVersion11, should_close=True)
        request = factory(served, payload, protocol, writer, task)
        request[REQUESTED_VERSION] = message.version
        return request

    return make


class AcceptErrorLog:
    """The loop's exception handler while the client port serves (see the module
    docstring): a failed accept is counted (`errors`) and logged as one warning line per
    `interval_s`, the first at once and the rest summed up when the interval ends. Any
    other report goes to the handler this one replaced (asyncio's default if none)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self._loop = loop
        self._interval_s = interval_s
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None
        self._flush: asyncio.TimerHandle | None = None
        # Failed accepts since the start, and since the last line logged.
        self.errors = 0
        self._unlogged = 0
        self._last_error = ""

    def install(self) -> None:
        self._previous = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._log()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_ERROR_MESSAGE:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.errors += 1
        self._unlogged += 1
        self._last_error = str(context.get("exception") or "")
        if self._flush is None:
            self._log()
            self._flush = loop.call_later(self._interval_s, self._end_interval)

    def _end_interval(self) -> None:
        self._flush = None
        if self._unlogged:
            self._log()
            self._flush = self._loop.call_later(self._interval_s, self._end_interval)

    def _log(self) -> None:
        if not self._unlogged:
            return
        logger.warning(
            "client port: %d connection(s) could not be accepted (last: %s); "
            "check max_client_connections against the open-files limit (%d)",
            self._unlogged,
            self._last_error,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        self._unlogged = 0


class ClientPort:
    """The HTTP API served on host:port through a ConnectionGate, with aiohttp's knobs set
    as the module docstring says. `start()`, then `close()` (stops listening and ends the
    connections, in-flight requests getting up to shutdown_timeout_s)."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        settings: ClientPortSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
        unix_path: str | None = None,
    ) -> None:
        self.settings = settings
        self._host = host
        self._port = port
        # Instead of host:port: a listening socket made elsewhere (a front process's,
        # inherited), or a Unix socket path (a member's private port for its fronts).
        self._sock = sock
        self._unix_path = unix_path
        # With TLS (raftkv.server.client_tls): every connection's handshake, bounded by the
        # keep-alive timeout like a slow head.
        self._ssl_context = ssl_context
        # The options of each connection's request handler.
        self._handler_options: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": settings.keepalive_timeout_s,
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS,
            "lingering_time": _LINGER_S,
            "auto_decompress": False,
        }
        self.runner = web.AppRunner(
            app, shutdown_timeout=settings.shutdown_timeout_s, **self._handler_options
        )
        self.gate: ConnectionGate | None = None
        self.accept_errors_log: AcceptErrorLog | None = None
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        return self.gate.open if self.gate is not None else 0

    @property
    def refused_connections(self) -> int:
        return self.gate.refused if self.gate is not None else 0

    @property
    def accept_errors(self) -> int:
        return self.accept_errors_log.errors if self.accept_errors_log is not None else 0

    @property
    def port(self) -> int:
        """The port listened on (the one chosen, when started with port 0)."""
        if self._server is None or not self._server.sockets or self._unix_path is not None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self.runner.setup()
        server = self.runner.server
        assert server is not None  # set up above
        server.request_factory = _served_as_http11(server.request_factory)
        options = self._handler_options

        def serve() -> asyncio.Protocol:
            return JsonErrorsRequestHandler(server, loop=loop, **options)

        self.gate = ConnectionGate(serve, self.settings.max_connections)
        self.accept_errors_log = AcceptErrorLog(loop, self.settings.accept_error_interval_s)
        self.accept_errors_log.install()
        try:
            if self._unix_path is not None:
                self._server = await loop.create_unix_server(self.gate, self._unix_path)
            elif self._sock is not None:
                self._server = await loop.create_server(self.gate, sock=self._sock)
            else:
                self._server = await loop.create_server(
                    self.gate,
                    self._host,
                    self._port,
                    reuse_address=True,
                    ssl=self._ssl_context,
                    ssl_handshake_timeout=(
                        self.settings.keepalive_timeout_s if self._ssl_context else None
                    ),
                )
            _lengthen_accept_queue(self._server, self.settings.max_connections)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.runner.cleanup()
        if self.accept_errors_log is not None:
            self.accept_errors_log.uninstall()


def _lengthen_accept_queue(server: asyncio.Server, length: int) -> None:
    """Let the kernel hold up to `length` connections not accepted yet (capped by
    net.core.somaxconn): a burst of clients connecting at once waits there instead of
    having its SYNs dropped, each such client then waiting a second or more to retry.

    asyncio listens with its `backlog` argument (100), which is also how many connections
    it accepts per wake-up: passed a larger one, it would accept a whole burst at once, and
    every connection over max_client_connections holds a descriptor until it is refused.
    So the queue is lengthened after asyncio's own listen(), on the listening sockets
    themselves (a duplicate descriptor names the same socket)."""
    for listening in server.sockets:
        with socket.socket(fileno=os.dup(listening.fileno())) as same:
            same.listen(length)


def raise_open_files_limit(max_client_connections: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, and return (soft before, soft now).
    SettingsInvalid if the limit leaves less than RESERVED_FILE_DESCRIPTORS beyond
    `max_client_connections`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = soft
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            raised = wanted
        except (ValueError, OSError):  # macOS caps the soft limit lower than "unlimited"
            raised = soft
    required = max_client_connections + RESERVED_FILE_DESCRIPTORS
    if raised < required:
        raise SettingsInvalid(
            f"setting max_client_connections: {max_client_connections} connections plus "
            f"{RESERVED_FILE_DESCRIPTORS} descriptors for RocksDB and peers need an open-files "
            f"limit of {required}, and it is {raised} (hard limit {hard}): raise it "
            "(ulimit -n, systemd LimitNOFILE=) or lower max_client_connections"
        )
    return soft, raised
