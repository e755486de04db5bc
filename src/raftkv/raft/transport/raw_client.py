"""RawPeerClient: a node's gRPC methods called with whatever the caller built — for tests
and fuzzing (`raftkv.testing.peer_fuzz`), never for nodes.

A node's GrpcTransport sends only what the core produced, batched, on long-lived streams.
This client sends any message (malformed ones included: anything that encodes), each frame
on its own Send call, so that a frame the receiver refuses ends that call only; and
snapshots over SnapshotTransfer, whole. It reports how the receiver ended each call.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio

from raftkv.raft.core.types import Message
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import TransportError
from raftkv.raft.transport.codec import encode_batch
from raftkv.raft.transport.grpc_service import SEND_METHOD, SNAPSHOT_TRANSFER_METHOD
from raftkv.raft.transport.snapshot_transfer import OutgoingSnapshot

__all__ = ["CallRefused", "RawPeerClient"]


class CallRefused(TransportError):
    """The receiver ended the call with INVALID_ARGUMENT: what it answers to input it
    refuses (a malformed frame, an unusable snapshot)."""


class RawPeerClient:
    """Calls to the nodes at the addresses given, one channel per address; `close` ends
    them. `timeout_seconds` bounds each call."""

    def __init__(self, cluster_id: int, *, timeout_seconds: float = 10.0) -> None:
        self.cluster_id = cluster_id
        self.timeout_seconds = timeout_seconds
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def send(self, address: str, messages: Sequence[Message]) -> None:
        """One Send call carrying one frame of `messages` (one sender, no MsgSnap). Raises
        CallRefused, or TransportError if the call ended any other way."""
        frame = encode_batch(self.cluster_id, messages).SerializeToString()
        # No serializers: the bytes go out as given.
        call: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = self._channel(address).stream_unary(
            SEND_METHOD
        )
        try:
            await call(iter([frame]), timeout=self.timeout_seconds)
        except grpc.aio.AioRpcError as error:
            raise _failure("Send", error) from None

    async def send_snapshot(
        self, address: str, message: Message, *, chunk_bytes: int = 4096
    ) -> None:
        """One SnapshotTransfer of the MsgSnap `message`: the offer, the chunks the
        receiver asks for, until it says delivered. Raises CallRefused, or TransportError
        if the call ended any other way."""
        outgoing = OutgoingSnapshot.build(self.cluster_id, message, chunk_bytes)
        method: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = self._channel(
            address
        ).stream_stream(SNAPSHOT_TRANSFER_METHOD)
        call = method(timeout=self.timeout_seconds)
        try:
            await call.write(outgoing.upload().SerializeToString())
            # Typed bytes, but grpc.aio.EOF once the receiver ended the call.
            wants: object = await call.read()
            if isinstance(wants, bytes):
                for position in outgoing.wanted(wire.SnapshotReply.FromString(wants)):
                    await call.write(outgoing.chunk(position).SerializeToString())
                await call.done_writing()
            while True:
                reply: object = await call.read()
                if not isinstance(reply, bytes):
                    break
                if wire.SnapshotReply.FromString(reply).WhichOneof("kind") == "delivered":
                    break
        except grpc.aio.AioRpcError as error:
            raise _failure("SnapshotTransfer", error) from None
        finally:
            call.cancel()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return channel


def _failure(method: str, error: grpc.aio.AioRpcError) -> TransportError:
    description = f"{method} ended {error.code().name}: {error.details()}"
    if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
        return CallRefused(description)
    return TransportError(description)
