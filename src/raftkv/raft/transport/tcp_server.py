"""The listening side of a TcpTransport: the connections peers open, by purpose
(tcp_framing.py): message streams, snapshot transfers, member requests.

Nothing a peer sends can raise outside this module: a wrong greeting, a frame over the
limit, undecodable bytes, unknown enum codes, malformed messages, another cluster's id, a
sender that is not the frame's `from_node`, or (with TLS) a certificate that names no node
or another node than the frames claim (raftkv.raft.transport.peer_identity) are logged
(one rate-limited line with the peer's address) and end the connection, with a REFUSED
reply saying why on the connections that have replies; nothing from a rejected frame
reaches the handler. A peer
that connects and says nothing is dropped after connect_timeout_seconds, a snapshot or
member request that stalls after request_timeout_seconds, and at most
_MAX_CONNECTIONS connections are served at once (more are closed at once). A snapshot is
delivered only once every check passed, the handler's own included (ChecksSnapshots, on
a worker thread). Chunks of incoming snapshots are kept (up to snapshot_cache_bytes) so
that a transfer cut off by a dropped connection resumes where it stopped.

Stopping: `stop` closes the listening socket and every connection, and waits for their
tasks to end.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.core.types import NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import (
    TransportError,
    TransportHandler,
)
from raftkv.raft.transport.codec import decode_frame, decode_member_request, encode_member_response
from raftkv.raft.transport.log_limiter import LogLimiter, suppressed_note
from raftkv.raft.transport.peer_identity import PeerIdentity, UnknownPeer
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats, split_address
from raftkv.raft.transport.snapshot_streams import SnapshotReceiver
from raftkv.raft.transport.snapshot_transfer import SnapshotTooLarge
from raftkv.raft.transport.tcp_connections import TcpConnections
from raftkv.raft.transport.tcp_framing import (
    Purpose,
    Status,
    greeting,
    read_frame,
    read_greeting,
    reply_frame,
)

__all__ = ["TcpServer"]

logger = logging.getLogger("raftkv.transport.tcp")

# Connections served at once: each peer holds one message stream to us, plus snapshot
# transfers and member requests; anything beyond this is not a healthy cluster's traffic.
_MAX_CONNECTIONS: Final = 256
# The longest member request accepted (node id, action and an address).
_MAX_MEMBER_REQUEST_BYTES: Final = 4096


class _Refused(Exception):
    """What a peer sent ends its connection; the message says why."""


class TcpServer:
    """The listening socket peers connect to, serving a `TransportHandler`. Start once,
    stop once; `stop` is safe to repeat.

    `heard_from(peer)` is told of every accepted frame's sender: proof that the peer is up
    (the transport's sender to it stops backing off).
    """

    def __init__(
        self,
        settings: PeerTransportSettings,
        stats: PeerTransportStats,
        connections: TcpConnections,
        heard_from: Callable[[NodeId], None],
    ) -> None:
        self.settings = settings
        self.stats = stats
        self._connections = connections
        self._heard_from = heard_from
        self._handler: TransportHandler | None = None
        self._server: asyncio.Server | None = None
        self._address = settings.listen_address
        self._snapshots = SnapshotReceiver(settings, stats, logger)
        # The task serving each open connection, so that stop() can end them.
        self._serving: set[asyncio.Task[object]] = set()
        self._receive_log = LogLimiter()
        # Set by stop: a connection task cancelled from then on ends quietly.
        self._stopping = False

    @property
    def incoming_snapshots(self) -> int:
        """Snapshot transfers being received now (at most max_incoming_snapshots)."""
        return self._snapshots.incoming

    @property
    def snapshot_cache_bytes(self) -> int:
        """Bytes of chunks kept from earlier snapshot transfers."""
        return self._snapshots.cache_bytes

    async def start(self, handler: TransportHandler) -> str:
        """Listen on settings.listen_address and serve `handler`; the address bound (so
        "127.0.0.1:0" becomes "127.0.0.1:<port>"). TransportError if it cannot listen."""
        address = self.settings.listen_address
        try:
            self._server = await self._connections.listen(address, self._serve)
        except OSError as error:
            raise TransportError(f"cannot listen on {address}: {error.strerror or error}") from None
        host, _ = split_address(address)
        port = self._server.sockets[0].getsockname()[1]
        self._address = f"{host}:{port}"
        self._handler = handler
        return self._address

    async def stop(self) -> None:
        """Close the listening socket and every connection."""
        server, self._server = self._server, None
        self._handler = None
        self._stopping = True
        if server is not None:
            server.close()
        serving = list(self._serving)
        for task in serving:
            task.cancel()
        if serving:
            await asyncio.gather(*serving, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
            logger.info("stopped listening on %s", self._address)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, from greeting to close."""
        task = asyncio.current_task()
        assert task is not None
        remote = _remote(writer)
        if self._handler is None:
            writer.close()  # stopping
            return
        if len(self._serving) >= _MAX_CONNECTIONS:
            # Counted like any other rejection: a peer hitting the cap shows in the metrics,
            # not only in a rate-limited log line.
            self.stats.streams_rejected += 1
            self._log_refusal(remote, "connection", f"over {_MAX_CONNECTIONS} connections")
            writer.close()
            return
        self._serving.add(task)
        purpose: Purpose | None = None
        try:
            identity = PeerIdentity.of_certificate(
                writer.get_extra_info("peercert"), self.settings.allowed_common_names
            )
            self._connections.tune(writer)
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                purpose = await read_greeting(reader)
            if purpose is Purpose.MESSAGES:
                # The greeting sent back: the dialler counts itself connected only then
                # (see tcp_framing).
                writer.write(greeting(purpose))
                await self._serve_messages(reader, identity)
            elif purpose is Purpose.SNAPSHOT:
                await self._serve_snapshot(reader, writer, identity)
            else:
                await self._serve_member(reader, writer, identity)
        except (MalformedMessage, SnapshotTooLarge, _Refused, UnknownPeer) as error:
            await self._refuse(writer, remote, purpose, str(error))
        except TimeoutError:
            await self._refuse(writer, remote, purpose, "stalled (no frame in time)")
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError):
            pass  # the peer went away: nothing to answer
        except asyncio.CancelledError:
            # stop() ends the connections so; asyncio's stream server logs a handler task
            # that ends cancelled as an error.
            if not self._stopping:
                raise
        finally:
            self._serving.discard(task)
            writer.close()

    async def _serve_messages(self, reader: asyncio.StreamReader, identity: PeerIdentity) -> None:
        settings, stats = self.settings, self.stats
        while True:
            data = await read_frame(reader, settings.max_receive_message_bytes)
            # The frame's from_address is only what the sender claims: never dialled.
            # Addresses come from set_peer alone (the membership the node learned from
            # its log, snapshots, the operator, or a member it asked), so that no frame
            # can choose where this node connects.
            from_node, _, messages = decode_frame(data, settings.cluster_id)
            identity.check_sender(from_node, "a frame")
            handler = self._handler
            if handler is None:
                return
            if messages:
                stats.frames_received += 1
                stats.messages_received += len(messages)
                handler.deliver(messages)
            self._heard_from(from_node)

    async def _serve_snapshot(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: PeerIdentity
    ) -> None:
        busy = self._snapshots.busy()
        if busy is not None:
            raise _Refused(busy)
        message, incoming = await self._snapshots.receive(
            _ReceiveStream(reader, writer, self.settings), self._handler
        )
        identity.check_sender(message.sender, "a snapshot")
        handler = self._handler
        if handler is None:
            raise _Refused("the node is stopping")
        delivered = self._snapshots.deliver(handler, message, incoming)
        writer.write(reply_frame(Status.OK, delivered.SerializeToString()))
        await writer.drain()

    async def _serve_member(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: PeerIdentity
    ) -> None:
        async with asyncio.timeout(self.settings.request_timeout_seconds):
            data = await read_frame(reader, _MAX_MEMBER_REQUEST_BYTES)
        request = replace(
            decode_member_request(data, self.settings.cluster_id), requester=identity.node
        )
        handler = self._handler
        if handler is None:
            raise _Refused("the node is stopping")
        response = await handler.handle_member_request(request)
        writer.write(reply_frame(Status.OK, encode_member_response(response).SerializeToString()))
        await writer.drain()

    async def _refuse(
        self, writer: asyncio.StreamWriter, remote: str, purpose: Purpose | None, reason: str
    ) -> None:
        """Log one line about a peer's bad input and, once the greeting named what the
        connection is for, tell the peer why it ends (a REFUSED reply)."""
        self.stats.streams_rejected += 1
        what = "connection" if purpose is None else f"{purpose.name.lower()} connection"
        self._log_refusal(remote, what, reason)
        if purpose is not None and not writer.is_closing():
            writer.write(reply_frame(Status.REFUSED, reason.encode()))
            try:
                async with asyncio.timeout(self.settings.request_timeout_seconds):
                    await writer.drain()
            except (TimeoutError, OSError, ssl.SSLError):
                pass

    def _log_refusal(self, remote: str, what: str, reason: str) -> None:
        # Rate-limited per remote host (the port changes with every connection).
        suppressed = self._receive_log.allow(remote.rsplit(":", 1)[0])
        if suppressed is not None:
            logger.warning(
                "rejected %s from %s: %s%s", what, remote, reason, suppressed_note(suppressed)
            )


class _ReceiveStream:
    """A `ReceiveStream` over a SNAPSHOT connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: PeerTransportSettings,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._settings = settings

    async def read(self, what: str) -> bytes:
        try:
            async with asyncio.timeout(self._settings.request_timeout_seconds):
                return await read_frame(self._reader, self._settings.max_receive_message_bytes)
        except asyncio.IncompleteReadError:
            raise MalformedMessage(f"snapshot stream ended before {what}") from None

    async def write(self, reply: wire.SnapshotReply) -> None:
        self._writer.write(reply_frame(Status.OK, reply.SerializeToString()))
        async with asyncio.timeout(self._settings.request_timeout_seconds):
            await self._writer.drain()


def _remote(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return "an unknown address"
