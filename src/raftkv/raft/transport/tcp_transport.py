"""TcpTransport: Raft messages between processes over plain TCP connections (asyncio
streams), optionally mutual TLS. The default peer transport of `raftkv serve`.

Why not gRPC: a Raft message is small and latency-bound. grpc.aio hands every write to
gRPC's own threads and back (measured: 0.2-0.4 ms to wake the sender task, ~0.45 ms per
hop, most of a write's round trip to a follower, docs/performance.md); here `send` writes
the frames into the socket itself when its connection is idle. The messages are the same
`raft.proto` messages the gRPC transport sends, framed by length (tcp_framing.py);
`GrpcTransport` stays available with the same settings and behaviour.

Theory of operation. Four parts, one module each:
- sending (tcp_sender.py): per peer, one long-lived MESSAGES connection, a bounded queue
  and a task that dials, waits for a full buffer and backs off from a peer that is down;
- outgoing snapshots (snapshot_streams.py over `_UploadStream` here): each MsgSnap on a
  SNAPSHOT connection of its own, only the chunks the receiver lacks;
- the server (tcp_server.py), which checks everything a peer sends before the handler
  sees it;
- connection set-up (tcp_connections.py): dialling, listening, keepalive, mutual TLS.
This module owns what they share: the lifecycle, the peers' addresses and senders, the
handler, the counters (`stats`) and the tasks closing senders.

`send` never blocks and never raises for a peer that is down: an unreachable peer (one
with no sender, a full queue, or a failed connection) is reported to the handler with
`report_unreachable`, a snapshot that could not be delivered with `report_snapshot`.

Ordering. Messages to one peer leave in `send` order and, on a healthy connection, arrive
in that order. After a connection failure some messages are lost, never reordered.

Concurrency. Everything runs on the event loop that called `start`; handler callbacks run
there too and are never made from inside `send` (reports are scheduled with call_soon).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections import deque
from collections.abc import Coroutine, Sequence
from random import Random

from google.protobuf.message import DecodeError

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import (
    MemberRequest,
    MemberResponse,
    NotDelivered,
    TransportError,
    TransportHandler,
)
from raftkv.raft.transport.codec import (
    WIRE_MESSAGE_TYPES,
    decode_member_response,
    encode_member_request,
)
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats
from raftkv.raft.transport.snapshot_streams import SnapshotUploads, UploadStream
from raftkv.raft.transport.tcp_connections import TcpConnections
from raftkv.raft.transport.tcp_framing import Purpose, Status, frame, read_frame, split_reply
from raftkv.raft.transport.tcp_sender import TcpPeerSender, TcpSenderContext
from raftkv.raft.transport.tcp_server import TcpServer

__all__ = ["TcpTransport"]

logger = logging.getLogger("raftkv.transport.tcp")

# The longest member answer accepted (up to codec.MAX_MEMBER_IDS ids with addresses).
_MAX_MEMBER_RESPONSE_BYTES = 4 * 1024 * 1024


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class TcpTransport:
    """A `Transport` over TCP. Start once, stop once; `stop` is safe to repeat."""

    def __init__(self, settings: PeerTransportSettings, *, rng: Random | None = None) -> None:
        self.settings = settings
        self.stats = PeerTransportStats()
        # Drives the backoff jitter; inject a seeded one for reproducible tests.
        self._rng = rng if rng is not None else Random()
        self._state = _State.NEW
        self._handler: TransportHandler | None = None
        self._address = settings.listen_address
        # Reads the TLS files, if any: a missing one fails here, not at start.
        self._connections = TcpConnections(settings)
        self._server = TcpServer(settings, self.stats, self._connections, self._heard_from)
        self._snapshots = SnapshotUploads(
            settings, self.stats, self._open_snapshot_stream, self._report_snapshot, logger
        )
        # Known peer addresses, kept whether or not the transport runs.
        self._addresses: dict[NodeId, str] = {}
        # One per peer while running. Invariant: keys == self._addresses' keys.
        self._senders: dict[NodeId, TcpPeerSender] = {}
        # What the senders share; made by start, once the address is bound.
        self._sender_context: TcpSenderContext | None = None
        # Senders being closed (awaited by stop).
        self._closing_tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """Where peers reach this node: the listen address, with the bound port once
        started (so "127.0.0.1:0" becomes "127.0.0.1:<port>")."""
        return self._address

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    # -- Transport --------------------------------------------------------------------------

    async def start(self, handler: TransportHandler) -> None:
        if self._state is not _State.NEW:
            raise InvalidArgument(f"a {self._state.value} TcpTransport cannot start again")
        self._address = await self._server.start(handler)
        self._handler = handler
        self._state = _State.RUNNING
        self._sender_context = TcpSenderContext(
            settings=self.settings,
            stats=self.stats,
            connections=self._connections,
            rng=self._rng,
            local_address=self._address,
            report_unreachable=self._report_unreachable,
            close_later=self._track_closing,
        )
        for peer, address in self._addresses.items():
            self._senders[peer] = TcpPeerSender(self._sender_context, peer, address, deque())
        logger.info("listening on %s (cluster %d)", self._address, self.settings.cluster_id)

    def send(self, messages: Sequence[Message]) -> None:
        if self._state is not _State.RUNNING:
            return
        # A local message type here is a bug in the caller: refuse the whole call before
        # queueing any of it.
        for message in messages:
            if message.type not in WIRE_MESSAGE_TYPES:
                raise InvalidArgument(f"{message.type.value} is local and never sent to a peer")
        senders = self._senders
        limit = self.settings.max_queue_messages
        queued: list[TcpPeerSender] = []
        unreachable: set[NodeId] = set()
        failed_snapshots: list[NodeId] = []
        for message in messages:
            sender = senders.get(message.to)
            if sender is None:
                unreachable.add(message.to)
                self.stats.messages_dropped += 1
                if message.type is MessageType.SNAPSHOT:
                    failed_snapshots.append(message.to)
            elif message.type is MessageType.SNAPSHOT:
                self._snapshots.start(message.to, message)
            elif len(sender.queue) >= limit:
                unreachable.add(message.to)
                self.stats.messages_dropped += 1
            else:
                sender.queue.append(message)
                if sender not in queued:
                    queued.append(sender)
        for sender in queued:
            sender.flush()
        if unreachable:
            # Later, never from inside `send`: the handler is the caller of `send`.
            loop = asyncio.get_running_loop()
            for peer in unreachable:
                loop.call_soon(self._report_unreachable, peer)
            for peer in failed_snapshots:
                loop.call_soon(self._report_snapshot, peer, False)

    def set_peer(self, peer: NodeId, address: str) -> None:
        # Not validated here: an address may come from a joining node's request, and a bad
        # one must not raise into the node. It fails to connect and is reported unreachable.
        if self._addresses.get(peer) == address:
            return
        self._addresses[peer] = address
        if self._state is not _State.RUNNING:
            return
        assert self._sender_context is not None  # made by start
        previous = self._senders.pop(peer, None)
        # Messages already queued are for the peer, not the address: they carry over.
        queue = previous.queue if previous is not None else deque()
        if previous is not None:
            self._track_closing(previous.close(), f"raftkv-close-peer-{peer}")
        self._senders[peer] = TcpPeerSender(self._sender_context, peer, address, queue)

    def remove_peer(self, peer: NodeId) -> None:
        """Forget `peer`: nothing more is queued for it. What is queued already still goes,
        for up to request_timeout_seconds: a member is removed when the leader applies its
        removal, which is when the message telling it the removal committed may still be
        queued (without it, the removed member never learns it was removed)."""
        self._addresses.pop(peer, None)
        sender = self._senders.pop(peer, None)
        if sender is not None:
            self._track_closing(
                sender.drain_then_close(self.settings.request_timeout_seconds),
                f"raftkv-close-peer-{sender.peer}",
            )

    def peers(self) -> dict[NodeId, str]:
        return dict(self._addresses)

    def incoming_snapshots(self) -> int:
        """Snapshot transfers being received now (at most max_incoming_snapshots)."""
        return self._server.incoming_snapshots

    def snapshot_cache_bytes(self) -> int:
        """Bytes of chunks kept from earlier snapshot transfers (at most
        snapshot_cache_bytes)."""
        return self._server.snapshot_cache_bytes

    def queue_lengths(self) -> dict[NodeId, int]:
        """Messages waiting to be sent, per peer (at most max_queue_messages each); empty
        unless running. For metrics: a queue that stays long means a slow or dead peer."""
        return {peer: len(sender.queue) for peer, sender in self._senders.items()}

    async def member_request(
        self, address: str, request: MemberRequest, timeout: float
    ) -> MemberResponse:
        payload = encode_member_request(self.settings.cluster_id, request).SerializeToString()
        try:
            reader, writer = await self._connections.dial(address, Purpose.MEMBER)
        except TimeoutError:
            raise NotDelivered(f"member request to {address} not sent: connect timed out") from None
        except (OSError, ssl.SSLError, ValueError) as error:
            # No connection was made: the request was never sent.
            raise NotDelivered(f"member request to {address} not sent: {error}") from None
        try:
            async with asyncio.timeout(timeout):
                writer.write(frame(payload))
                await writer.drain()
                status, answer = split_reply(await read_frame(reader, _MAX_MEMBER_RESPONSE_BYTES))
        except TimeoutError:
            raise TransportError(f"{address} did not answer in {timeout}s") from None
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            raise TransportError(f"member request to {address} failed: {error}") from None
        except MalformedMessage as error:
            raise TransportError(f"member answer from {address}: {error}") from None
        finally:
            writer.close()
        if status is Status.REFUSED:
            reason = answer.decode(errors="replace")
            raise TransportError(f"member request to {address} refused: {reason}")
        try:
            return decode_member_response(wire.MemberResponse.FromString(answer))
        except (DecodeError, MalformedMessage) as error:
            raise TransportError(f"member answer from {address}: {error}") from None

    async def stop(self) -> None:
        if self._state is _State.STOPPED:
            return
        self._state = _State.STOPPED
        self._snapshots.cancel()
        for sender in self._senders.values():
            self._track_closing(sender.close(), f"raftkv-close-peer-{sender.peer}")
        self._senders.clear()
        while self._snapshots.running or self._closing_tasks:
            await asyncio.gather(
                *self._snapshots.running, *self._closing_tasks, return_exceptions=True
            )
        await self._server.stop()
        self._handler = None

    # -- callbacks of the parts -----------------------------------------------------------

    async def _open_snapshot_stream(self, peer: NodeId) -> UploadStream:
        address = self._addresses.get(peer)
        if address is None:
            raise NotDelivered(f"peer {peer} was removed")
        try:
            reader, writer = await self._connections.dial(address, Purpose.SNAPSHOT)
        except (OSError, ssl.SSLError) as error:
            raise NotDelivered(f"cannot connect to {address}: {error}") from None
        return _UploadStream(reader, writer, self.settings)

    def _heard_from(self, peer: NodeId) -> None:
        sender = self._senders.get(peer)
        if sender is not None:
            sender.heard_from()

    def _report_unreachable(self, peer: NodeId) -> None:
        if self._state is _State.RUNNING and self._handler is not None:
            self._handler.report_unreachable(peer)

    def _report_snapshot(self, peer: NodeId, ok: bool) -> None:
        if self._state is _State.RUNNING and self._handler is not None:
            self._handler.report_snapshot(peer, ok)

    def _track_closing(self, closing: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(closing, name=name)
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)


class _Refused(Exception):
    """The receiver refused a snapshot transfer (its reason is the message)."""


class _UploadStream:
    """An `UploadStream` over a SNAPSHOT connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: PeerTransportSettings,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._settings = settings

    async def write(self, upload: wire.SnapshotUpload) -> None:
        self._writer.write(frame(upload.SerializeToString()))
        await self._writer.drain()

    async def read(self) -> wire.SnapshotReply:
        try:
            data = await read_frame(self._reader, self._settings.max_receive_message_bytes)
        except asyncio.IncompleteReadError:
            raise MalformedMessage(
                "the receiver ended the stream before the snapshot was delivered"
            ) from None
        status, payload = split_reply(data)
        if status is Status.REFUSED:
            raise _Refused(payload.decode(errors="replace"))
        try:
            return wire.SnapshotReply.FromString(payload)
        except DecodeError as error:
            raise MalformedMessage(f"undecodable SnapshotReply: {error}") from None

    async def done_writing(self) -> None:
        """Nothing to do: the receiver knows how many chunks it asked for (and a TLS
        connection cannot be half-closed)."""

    async def failure(self, error: Exception) -> str | None:
        if isinstance(error, _Refused):
            return f"refused by the receiver: {error}"
        if isinstance(error, OSError | ssl.SSLError):
            return f"connection lost: {error}"
        return None

    def close(self) -> None:
        self._writer.close()
