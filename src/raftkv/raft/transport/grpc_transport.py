"""GrpcTransport: Raft messages between processes over gRPC (`grpc.aio`), optionally mTLS.

Theory of operation. The transport is a composition of four parts, one module each:
- sending (grpc_sender.py): per peer, one long-lived channel, a bounded queue and a sender
  task that writes frames on one long-lived `Raft.Send` stream, backing off from a peer
  that is down and redialling one that speaks;
- outgoing snapshots (grpc_snapshot_sender.py): each MsgSnap on its own
  `Raft.SnapshotTransfer` stream, only the chunks the receiver lacks;
- the servicer (grpc_servicer.py): the gRPC server, which checks everything a peer sends
  before the handler sees it;
- connection set-up (grpc_options.py): channel and server options, mTLS credentials.
This module owns what they share: the lifecycle, the peers' addresses and senders, the
handler, the counters (`stats`), and the tasks closing senders and channels.

`send` never blocks and never raises for a peer that is down: an unreachable peer (one
with no sender, a full queue, or a failed stream) is reported to the handler with
`report_unreachable`, a snapshot that could not be delivered with `report_snapshot`.

Ordering. Messages to one peer leave in `send` order and, on a healthy stream, arrive in
that order. After a stream failure some messages are lost, never reordered on purpose.

Stopping. `stop` cancels the sender and snapshot tasks and closes the channels, ends every
incoming call with UNAVAILABLE ("the node is stopping"), then stops the server, letting
anything left finish for `shutdown_grace_seconds`. It may be called more than once.

Concurrency. Everything runs on the event loop that called `start`; handler callbacks run
there too and are never made from inside `send` (reports are scheduled with call_soon).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from random import Random

import grpc
import grpc.aio

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
from raftkv.raft.transport.grpc_options import GrpcOptions
from raftkv.raft.transport.grpc_sender import PeerSender, SenderContext
from raftkv.raft.transport.grpc_service import (
    MEMBER_METHOD,
    SEND_METHOD,
    SNAPSHOT_TRANSFER_METHOD,
)
from raftkv.raft.transport.grpc_servicer import RaftServicer
from raftkv.raft.transport.grpc_snapshot_sender import GrpcUploadStream
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats
from raftkv.raft.transport.snapshot_streams import SnapshotUploads, UploadStream

# The transport's public surface: the method paths are defined in grpc_service.py, the
# settings (shared with TcpTransport) in settings.py.
__all__ = ["MEMBER_METHOD", "SEND_METHOD", "SNAPSHOT_TRANSFER_METHOD", "GrpcTransport"]

logger = logging.getLogger("raftkv.transport.grpc")


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class GrpcTransport:
    """A `Transport` over gRPC. Start once, stop once; `stop` is safe to repeat."""

    def __init__(self, settings: PeerTransportSettings, *, rng: Random | None = None) -> None:
        self.settings = settings
        self.stats = PeerTransportStats()
        # Drives the backoff jitter; inject a seeded one for reproducible tests.
        self._rng = rng if rng is not None else Random()
        self._state = _State.NEW
        self._handler: TransportHandler | None = None
        self._address = settings.listen_address
        # Reads the TLS files, if any: a missing one fails here, not at start.
        self._options = GrpcOptions(settings)
        self._servicer = RaftServicer(settings, self.stats, self._options, self._heard_from)
        self._snapshots = SnapshotUploads(
            settings, self.stats, self._open_snapshot_stream, self._report_snapshot, logger
        )
        # Known peer addresses, kept whether or not the transport runs.
        self._addresses: dict[NodeId, str] = {}
        # One per peer while running. Invariant: keys == self._addresses' keys.
        self._senders: dict[NodeId, PeerSender] = {}
        # What the senders share; made by start, once the address is bound.
        self._sender_context: SenderContext | None = None
        # Senders and channels being closed (awaited by stop).
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
            raise InvalidArgument(f"a {self._state.value} GrpcTransport cannot start again")
        self._address = await self._servicer.start(handler)
        self._handler = handler
        self._state = _State.RUNNING
        self._sender_context = SenderContext(
            settings=self.settings,
            stats=self.stats,
            options=self._options,
            rng=self._rng,
            local_address=self._address,
            report_unreachable=self._report_unreachable,
            close_later=self._track_closing,
        )
        for peer, address in self._addresses.items():
            self._senders[peer] = PeerSender(self._sender_context, peer, address, deque())
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
        woken: set[PeerSender] = set()
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
                woken.add(sender)
        for sender in woken:
            sender.wakeup.set()
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
            self._close_later(previous)
        self._senders[peer] = PeerSender(self._sender_context, peer, address, queue)

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
        return self._servicer.incoming_snapshots

    def snapshot_cache_bytes(self) -> int:
        """Bytes of chunks kept from earlier snapshot transfers (at most
        snapshot_cache_bytes)."""
        return self._servicer.snapshot_cache_bytes

    def queue_lengths(self) -> dict[NodeId, int]:
        """Messages waiting to be sent, per peer (at most max_queue_messages each); empty
        unless running. For metrics: a queue that stays long means a slow or dead peer."""
        return {peer: len(sender.queue) for peer, sender in self._senders.items()}

    async def member_request(
        self, address: str, request: MemberRequest, timeout: float
    ) -> MemberResponse:
        wire_request = encode_member_request(self.settings.cluster_id, request)
        channel = self._options.open_channel(address)
        try:
            call = channel.unary_unary(
                MEMBER_METHOD,
                request_serializer=wire.MemberRequest.SerializeToString,
                response_deserializer=wire.MemberResponse.FromString,
            )
            response: wire.MemberResponse = await call(wire_request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TransportError(f"{address} did not answer in {timeout}s") from None
            if error.code() is grpc.StatusCode.UNAVAILABLE and "failed to connect" in str(
                error.details()
            ):
                # No connection was made: the request was never sent.
                raise NotDelivered(
                    f"member request to {address} not sent: {error.details()}"
                ) from None
            raise TransportError(
                f"member request to {address} failed: {error.code().name}: {error.details()}"
            ) from None
        finally:
            await channel.close()
        try:
            return decode_member_response(response)
        except MalformedMessage as error:
            raise TransportError(f"member answer from {address}: {error}") from None

    async def stop(self) -> None:
        if self._state is _State.STOPPED:
            return
        self._state = _State.STOPPED
        self._snapshots.cancel()
        for sender in self._senders.values():
            self._close_later(sender)
        self._senders.clear()
        # A closing task cancels its sender task, waits for it, then closes the channel.
        while self._snapshots.running or self._closing_tasks:
            await asyncio.gather(
                *self._snapshots.running, *self._closing_tasks, return_exceptions=True
            )
        await self._servicer.stop()
        self._handler = None

    # -- callbacks of the parts -----------------------------------------------------------

    async def _open_snapshot_stream(self, peer: NodeId) -> UploadStream:
        sender = self._senders.get(peer)
        if sender is None:
            raise NotDelivered(f"peer {peer} was removed")
        return GrpcUploadStream(sender.channel)

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

    # -- closing --------------------------------------------------------------------------

    def _close_later(self, sender: PeerSender) -> None:
        self._track_closing(sender.close(), f"raftkv-close-peer-{sender.peer}")

    def _track_closing(self, closing: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(closing, name=name)
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)
