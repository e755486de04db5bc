"""GrpcTransport: Raft messages between processes over gRPC (`grpc.aio`), optionally mTLS.

Theory of operation.

Sending. Each peer has one long-lived channel and one sender task. `send` appends to the
peer's bounded queue and wakes the task; it never blocks and never raises for a peer that
is down. The task drains the queue into frames (at most `max_batch_messages` messages and
`max_batch_bytes` bytes, one sender per frame) and writes them on one long-lived client
stream (`Raft.Send`). A stream fails when a write fails or times out, when it cannot connect
in `connect_timeout_seconds`, or when the peer ends it; the task then reports the peer
unreachable once, drops what was queued (Raft retransmits what matters), rests a backoff
(exponential, capped, full jitter) and opens a new stream when there is something to send.
A frame from the peer (on our server side) proves it is up: its backoff starts over, a rest
in progress ends, and a channel that gRPC itself holds in its own reconnect backoff is
replaced by a fresh one, so a restarted peer is redialled as soon as it speaks.

Snapshots (MsgSnap) bypass the queue: each goes out on its own `Raft.SnapshotTransfer`
stream (snapshot_transfer.py): an offer naming the data's chunks by SHA-256, then only the
chunks the receiver lacks (it remembers chunks of earlier transfers, so a transfer cut off
by a dropped connection resumes, and looks in its own state when its handler is
`LocalSnapshots`), each compressed, at most `max_snapshot_chunks_in_flight` ahead of the
receiver's acknowledgements. The outcome is reported with `report_snapshot(peer, ok)`; ok
means the receiver verified the whole data and delivered it. One log line per transfer
says what it cost: chunks and bytes sent against the full size.

Receiving. The server decodes every frame itself (handlers take raw bytes) so that nothing
a peer sends can raise outside this module: undecodable bytes, unknown enum codes,
malformed messages, another cluster's id or a sender that is not the frame's `from_node`
are logged (one rate-limited line with the peer's address) and the stream is aborted with
INVALID_ARGUMENT; nothing from a rejected frame reaches the handler. A snapshot is delivered
only once every check passed, the handler's own included (ChecksSnapshots: it runs on a
worker thread; a snapshot it refuses fails the transfer with INVALID_ARGUMENT).

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
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Final, NoReturn, TypeVar

import grpc
import grpc.aio

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import (
    ChecksSnapshots,
    LocalSnapshots,
    MemberRequest,
    MemberResponse,
    NotDelivered,
    TransportError,
    TransportHandler,
)
from raftkv.raft.transport.codec import (
    FRAME_OVERHEAD_BYTES,
    WIRE_MESSAGE_TYPES,
    decode_frame,
    decode_member_request,
    decode_member_response,
    encode_batch,
    encode_member_request,
    encode_member_response,
    encoded_size_bound,
)
from raftkv.raft.transport.grpc_settings import (
    GrpcTransportSettings,
    GrpcTransportStats,
    TransportSettingsInvalid,
    split_address,
)
from raftkv.raft.transport.snapshot_transfer import (
    ChunkCache,
    IncomingSnapshot,
    OutgoingSnapshot,
    SnapshotTooLarge,
    TransferLimits,
    acknowledged,
)

__all__ = [
    "MEMBER_METHOD",
    "SEND_METHOD",
    "SNAPSHOT_TRANSFER_METHOD",
    "GrpcTransport",
    "GrpcTransportSettings",
    "GrpcTransportStats",
    "TransportSettingsInvalid",
]

logger = logging.getLogger("raftkv.transport.grpc")

_SERVICE: Final = wire.DESCRIPTOR.services_by_name["Raft"].full_name
SEND_METHOD: Final = f"/{_SERVICE}/Send"
SNAPSHOT_TRANSFER_METHOD: Final = f"/{_SERVICE}/SnapshotTransfer"
MEMBER_METHOD: Final = f"/{_SERVICE}/Member"
# Older nodes sent snapshots here; this one refuses them with a status that says why.
_LEGACY_SNAPSHOT_METHOD: Final = "SendSnapshot"

_Request = TypeVar("_Request", bytes, AsyncIterator[bytes])
_Response = TypeVar("_Response", bytes, None)
_Context = grpc.aio.ServicerContext[bytes, bytes]
# Repeated log lines about one peer (or one remote host) are written at most this often;
# the next line says how many were suppressed.
_LOG_INTERVAL_SECONDS: Final = 10.0
# The rate limiter forgets everything past this many keys, so a flood of distinct remote
# addresses cannot grow it without bound.
_LOG_LIMITER_MAX_KEYS: Final = 1024
# HTTP/2 streams one connection may have open at once (Send, snapshots, member requests).
_MAX_CONCURRENT_STREAMS: Final = 64
# How long stop() waits for cancelled handlers to end their calls (one turn of the event
# loop, unless the node's handle_member_request is slow to honour cancellation).
_HANDLER_EXIT_SECONDS: Final = 1.0
# Hearing from a peer ends a backoff rest, but no sooner than this after the rest began: a
# peer that reaches us while we cannot reach it (a one-way partition, an address that
# changed) is redialled at most this often, not at the rate it sends.
_MIN_REST_SECONDS: Final = 0.05


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class GrpcTransport:
    """A `Transport` over gRPC. Start once, stop once; `stop` is safe to repeat."""

    def __init__(self, settings: GrpcTransportSettings, *, rng: Random | None = None) -> None:
        self.settings = settings
        self.stats = GrpcTransportStats()
        # Drives the backoff jitter; inject a seeded one for reproducible tests.
        self._rng = rng if rng is not None else Random()
        self._state = _State.NEW
        self._handler: TransportHandler | None = None
        self._server: grpc.aio.Server | None = None
        self._address = settings.listen_address
        # Known peer addresses, kept whether or not the transport runs.
        self._addresses: dict[NodeId, str] = {}
        # One per peer while running. Invariant: keys == self._addresses' keys.
        self._senders: dict[NodeId, _PeerSender] = {}
        # Outgoing snapshot transfers (cancelled by stop) and senders being closed (awaited
        # by stop): every task this transport started outside the gRPC server.
        self._snapshot_tasks: set[asyncio.Task[None]] = set()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._incoming_snapshots = 0
        # Chunks received in earlier transfers: what makes a cut-off transfer resumable.
        self._chunk_cache = ChunkCache(settings.snapshot_cache_bytes)
        self._limits = TransferLimits(
            max_snapshot_bytes=settings.max_snapshot_bytes,
            max_snapshot_chunks=settings.max_snapshot_chunks,
            max_snapshot_chunk_bytes=settings.max_snapshot_chunk_bytes,
        )
        # The tasks gRPC runs our handlers in, so that stop() can end them itself (see
        # _tracked).
        self._incoming_tasks: set[asyncio.Task[object]] = set()
        self._receive_log = _LogLimiter()
        self._server_credentials: grpc.ServerCredentials | None = None
        self._channel_credentials: grpc.ChannelCredentials | None = None
        if settings.tls:
            self._load_tls()

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
        settings = self.settings
        server = grpc.aio.server(options=self._server_options())
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    _SERVICE,
                    {
                        "Send": grpc.stream_unary_rpc_method_handler(
                            self._tracked(self._serve_send)
                        ),
                        "SnapshotTransfer": grpc.stream_stream_rpc_method_handler(
                            self._tracked(self._serve_snapshot)
                        ),
                        _LEGACY_SNAPSHOT_METHOD: grpc.stream_unary_rpc_method_handler(
                            self._tracked(self._refuse_legacy_snapshot)
                        ),
                        "Member": grpc.unary_unary_rpc_method_handler(
                            self._tracked(self._serve_member)
                        ),
                    },
                ),
            )
        )
        try:
            if self._server_credentials is not None:
                port = server.add_secure_port(settings.listen_address, self._server_credentials)
            else:
                port = server.add_insecure_port(settings.listen_address)
        except RuntimeError as error:
            await server.stop(None)
            raise TransportError(f"cannot listen on {settings.listen_address}: {error}") from None
        host, _ = split_address(settings.listen_address)
        self._address = f"{host}:{port}"
        await server.start()
        self._server = server
        self._handler = handler
        self._state = _State.RUNNING
        for peer, address in self._addresses.items():
            self._senders[peer] = _PeerSender(self, peer, address, deque())
        logger.info("listening on %s (cluster %d)", self._address, settings.cluster_id)

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
        woken: set[_PeerSender] = set()
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
                self._start_snapshot(sender, message)
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
        previous = self._senders.pop(peer, None)
        # Messages already queued are for the peer, not the address: they carry over.
        queue = previous.queue if previous is not None else deque()
        if previous is not None:
            self._close_later(previous)
        self._senders[peer] = _PeerSender(self, peer, address, queue)

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
        return self._incoming_snapshots

    def snapshot_cache_bytes(self) -> int:
        """Bytes of chunks kept from earlier snapshot transfers (at most
        snapshot_cache_bytes)."""
        return self._chunk_cache.size_bytes

    def queue_lengths(self) -> dict[NodeId, int]:
        """Messages waiting to be sent, per peer (at most max_queue_messages each); empty
        unless running. For metrics: a queue that stays long means a slow or dead peer."""
        return {peer: len(sender.queue) for peer, sender in self._senders.items()}

    async def member_request(
        self, address: str, request: MemberRequest, timeout: float
    ) -> MemberResponse:
        wire_request = encode_member_request(self.settings.cluster_id, request)
        channel = self._open_channel(address)
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
        for task in self._snapshot_tasks:
            task.cancel()
        for sender in self._senders.values():
            self._close_later(sender)
        self._senders.clear()
        # A closing task cancels its sender task, waits for it, then closes the channel.
        while self._snapshot_tasks or self._closing_tasks:
            await asyncio.gather(
                *self._snapshot_tasks, *self._closing_tasks, return_exceptions=True
            )
        # Peers keep their Send streams open forever, so there are always calls in flight.
        # End them here with a status (see _tracked) rather than let server.stop cancel
        # them, which gRPC logs as an unhandled error, one traceback per peer.
        incoming = list(self._incoming_tasks)
        for call_task in incoming:
            call_task.cancel()
        if incoming:
            await asyncio.wait(incoming, timeout=_HANDLER_EXIT_SECONDS)
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace_seconds)
            self._server = None
            logger.info("stopped listening on %s", self._address)
        self._handler = None

    # -- handler callbacks ----------------------------------------------------------------

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

    # -- outgoing snapshots ---------------------------------------------------------------

    def _start_snapshot(self, sender: _PeerSender, message: Message) -> None:
        task = asyncio.get_running_loop().create_task(
            self._send_snapshot(sender, message), name=f"raftkv-snapshot-to-{sender.peer}"
        )
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _send_snapshot(self, sender: _PeerSender, message: Message) -> None:
        snapshot = message.snapshot
        assert snapshot is not None  # MsgSnap always carries one (check_peer_message)
        progress = _Progress(
            f"snapshot {snapshot.metadata.term}/{snapshot.metadata.index} to peer {sender.peer}",
            time.monotonic(),
        )
        ok = False
        failure = "unknown"
        try:
            # Cutting and hashing is O(data): off the event loop. An encoding error (a
            # local bug) raises here, in this task.
            outgoing = await asyncio.to_thread(
                OutgoingSnapshot.build,
                self.settings.cluster_id,
                message,
                self.settings.snapshot_chunk_bytes,
            )
            progress.chunks, progress.full_bytes = outgoing.chunk_count, outgoing.total_bytes
            method: grpc.aio.StreamStreamMultiCallable[wire.SnapshotUpload, wire.SnapshotReply]
            method = sender.channel.stream_stream(
                SNAPSHOT_TRANSFER_METHOD,
                request_serializer=wire.SnapshotUpload.SerializeToString,
                response_deserializer=wire.SnapshotReply.FromString,
            )
            call = method(timeout=self.settings.snapshot_timeout_seconds)
            try:
                await self._transfer(call, outgoing, progress)
                ok = True
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                failure = await _transfer_failure(call)
            except MalformedMessage as error:
                failure = f"the receiver broke the protocol: {error}"
            finally:
                call.cancel()
        except InvalidArgument as error:
            failure = f"not sent: {error}"
            logger.error("%s %s", progress.what, failure)
        except asyncio.CancelledError:
            failure = ""  # stop(): nothing to report or log
            raise
        finally:
            if ok:
                self.stats.snapshots_sent += 1
            else:
                self.stats.snapshots_failed += 1
            self._report_snapshot(sender.peer, ok)
            if ok:
                logger.info("sent %s: %s", progress.what, progress.describe())
            elif failure:
                logger.warning("%s failed: %s; %s", progress.what, failure, progress.describe())

    async def _transfer(
        self, call: _TransferCall, outgoing: OutgoingSnapshot, progress: _Progress
    ) -> None:
        """Offer, send what is wanted, wait until delivered. Raises what the call raises,
        or MalformedMessage for a receiver that breaks the protocol."""
        stats = self.stats
        await call.write(outgoing.upload())
        positions = outgoing.wanted(await _read_reply(call))
        wanted_bytes = outgoing.wanted_bytes(positions)
        progress.wanted = len(positions)
        stats.snapshot_full_bytes += outgoing.total_bytes
        stats.snapshot_bytes_reused += outgoing.total_bytes - wanted_bytes
        stats.snapshot_chunks_reused += outgoing.chunk_count - len(positions)
        in_flight_limit = self.settings.max_snapshot_chunks_in_flight
        verified = 0
        for sent, position in enumerate(positions):
            while sent - verified >= in_flight_limit:
                verified = acknowledged(await _read_reply(call), verified, sent)
            upload = await asyncio.to_thread(outgoing.chunk, position)
            await call.write(upload)
            size = len(upload.chunk.data)
            progress.sent += 1
            progress.bytes_sent += size
            stats.snapshot_chunks_sent += 1
            stats.snapshot_bytes_sent += size
        await call.done_writing()
        while True:
            reply = await _read_reply(call)
            if reply.WhichOneof("kind") == "delivered":
                return
            verified = acknowledged(reply, verified, len(positions))

    # -- serving ----------------------------------------------------------------------------

    def _tracked(
        self, serve: Callable[[_Request, _Context], Awaitable[_Response]]
    ) -> Callable[[_Request, _Context], Awaitable[_Response]]:
        """`serve`, run so that stop() can end it: while it runs its task is in
        _incoming_tasks, and when stop() cancels it the call ends with UNAVAILABLE."""

        async def tracked(request: _Request, context: _Context) -> _Response:
            task = asyncio.current_task()
            assert task is not None
            self._incoming_tasks.add(task)
            try:
                return await serve(request, context)
            except asyncio.CancelledError:
                if self._state is _State.STOPPED:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the node is stopping")
                raise
            finally:
                self._incoming_tasks.discard(task)

        return tracked

    async def _serve_send(
        self, frames: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        received = 0
        async for frame in frames:
            try:
                # The frame's from_address is only what the sender claims: never dialled.
                # Addresses come from set_peer alone (the membership the node learned from
                # its log, snapshots, the operator, or a member it asked), so that no frame
                # can choose where this node connects.
                from_node, _, messages = decode_frame(frame, self.settings.cluster_id)
            except MalformedMessage as error:
                await self._reject(context, "Send", grpc.StatusCode.INVALID_ARGUMENT, error)
            if messages and self._handler is not None:
                self.stats.frames_received += 1
                self.stats.messages_received += len(messages)
                self._handler.deliver(messages)
            self._heard_from(from_node)
            received += len(messages)
        return wire.SendAck(messages_received=received).SerializeToString()

    async def _serve_snapshot(
        self, uploads: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        """One SnapshotTransfer stream, read and answered through `context` (`uploads`
        stays unused: gRPC allows one of the two)."""
        method = "SnapshotTransfer"
        if self._incoming_snapshots >= self.settings.max_incoming_snapshots:
            await self._reject(
                context,
                method,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"already receiving {self._incoming_snapshots} snapshots (max_incoming_snapshots)",
            )
        self._incoming_snapshots += 1
        try:
            async with asyncio.timeout(self.settings.snapshot_timeout_seconds):
                incoming = await self._receive_snapshot(context)
                message = await asyncio.to_thread(incoming.finish)
                checks = _snapshot_checks(self._handler)
                if checks is not None:
                    try:
                        await asyncio.to_thread(checks.check_snapshot, message)
                    except MalformedMessage:
                        self.stats.snapshots_refused += 1
                        raise
        except SnapshotTooLarge as error:
            await self._reject(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED, error)
        except MalformedMessage as error:
            await self._reject(context, method, grpc.StatusCode.INVALID_ARGUMENT, error)
        except TimeoutError:
            await self._reject(
                context,
                method,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the snapshot transfer stalled or outlasted snapshot_timeout_seconds",
            )
        finally:
            self._incoming_snapshots -= 1
        if self._handler is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "transport stopped")
        self.stats.snapshots_received += 1
        self._handler.deliver([message])
        snapshot = message.snapshot
        assert snapshot is not None
        logger.info(
            "received snapshot %d/%d from node %d: %d bytes; %d of %d chunks sent (%d bytes), "
            "%d from earlier transfers, %d from this node's state",
            snapshot.metadata.term,
            snapshot.metadata.index,
            message.sender,
            incoming.total_bytes,
            incoming.received,
            incoming.chunk_count,
            incoming.received_bytes,
            incoming.from_cache,
            incoming.from_local,
        )
        delivered = wire.SnapshotDelivered(bytes_received=incoming.received_bytes)
        await context.write(wire.SnapshotReply(delivered=delivered).SerializeToString())

    async def _receive_snapshot(self, context: _Context) -> IncomingSnapshot:
        """Read the offer, answer what is missing, read and check those chunks."""
        settings, stats = self.settings, self.stats
        incoming = IncomingSnapshot(
            settings.cluster_id, self._limits, await self._read_upload(context, "its offer")
        )
        incoming.reuse_cached(self._chunk_cache)
        source = _local_snapshots(self._handler)
        if incoming.missing() and source is not None:
            local = await self._local_snapshot_data(source)
            if local:
                await asyncio.to_thread(incoming.reuse_local, local)
        stats.snapshot_chunks_from_cache += incoming.from_cache
        stats.snapshot_chunks_from_local += incoming.from_local
        await context.write(incoming.wants().SerializeToString())
        while not incoming.complete:
            data = await self._read_upload(
                context, f"chunk {incoming.received + 1} of {incoming.wanted_count}"
            )
            received_bytes = incoming.received_bytes
            digest, chunk = await asyncio.to_thread(incoming.add, data)
            # Kept at once, so that a transfer cut off after this resumes after it.
            self._chunk_cache.put(digest, chunk)
            stats.snapshot_chunks_received += 1
            stats.snapshot_bytes_received += incoming.received_bytes - received_bytes
            await context.write(incoming.progress().SerializeToString())
        return incoming

    async def _read_upload(self, context: _Context, what: str) -> bytes:
        """The next message of a SnapshotTransfer stream. MalformedMessage if the stream
        ends first; TimeoutError if none comes within request_timeout_seconds."""
        async with asyncio.timeout(self.settings.request_timeout_seconds):
            # Typed as bytes, but grpc.aio.EOF once the sender has closed its side.
            data: object = await context.read()
        if not isinstance(data, bytes):
            raise MalformedMessage(f"snapshot stream ended before {what}")
        return data

    async def _local_snapshot_data(self, handler: LocalSnapshots) -> bytes | None:
        """The handler's own state as snapshot data, or None if it cannot give it. Only an
        optimization: a failure here costs a full transfer, so it is logged, not raised."""
        try:
            return await handler.local_snapshot_data()
        except Exception:
            logger.exception("no local state to reuse for an incoming snapshot")
            return None

    async def _refuse_legacy_snapshot(
        self, chunks: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        await self._reject(
            context,
            _LEGACY_SNAPSHOT_METHOD,
            grpc.StatusCode.FAILED_PRECONDITION,
            "this node receives snapshots over SnapshotTransfer only; the sending node runs "
            "an older raftkv and must be upgraded",
        )

    async def _serve_member(
        self, data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        try:
            request = decode_member_request(data, self.settings.cluster_id)
        except MalformedMessage as error:
            await self._reject(context, "Member", grpc.StatusCode.INVALID_ARGUMENT, error)
        if self._handler is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "transport stopped")
        response = await self._handler.handle_member_request(request)
        return encode_member_response(response).SerializeToString()

    async def _reject(
        self,
        context: grpc.aio.ServicerContext[bytes, bytes],
        method: str,
        code: grpc.StatusCode,
        reason: Exception | str,
    ) -> NoReturn:
        """Log one line about a peer's bad input and end its stream. Never returns."""
        self.stats.streams_rejected += 1
        remote = context.peer()
        # Rate-limited per remote host (the port changes with every connection).
        suppressed = self._receive_log.allow(remote.rsplit(":", 1)[0])
        if suppressed is not None:
            logger.warning(
                "rejected %s from %s: %s: %s%s",
                method,
                remote,
                code.name,
                reason,
                _suppressed_note(suppressed),
            )
        await context.abort(code, str(reason))

    # -- channels -----------------------------------------------------------------------------

    def _open_channel(self, address: str) -> grpc.aio.Channel:
        options = self._channel_options()
        if self._channel_credentials is not None:
            return grpc.aio.secure_channel(address, self._channel_credentials, options=options)
        return grpc.aio.insecure_channel(address, options=options)

    def _close_later(self, sender: _PeerSender) -> None:
        self._track_closing(sender.close(), f"raftkv-close-peer-{sender.peer}")

    def _close_channel_later(self, channel: grpc.aio.Channel, peer: NodeId) -> None:
        self._track_closing(channel.close(), f"raftkv-close-channel-{peer}")

    def _track_closing(self, closing: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(closing, name=name)
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    def _keepalive_options(self) -> list[tuple[str, int]]:
        settings = self.settings
        interval_ms = int(settings.keepalive_interval_seconds * 1000)
        return [
            ("grpc.keepalive_time_ms", interval_ms),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def _channel_options(self) -> list[tuple[str, str | int]]:
        settings = self.settings
        initial_ms = int(settings.reconnect_backoff_initial_seconds * 1000)
        options: list[tuple[str, str | int]] = [
            *self._keepalive_options(),
            # gRPC reconnects channels on its own too; keep its backoff within ours so a
            # peer that comes back is reached within reconnect_backoff_max_seconds.
            ("grpc.initial_reconnect_backoff_ms", initial_ms),
            ("grpc.min_reconnect_backoff_ms", initial_ms),
            ("grpc.max_reconnect_backoff_ms", int(settings.reconnect_backoff_max_seconds * 1000)),
            # Each channel owns its connection: replacing or closing one never affects
            # another peer's (or another transport's in the same process).
            ("grpc.use_local_subchannel_pool", 1),
            # We retry by reconnecting; gRPC's transparent retries would hide failures.
            ("grpc.enable_retries", 0),
        ]
        if settings.server_name_override is not None:
            options.append(("grpc.ssl_target_name_override", settings.server_name_override))
        return options

    def _server_options(self) -> list[tuple[str, int]]:
        settings = self.settings
        return [
            *self._keepalive_options(),
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_concurrent_streams", _MAX_CONCURRENT_STREAMS),
            # Peers ping at keepalive_interval_seconds; accept that (the default minimum
            # is 5 minutes, and gRPC would close the connection for "too many pings").
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(settings.keepalive_interval_seconds * 500),
            ),
            # Never share a port with another process: a second node on the same address
            # must fail to start, not silently receive half the connections.
            ("grpc.so_reuseport", 0),
        ]

    def _load_tls(self) -> None:
        settings = self.settings
        assert settings.ca_file and settings.cert_file and settings.key_file
        try:
            ca = settings.ca_file.read_bytes()
            certificate = settings.cert_file.read_bytes()
            key = settings.key_file.read_bytes()
        except OSError as error:
            raise TransportSettingsInvalid(f"cannot read a TLS file: {error}") from error
        self._server_credentials = grpc.ssl_server_credentials(
            [(key, certificate)], root_certificates=ca, require_client_auth=True
        )
        self._channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=certificate
        )


