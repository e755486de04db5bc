"""How a TcpTransport's connections are set up, at both ends: dialling (with the greeting),
listening, socket options and, with `tls`, mutual TLS (the files are read once, when the
transport is made: a missing or unreadable file is a settings error, not a failure at the
first connection).

Mutual TLS as the gRPC transport does it: the listener requires a client certificate
signed by the CA, the dialler verifies the listener's certificate against the CA and the
dialled host (or `server_name_override`); TLS 1.2 at least.

Dead peers: TCP keepalive probes after `keepalive_interval_seconds` of silence, and a
connection whose sent data stays unacknowledged for interval + `keepalive_timeout_seconds`
is closed by the kernel (TCP_USER_TIMEOUT), so a peer that vanished without a word is
noticed like the gRPC transport's keepalive pings notice it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

from raftkv.raft.transport.settings import (
    PeerTransportSettings,
    TransportSettingsInvalid,
    split_address,
)
from raftkv.raft.transport.tcp_framing import Purpose, greeting

__all__ = ["TcpConnections"]

_ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpConnections:
    """Connections to peers and the server peers connect to, set up from `settings`."""

    def __init__(self, settings: PeerTransportSettings) -> None:
        self._settings = settings
        self._server_context: ssl.SSLContext | None = None
        self._client_context: ssl.SSLContext | None = None
        if settings.tls:
            self._load_tls()

    async def dial(
        self, address: str, purpose: Purpose
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to `address` for `purpose`, greeting sent, within
        connect_timeout_seconds. Raises OSError (ConnectionRefusedError: nobody listens),
        ssl.SSLError or TimeoutError; an address that is not host:port is an OSError too
        (it may come from a joining node's request: a peer that cannot be reached, not a
        bug here)."""
        settings = self._settings
        try:
            host, port = split_address(address)
        except TransportSettingsInvalid as error:
            raise OSError(str(error)) from None
        tls = self._client_context
        async with asyncio.timeout(settings.connect_timeout_seconds):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=tls,
                server_hostname=(settings.server_name_override or host) if tls else None,
                limit=_READ_BUFFER,
            )
        self.tune(writer)
        writer.write(greeting(purpose))
        return reader, writer

    async def listen(self, address: str, handle: _ConnectionHandler) -> asyncio.Server:
        """Serve connections at `address` with `handle`. OSError if it cannot bind."""
        host, port = split_address(address)
        return await asyncio.start_server(
            handle,
            host,
            port,
            ssl=self._server_context,
            limit=_READ_BUFFER,
            # Never share a port with another process: a second node on the same address
            # must fail to start, not silently receive half the connections.
            reuse_port=False,
            # The TLS handshake of a peer that connects and says nothing is bounded too.
            ssl_handshake_timeout=(
                self._settings.connect_timeout_seconds if self._server_context else None
            ),
        )

    def tune(self, writer: asyncio.StreamWriter) -> None:
        """Keepalive and the write buffer's limit on a new connection (either end)."""
        settings = self._settings
        # A write buffered beyond this makes the writer wait (drain) for the peer.
        writer.transport.set_write_buffer_limits(high=settings.max_batch_bytes)
        sock = writer.get_extra_info("socket")
        if sock is None:
            return
        interval = max(1, int(settings.keepalive_interval_seconds))
        probe = max(1, int(settings.keepalive_timeout_seconds))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's defaults
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, probe)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            timeout_ms = int(
                (settings.keepalive_interval_seconds + settings.keepalive_timeout_seconds) * 1000
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)

    def _load_tls(self) -> None:
        settings = self._settings
        assert settings.ca_file and settings.cert_file and settings.key_file
        # ssl's errors for a missing file do not name it: open each first.
        try:
            for path in (settings.ca_file, settings.cert_file, settings.key_file):
                with open(path, "rb"):
                    pass
        except OSError as error:
            raise TransportSettingsInvalid(f"cannot read a TLS file: {error}") from error
        try:
            server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.minimum_version = ssl.TLSVersion.TLSv1_2
            server.load_cert_chain(settings.cert_file, settings.key_file)
            server.load_verify_locations(settings.ca_file)
            server.verify_mode = ssl.CERT_REQUIRED
            client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks the name
            client.minimum_version = ssl.TLSVersion.TLSv1_2
            client.load_cert_chain(settings.cert_file, settings.key_file)
            client.load_verify_locations(settings.ca_file)
        except (OSError, ssl.SSLError) as error:
            raise TransportSettingsInvalid(f"cannot use the TLS files: {error}") from error
        self._server_context, self._client_context = server, client


# Bytes asyncio buffers from a connection before it stops reading the socket (frames are
# read with readexactly, which may exceed it: it bounds read-ahead, not frames).
_READ_BUFFER = 1024 * 1024
