"""The server side of a GrpcTransport: the gRPC server and the `Raft` service's handlers
(Send, SnapshotTransfer, Member).

The servicer decodes every frame itself (handlers take raw bytes) so that nothing a peer
sends can raise outside this module: undecodable bytes, unknown enum codes, malformed
messages, another cluster's id or a sender that is not the frame's `from_node` are logged
(one rate-limited line with the peer's address) and the stream is aborted with
INVALID_ARGUMENT; nothing from a rejected frame reaches the handler. A snapshot is delivered
only once every check passed, the handler's own included (ChecksSnapshots: it runs on a
worker thread; a snapshot it refuses fails the transfer with INVALID_ARGUMENT). Chunks of
incoming snapshots are kept (up to snapshot_cache_bytes) so that a transfer cut off by a
dropped connection resumes where it stopped.

Stopping: peers keep their Send streams open forever, so there are always calls in flight.
`stop` ends each with UNAVAILABLE ("the node is stopping"), then stops the server, letting
anything left finish for `shutdown_grace_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Final, NoReturn, TypeVar

import grpc
import grpc.aio

from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.core.types import NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import (
    TransportError,
    TransportHandler,
)
from raftkv.raft.transport.codec import (
    decode_frame,
    decode_member_request,
    encode_member_response,
)
from raftkv.raft.transport.grpc_options import GrpcOptions
from raftkv.raft.transport.grpc_service import (
    LEGACY_SNAPSHOT_METHOD_NAME,
    MEMBER_METHOD_NAME,
    SEND_METHOD_NAME,
    SERVICE,
    SNAPSHOT_TRANSFER_METHOD_NAME,
)
from raftkv.raft.transport.log_limiter import LogLimiter, suppressed_note
from raftkv.raft.transport.peer_identity import PeerIdentity, UnknownPeer
from raftkv.raft.transport.settings import (
    PeerTransportSettings,
    PeerTransportStats,
    split_address,
)
from raftkv.raft.transport.snapshot_streams import SnapshotReceiver
from raftkv.raft.transport.snapshot_transfer import SnapshotTooLarge

__all__ = ["RaftServicer"]

logger = logging.getLogger("raftkv.transport.grpc")

_Request = TypeVar("_Request", bytes, AsyncIterator[bytes])
_Response = TypeVar("_Response", bytes, None)
_Context = grpc.aio.ServicerContext[bytes, bytes]
# How long stop() waits for cancelled handlers to end their calls (one turn of the event
# loop, unless the node's handle_member_request is slow to honour cancellation).
_HANDLER_EXIT_SECONDS: Final = 1.0


class RaftServicer:
    """The gRPC server peers call, serving the `Raft` service to a `TransportHandler`.
    Start once, stop once; `stop` is safe to repeat.

    `heard_from(peer)` is told of every accepted frame's sender: proof that the peer is up
    (the transport's sender to it stops backing off).
    """

    def __init__(
        self,
        settings: PeerTransportSettings,
        stats: PeerTransportStats,
        options: GrpcOptions,
        heard_from: Callable[[NodeId], None],
    ) -> None:
        self.settings = settings
        self.stats = stats
        self._options = options
        self._heard_from = heard_from
        self._handler: TransportHandler | None = None
        self._server: grpc.aio.Server | None = None
        self._address = settings.listen_address
        # Set by stop: a handler cancelled from then on ends its call with UNAVAILABLE.
        self._stopping = False
        self._snapshots = SnapshotReceiver(settings, stats, logger)
        # The tasks gRPC runs our handlers in, so that stop() can end them itself (see
        # _tracked).
        self._incoming_tasks: set[asyncio.Task[object]] = set()
        self._receive_log = LogLimiter()

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
        settings = self.settings
        server = self._options.new_server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        SEND_METHOD_NAME: grpc.stream_unary_rpc_method_handler(
                            self._tracked(self._serve_send)
                        ),
                        SNAPSHOT_TRANSFER_METHOD_NAME: grpc.stream_stream_rpc_method_handler(
                            self._tracked(self._serve_snapshot)
                        ),
                        LEGACY_SNAPSHOT_METHOD_NAME: grpc.stream_unary_rpc_method_handler(
                            self._tracked(self._refuse_legacy_snapshot)
                        ),
                        MEMBER_METHOD_NAME: grpc.unary_unary_rpc_method_handler(
                            self._tracked(self._serve_member)
                        ),
                    },
                ),
            )
        )
        try:
            port = self._options.listen(server, settings.listen_address)
        except RuntimeError as error:
            await server.stop(None)
            raise TransportError(f"cannot listen on {settings.listen_address}: {error}") from None
        host, _ = split_address(settings.listen_address)
        self._address = f"{host}:{port}"
        await server.start()
        self._server = server
        self._handler = handler
        return self._address

    async def stop(self) -> None:
        """End every incoming call with UNAVAILABLE, then stop the server."""
        self._stopping = True
        # Ended here with a status (see _tracked) rather than cancelled by server.stop,
        # which gRPC logs as an unhandled error, one traceback per peer.
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
                if self._stopping:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the node is stopping")
                raise
            finally:
                self._incoming_tasks.discard(task)

        return tracked

    async def _identity(self, context: _Context, method: str) -> PeerIdentity:
        """Who the calling peer's certificate says it is (peer_identity); a certificate
        that names no node ends the call."""
        try:
            return PeerIdentity.of_grpc_auth(
                context.auth_context(), self.settings.allowed_common_names
            )
        except UnknownPeer as error:
            await self._reject(context, method, grpc.StatusCode.PERMISSION_DENIED, error)

    async def _serve_send(
        self, frames: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        identity = await self._identity(context, SEND_METHOD_NAME)
        received = 0
        async for frame in frames:
            try:
                # The frame's from_address is only what the sender claims: never dialled.
                # Addresses come from set_peer alone (the membership the node learned from
                # its log, snapshots, the operator, or a member it asked), so that no frame
                # can choose where this node connects.
                from_node, _, messages = decode_frame(frame, self.settings.cluster_id)
            except MalformedMessage as error:
                await self._reject(
                    context, SEND_METHOD_NAME, grpc.StatusCode.INVALID_ARGUMENT, error
                )
            try:
                identity.check_sender(from_node, "a frame")
            except UnknownPeer as error:
                await self._reject(
                    context, SEND_METHOD_NAME, grpc.StatusCode.PERMISSION_DENIED, error
                )
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
        method = SNAPSHOT_TRANSFER_METHOD_NAME
        identity = await self._identity(context, method)
        busy = self._snapshots.busy()
        if busy is not None:
            await self._reject(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED, busy)
        try:
            message, incoming = await self._snapshots.receive(
                _GrpcReceiveStream(context, self.settings.request_timeout_seconds),
                self._handler,
            )
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
        try:
            identity.check_sender(message.sender, "a snapshot")
        except UnknownPeer as error:
            await self._reject(context, method, grpc.StatusCode.PERMISSION_DENIED, error)
        if self._handler is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "transport stopped")
        delivered = self._snapshots.deliver(self._handler, message, incoming)
        await context.write(delivered.SerializeToString())

    async def _refuse_legacy_snapshot(
        self, chunks: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        await self._reject(
            context,
            LEGACY_SNAPSHOT_METHOD_NAME,
            grpc.StatusCode.FAILED_PRECONDITION,
            "this node receives snapshots over SnapshotTransfer only; the sending node runs "
            "an older raftkv and must be upgraded",
        )

    async def _serve_member(
        self, data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        identity = await self._identity(context, MEMBER_METHOD_NAME)
        try:
            request = decode_member_request(data, self.settings.cluster_id)
        except MalformedMessage as error:
            await self._reject(context, MEMBER_METHOD_NAME, grpc.StatusCode.INVALID_ARGUMENT, error)
        request = replace(request, requester=identity.node)
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
                suppressed_note(suppressed),
            )
        await context.abort(code, str(reason))


class _GrpcReceiveStream:
    """A `ReceiveStream` over the servicer side of one SnapshotTransfer call."""

    def __init__(self, context: _Context, timeout_seconds: float) -> None:
        self._context = context
        self._timeout_seconds = timeout_seconds

    async def read(self, what: str) -> bytes:
        async with asyncio.timeout(self._timeout_seconds):
            # Typed as bytes, but grpc.aio.EOF once the sender has closed its side.
            data: object = await self._context.read()
        if not isinstance(data, bytes):
            raise MalformedMessage(f"snapshot stream ended before {what}")
        return data

    async def write(self, reply: wire.SnapshotReply) -> None:
        await self._context.write(reply.SerializeToString())
