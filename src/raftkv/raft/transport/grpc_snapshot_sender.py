"""Outgoing snapshots over gRPC: each transfer on its own `Raft.SnapshotTransfer` stream,
on the peer's channel (snapshot_streams.py runs the transfer, snapshot_transfer.py has
the protocol)."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio

from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.grpc_service import SNAPSHOT_TRANSFER_METHOD

__all__ = ["GrpcUploadStream"]

_TransferCall = grpc.aio.StreamStreamCall[wire.SnapshotUpload, wire.SnapshotReply]
# The details gRPC gives a call whose write failed inside its core.
_CORE_WRITE_FAILED = "Internal error from Core"


class GrpcUploadStream:
    """An `UploadStream` over one SnapshotTransfer call on `channel`."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        method: grpc.aio.StreamStreamMultiCallable[wire.SnapshotUpload, wire.SnapshotReply]
        method = channel.stream_stream(
            SNAPSHOT_TRANSFER_METHOD,
            request_serializer=wire.SnapshotUpload.SerializeToString,
            response_deserializer=wire.SnapshotReply.FromString,
        )
        self._call: _TransferCall = method()

    async def write(self, upload: wire.SnapshotUpload) -> None:
        await self._call.write(upload)

    async def read(self) -> wire.SnapshotReply:
        reply = await self._call.read()
        if reply is grpc.aio.EOF:
            raise MalformedMessage(
                "the receiver ended the stream before the snapshot was delivered"
            )
        assert isinstance(reply, wire.SnapshotReply)
        return reply

    async def done_writing(self) -> None:
        await self._call.done_writing()

    async def failure(self, error: Exception) -> str | None:
        if not isinstance(error, grpc.aio.AioRpcError | asyncio.InvalidStateError):
            return None
        code = await self._call.code()
        details = await self._call.details()
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return (
                f"the peer does not serve SnapshotTransfer: it runs an older raftkv and must "
                f"be upgraded ({details})"
            )
        if code is grpc.StatusCode.INTERNAL and details == _CORE_WRITE_FAILED:
            # gRPC's own status for a write the stream refused: a peer that answered
            # UNIMPLEMENTED while the first chunk was on its way ends up here too, its
            # status lost (a race inside gRPC, seen on a loaded machine).
            return (
                f"the stream broke as the transfer began ({details}): the peer may run an "
                "older raftkv without SnapshotTransfer (it must be upgraded), or the "
                "connection failed"
            )
        return f"{code.name}: {details}" if details else code.name

    def close(self) -> None:
        self._call.cancel()
