"""Outgoing snapshots: each MsgSnap goes out on its own `Raft.SnapshotTransfer` stream,
never through a peer's queue (snapshot_transfer.py has the protocol).

A transfer offers the data's chunks by SHA-256, then sends only the chunks the receiver
lacks (it remembers chunks of earlier transfers, so a transfer cut off by a dropped
connection resumes, and looks in its own state when its handler is `LocalSnapshots`), each
compressed, at most `max_snapshot_chunks_in_flight` ahead of the receiver's
acknowledgements. The outcome is reported with `report_snapshot(peer, ok)`; ok means the
receiver verified the whole data and delivered it. One log line per transfer says what it
cost: chunks and bytes sent against the full size.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.grpc_sender import PeerSender
from raftkv.raft.transport.grpc_service import SNAPSHOT_TRANSFER_METHOD
from raftkv.raft.transport.grpc_settings import GrpcTransportSettings, GrpcTransportStats
from raftkv.raft.transport.snapshot_transfer import OutgoingSnapshot, acknowledged

__all__ = ["SnapshotSender", "TransferProgress"]

logger = logging.getLogger("raftkv.transport.grpc")

_TransferCall = grpc.aio.StreamStreamCall[wire.SnapshotUpload, wire.SnapshotReply]


@dataclass(slots=True)
class TransferProgress:
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


class SnapshotSender:
    """The transfers of outgoing snapshots, one task each (`stop` cancels them)."""

    def __init__(
        self,
        settings: GrpcTransportSettings,
        stats: GrpcTransportStats,
        report_snapshot: Callable[[NodeId, bool], None],
    ) -> None:
        self.settings = settings
        self.stats = stats
        # Tells the node how a transfer ended (ok: the receiver delivered the snapshot).
        self._report_snapshot = report_snapshot
        # Transfers under way: each removes itself when it ends.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> tuple[asyncio.Task[None], ...]:
        """The transfers under way."""
        return tuple(self._tasks)

    def start(self, sender: PeerSender, message: Message) -> None:
        """Send `message` (a MsgSnap) to `sender`'s peer, on its channel."""
        task = asyncio.get_running_loop().create_task(
            self._send_snapshot(sender, message), name=f"raftkv-snapshot-to-{sender.peer}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Cancel every transfer under way (the transport is stopping): none is reported."""
        for task in self._tasks:
            task.cancel()

    async def _send_snapshot(self, sender: PeerSender, message: Message) -> None:
        snapshot = message.snapshot
        assert snapshot is not None  # MsgSnap always carries one (check_peer_message)
        progress = TransferProgress(
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
                await self.transfer(call, outgoing, progress)
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

    async def transfer(
        self, call: _TransferCall, outgoing: OutgoingSnapshot, progress: TransferProgress
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
