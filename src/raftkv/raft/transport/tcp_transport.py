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
What they share (the lifecycle, the peers and their senders, the handler, the counters)
is `PeerTransport`'s (peer_transport.py), as for GrpcTransport; this module adds member
requests and the snapshot streams.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from random import Random

from google.protobuf.message import DecodeError

from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import (
    MemberRequest,
    MemberResponse,
    NotDelivered,
    TransportError,
)
from raftkv.raft.transport.codec import decode_member_response, encode_member_request
from raftkv.raft.transport.peer_transport import PeerTransport
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats
from raftkv.raft.transport.snapshot_streams import UploadStream
from raftkv.raft.transport.tcp_connections import TcpConnections
from raftkv.raft.transport.tcp_framing import Purpose, Status, frame, read_frame, split_reply
from raftkv.raft.transport.tcp_sender import TcpPeerSender, TcpSenderContext
from raftkv.raft.transport.tcp_server import TcpServer

__all__ = ["TcpTransport"]

logger = logging.getLogger("raftkv.transport.tcp")

# The longest member answer accepted (up to codec.MAX_MEMBER_IDS ids with addresses).
_MAX_MEMBER_RESPONSE_BYTES = 4 * 1024 * 1024


class TcpTransport(PeerTransport):
    """A `Transport` over TCP. Start once, stop once; `stop` is safe to repeat."""

    def __init__(self, settings: PeerTransportSettings, *, rng: Random | None = None) -> None:
        stats = PeerTransportStats()
        # Reads the TLS files, if any: a missing one fails here, not at start.
        self._connections = TcpConnections(settings)
        server = TcpServer(settings, stats, self._connections, self._heard_from)
        super().__init__(settings, server, logger, stats=stats, rng=rng)

    def _new_sender(self, peer: NodeId, address: str, queue: deque[Message]) -> TcpPeerSender:
        context = TcpSenderContext(
            settings=self.settings,
            stats=self.stats,
            connections=self._connections,
            rng=self._rng,
            local_address=self._address,
            report_unreachable=self._report_unreachable,
        )
        return TcpPeerSender(context, peer, address, queue)

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

    async def _open_snapshot_stream(self, peer: NodeId) -> UploadStream:
        address = self._addresses.get(peer)
        if address is None:
            raise NotDelivered(f"peer {peer} was removed")
        try:
            reader, writer = await self._connections.dial(address, Purpose.SNAPSHOT)
        except (OSError, ssl.SSLError) as error:
            raise NotDelivered(f"cannot connect to {address}: {error}") from None
        return _UploadStream(reader, writer, self.settings)


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