class _PeerSender:
    """The channel, queue and sender task of one peer.

    Invariants: `queue` holds at most max_queue_messages non-snapshot messages for `peer`,
    in send order; `call` is the open Send stream or None; only the task writes on it, and
    only the task replaces `channel` (never while `call` is open).
    """

    def __init__(
        self, transport: GrpcTransport, peer: NodeId, address: str, queue: deque[Message]
    ) -> None:
        self.transport = transport
        self.peer = peer
        self.address = address
        self.queue = queue
        self.wakeup = asyncio.Event()
        self.call: _SendCall | None = None
        # Set by the call's done callback: the stream ended while we were not writing.
        self.broken = False
        # Consecutive failed streams; drives the backoff. Reset by a successful write, and
        # by hearing from the peer (heard_from).
        self.failures = 0
        # Whether the last stream failed and no write has succeeded since (for the log).
        self.unreachable = False
        # Set by heard_from while failures > 0: ends the rest (see _rest) and has the next
        # stream open on a channel that is not in gRPC's own reconnect backoff.
        self.heard = asyncio.Event()
        # Set whenever the task has sent everything queued (drain_then_close waits on it).
        self.emptied = asyncio.Event()
        self.log = _LogLimiter()
        self.channel: grpc.aio.Channel
        self._method: grpc.aio.StreamUnaryMultiCallable[wire.MessageBatch, wire.SendAck]
        self._use_channel(transport._open_channel(address))
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"raftkv-send-to-{peer}"
        )
        if queue:
            self.wakeup.set()

    def _use_channel(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._method = channel.stream_unary(
            SEND_METHOD,
            request_serializer=wire.MessageBatch.SerializeToString,
            response_deserializer=wire.SendAck.FromString,
        )

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()

    async def drain_then_close(self, timeout: float) -> None:
        """Send what is queued, for at most `timeout` seconds (an unreachable peer gets it
        dropped), then close."""
        if self.queue:
            self.emptied.clear()
            self.wakeup.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.emptied.wait()
        self.transport.stats.messages_dropped += len(self.queue)
        self.queue.clear()
        await self.close()

    def heard_from(self) -> None:
        """The peer sent us a frame, so it is up: the backoff its absence built up starts
        over, and a rest in progress ends (a follower restarted after a long outage must
        not wait out a backoff grown while it was down)."""
        if self.failures:
            self.failures = 0
            self.heard.set()

    async def _run(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                if self.broken:
                    await self._fail(await _failure_reason(self.call))
                    continue
                while self.queue:
                    failure = await self._send_frame()
                    if failure is not None:
                        await self._fail(failure)
                        break
                if not self.queue:
                    self.emptied.set()
        finally:
            if self.call is not None:
                self.call.cancel()
                self.call = None

    async def _send_frame(self) -> str | None:
        """Write one frame from the queue; the reason the stream failed, or None."""
        transport = self.transport
        settings = transport.settings
        frame = self._take_frame(settings.max_batch_messages, settings.max_batch_bytes)
        try:
            batch = encode_batch(settings.cluster_id, frame, transport.address)
        except InvalidArgument as error:
            # Our own bug (say, a negative term): nothing the peer can help with, and no
            # reason to break the stream. Raft retransmits.
            logger.error("dropped %d messages to peer %d: %s", len(frame), self.peer, error)
            transport.stats.messages_dropped += len(frame)
            return None
        phase = "connect"
        try:
            if self.call is None:
                if self.heard.is_set():
                    self._refresh_channel()
                async with asyncio.timeout(settings.connect_timeout_seconds):
                    self.call = await self._open_stream()
            phase = "write"
            async with asyncio.timeout(settings.request_timeout_seconds):
                await self.call.write(batch)
        except TimeoutError:
            transport.stats.messages_dropped += len(frame)
            return f"{phase} timed out"
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            transport.stats.messages_dropped += len(frame)
            return await _failure_reason(self.call)
        transport.stats.frames_sent += 1
        transport.stats.messages_sent += len(frame)
        if self.unreachable:
            logger.info("peer %d at %s is reachable again", self.peer, self.address)
            self.unreachable = False
        self.failures = 0
        return None

    def _refresh_channel(self) -> None:
        """After hearing from the peer: if gRPC holds the channel in its own reconnect
        backoff (TRANSIENT_FAILURE: calls fail at once until its timer, up to
        reconnect_backoff_max_seconds, runs out), dial on a fresh channel instead."""
        self.heard.clear()
        state = self.channel.get_state(try_to_connect=False)
        if state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            return
        stale = self.channel
        self._use_channel(self.transport._open_channel(self.address))
        # A snapshot transfer on the stale channel is failing anyway (the channel is down).
        self.transport._close_channel_later(stale, self.peer)

    async def _open_stream(self) -> _SendCall:
        call = self._method(wait_for_ready=False)
        # Set before waiting, so a timeout or a failure finds the call to cancel or explain.
        self.call = call
        self.broken = False
        call.add_done_callback(self._on_call_done)
        await call.wait_for_connection()
        return call

    def _on_call_done(self, call: grpc.aio.Call) -> None:
        # The peer never ends a healthy stream: any end we did not cause is a failure.
        if call is self.call:
            self.broken = True
            self.wakeup.set()

    def _take_frame(self, max_messages: int, max_bytes: int) -> list[Message]:
        """Pop the next frame: at least one message, then more while they share a sender
        and fit the limits. (A single message over max_bytes still goes alone.)"""
        queue = self.queue
        first = queue.popleft()
        frame = [first]
        sender = first.sender
        size = FRAME_OVERHEAD_BYTES + encoded_size_bound(first)
        while queue and len(frame) < max_messages:
            following = queue[0]
            if following.sender != sender:
                break
            size += encoded_size_bound(following)
            if size > max_bytes:
                break
            frame.append(queue.popleft())
        return frame

    async def _fail(self, reason: str) -> None:
        """Give up the stream: report once, drop the queue, back off."""
        transport = self.transport
        settings = transport.settings
        call, self.call = self.call, None
        self.broken = False
        if call is not None:
            call.cancel()
        dropped = len(self.queue)
        self.queue.clear()
        transport.stats.messages_dropped += dropped
        transport.stats.stream_failures += 1
        transport._report_unreachable(self.peer)
        ceiling = min(
            settings.reconnect_backoff_max_seconds,
            settings.reconnect_backoff_initial_seconds * 2 ** min(self.failures, 32),
        )
        delay = transport._rng.uniform(0, ceiling)
        self.failures += 1
        self.unreachable = True
        self.heard.clear()
        suppressed = self.log.allow("failure")
        if suppressed is not None:
            logger.warning(
                "peer %d at %s unreachable: %s; dropped %d queued messages; retrying in %.2fs%s",
                self.peer,
                self.address,
                reason,
                dropped,
                delay,
                _suppressed_note(suppressed),
            )
        await self._rest(delay)

    async def _rest(self, delay: float) -> None:
        """Wait `delay` seconds, or until the peer is heard from, but at least
        _MIN_REST_SECONDS (or `delay` if shorter)."""
        floor = min(delay, _MIN_REST_SECONDS)
        await asyncio.sleep(floor)
        if self.heard.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay - floor):
                await self.heard.wait()


_SendCall = grpc.aio.StreamUnaryCall[wire.MessageBatch, wire.SendAck]
_TransferCall = grpc.aio.StreamStreamCall[wire.SnapshotUpload, wire.SnapshotReply]


@dataclass(slots=True)
class _Progress:
    """How far one outgoing snapshot transfer got, for its log line."""

    what: str
    started: float
    chunks: int = 0
    full_bytes: int = 0
    # Chunks the receiver asked for (-1 until it answered), chunks and bytes sent.
    wanted: int = -1
    sent: int = 0
    bytes_sent: int = 0

    def describe(self) -> str:
        seconds = time.monotonic() - self.started
        if self.wanted < 0:
            return f"{self.full_bytes} bytes in {self.chunks} chunks, none sent ({seconds:.2f}s)"
        share = self.bytes_sent / self.full_bytes if self.full_bytes else 0.0
        return (
            f"{self.sent} of {self.wanted} wanted chunks sent ({self.chunks - self.wanted} of "
            f"{self.chunks} held by the peer), {self.bytes_sent} bytes on the wire for "
            f"{self.full_bytes} bytes of data ({share:.1%}) in {seconds:.2f}s"
        )


def _snapshot_checks(handler: object) -> ChecksSnapshots | None:
    """The handler as a ChecksSnapshots, if it has that capability."""
    return handler if isinstance(handler, ChecksSnapshots) else None


def _local_snapshots(handler: object) -> LocalSnapshots | None:
    """The handler as a LocalSnapshots, if it has that capability. (Taking `object`: mypy
    cannot narrow one protocol type to another.)"""
    return handler if isinstance(handler, LocalSnapshots) else None


async def _read_reply(call: _TransferCall) -> wire.SnapshotReply:
    reply = await call.read()
    if reply is grpc.aio.EOF:
        raise MalformedMessage("the receiver ended the stream before the snapshot was delivered")
    assert isinstance(reply, wire.SnapshotReply)
    return reply


async def _transfer_failure(call: _TransferCall) -> str:
    """Why a SnapshotTransfer call failed, for the log."""
    code = await call.code()
    details = await call.details()
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return (
            f"the peer does not serve SnapshotTransfer: it runs an older raftkv and must be "
            f"upgraded ({details})"
        )
    return f"{code.name}: {details}" if details else code.name


async def _failure_reason(call: _SendCall | None) -> str:
    """Why a Send stream ended, for the log."""
    if call is None or not call.done():
        return "stream closed"
    code = await call.code()
    details = await call.details()
    return f"{code.name}: {details}" if details else code.name


def _suppressed_note(suppressed: int) -> str:
    return f" ({suppressed} similar lines suppressed)" if suppressed else ""


@dataclass(slots=True)
class _LogLimiter:
    """Allows one log line per key per _LOG_INTERVAL_SECONDS and counts the rest."""

    _next_allowed: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str) -> int | None:
        """None to stay quiet, else how many lines for `key` were suppressed since the last."""
        now = time.monotonic()
        if now < self._next_allowed.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._next_allowed) >= _LOG_LIMITER_MAX_KEYS:
            self._next_allowed.clear()
            self._suppressed.clear()
        self._next_allowed[key] = now + _LOG_INTERVAL_SECONDS
        return self._suppressed.pop(key, 0)
