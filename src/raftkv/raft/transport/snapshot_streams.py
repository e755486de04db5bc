"""Snapshot transfer over a stream, both ends, whatever carries it: the conversation of
snapshot_transfer.py (offer, wants, chunks, acknowledgements, delivered) run over an
ordered two-way stream of messages. The gRPC transport runs it over a
`Raft.SnapshotTransfer` call, the TCP transport over a connection of its own; each gives
an `UploadStream` (sending end) or a `ReceiveStream` (receiving end) and lets
`SnapshotUploads` and `SnapshotReceiver` do the rest.

Sending (`SnapshotUploads`): each MsgSnap on its own task, never through a peer's message
queue. The data is cut and hashed on a worker thread, offered, and only the chunks the
receiver lacks are sent, each compressed, at most `max_snapshot_chunks_in_flight` ahead of
the receiver's acknowledgements. The outcome is reported with `report_snapshot(peer, ok)`;
ok means the receiver verified the whole data and delivered it. One log line per transfer
says what it cost: chunks and bytes sent against the full size.

Receiving (`SnapshotReceiver`): the offer, checked against the limits; the chunks found
in the cache of earlier transfers and, through the handler (`LocalSnapshots`), in this
node's own state; the wants; each chunk checked and kept in the cache at once (so a
transfer cut off after it resumes after it); the whole data put together and checked, by
the handler too (`ChecksSnapshots`), before it is delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import (
    LocalSnapshots,
    TransportError,
    TransportHandler,
    snapshot_checker,
    snapshot_source,
)
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats
from raftkv.raft.transport.snapshot_transfer import (
    ChunkCache,
    IncomingSnapshot,
    OutgoingSnapshot,
    TransferLimits,
    acknowledged,
)

__all__ = [
    "ReceiveStream",
    "SnapshotReceiver",
    "SnapshotUploads",
    "TransferProgress",
    "UploadStream",
]

logger = logging.getLogger("raftkv.transport")


class UploadStream(Protocol):
    """The sending end of one transfer's stream."""

    async def write(self, upload: wire.SnapshotUpload) -> None: ...

    async def read(self) -> wire.SnapshotReply:
        """The receiver's next reply. MalformedMessage if the stream ended first."""
        ...

    async def done_writing(self) -> None: ...

    async def failure(self, error: Exception) -> str | None:
        """Why the stream failed, if `error` is this stream's own failure (a lost
        connection, a refusal from the receiver); None for any other error."""
        ...

    def close(self) -> None: ...


class ReceiveStream(Protocol):
    """The receiving end of one transfer's stream."""

    async def read(self, what: str) -> bytes:
        """The next upload (`what` it should be, for the error). MalformedMessage if the
        stream ends first; TimeoutError if none comes within request_timeout_seconds."""
        ...

    async def write(self, reply: wire.SnapshotReply) -> None: ...


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


class SnapshotUploads:
    """The transfers of outgoing snapshots, one task each (`cancel` ends them).

    `open_stream(peer)` opens a new stream to the peer's current address, or raises
    TransportError (say, the peer was removed meanwhile).
    """

    def __init__(
        self,
        settings: PeerTransportSettings,
        stats: PeerTransportStats,
        open_stream: Callable[[NodeId], Awaitable[UploadStream]],
        report_snapshot: Callable[[NodeId, bool], None],
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self._log = log
        self.stats = stats
        self._open_stream = open_stream
        # Tells the node how a transfer ended (ok: the receiver delivered the snapshot).
        self._report_snapshot = report_snapshot
        # Transfers under way: each removes itself when it ends.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> tuple[asyncio.Task[None], ...]:
        """The transfers under way."""
        return tuple(self._tasks)

    def start(self, peer: NodeId, message: Message) -> None:
        """Send `message` (a MsgSnap) to `peer`."""
        task = asyncio.get_running_loop().create_task(
            self._send(peer, message), name=f"raftkv-snapshot-to-{peer}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Cancel every transfer under way (the transport is stopping): none is reported."""
        for task in self._tasks:
            task.cancel()

    async def _send(self, peer: NodeId, message: Message) -> None:
        snapshot = message.snapshot
        assert snapshot is not None  # MsgSnap always carries one (check_peer_message)
        progress = TransferProgress(
            f"snapshot {snapshot.metadata.term}/{snapshot.metadata.index} to peer {peer}",
            time.monotonic(),
        )
        ok = False
        failure: str | None = "unknown"
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
            ok, failure = await self._transfer(peer, outgoing, progress)
        except InvalidArgument as error:
            failure = f"not sent: {error}"
            self._log.error("%s %s", progress.what, failure)
        except asyncio.CancelledError:
            failure = ""  # stop(): nothing to report or log
            raise
        finally:
            if ok:
                self.stats.snapshots_sent += 1
            else:
                self.stats.snapshots_failed += 1
            self._report_snapshot(peer, ok)
            if ok:
                self._log.info("sent %s: %s", progress.what, progress.describe())
            elif failure:
                self._log.warning("%s failed: %s; %s", progress.what, failure, progress.describe())

    async def _transfer(
        self, peer: NodeId, outgoing: OutgoingSnapshot, progress: TransferProgress
    ) -> tuple[bool, str | None]:
        """(ok, why not) for one attempt over a new stream."""
        stream: UploadStream | None = None
        try:
            async with asyncio.timeout(self.settings.snapshot_timeout_seconds):
                stream = await self._open_stream(peer)
                await self.upload(stream, outgoing, progress)
            return True, None
        except TimeoutError:
            return False, "the transfer outlasted snapshot_timeout_seconds"
        except MalformedMessage as error:
            return False, f"the receiver broke the protocol: {error}"
        except TransportError as error:  # no stream could be opened
            return False, str(error)
        except Exception as error:
            reason = None if stream is None else await stream.failure(error)
            if reason is None:
                raise
            return False, reason
        finally:
            if stream is not None:
                stream.close()

    async def upload(
        self, stream: UploadStream, outgoing: OutgoingSnapshot, progress: TransferProgress
    ) -> None:
        """Offer, send what is wanted, wait until delivered. Raises what the stream
        raises, or MalformedMessage for a receiver that breaks the protocol."""
        stats = self.stats
        await stream.write(outgoing.upload())
        positions = outgoing.wanted(await stream.read())
        wanted_bytes = outgoing.wanted_bytes(positions)
        progress.wanted = len(positions)
        stats.snapshot_full_bytes += outgoing.total_bytes
        stats.snapshot_bytes_reused += outgoing.total_bytes - wanted_bytes
        stats.snapshot_chunks_reused += outgoing.chunk_count - len(positions)
        in_flight_limit = self.settings.max_snapshot_chunks_in_flight
        verified = 0
        for sent, position in enumerate(positions):
            while sent - verified >= in_flight_limit:
                verified = acknowledged(await stream.read(), verified, sent)
            upload = await asyncio.to_thread(outgoing.chunk, position)
            await stream.write(upload)
            size = len(upload.chunk.data)
            progress.sent += 1
            progress.bytes_sent += size
            stats.snapshot_chunks_sent += 1
            stats.snapshot_bytes_sent += size
        await stream.done_writing()
        while True:
            reply = await stream.read()
            if reply.WhichOneof("kind") == "delivered":
                return
            verified = acknowledged(reply, verified, len(positions))


class SnapshotReceiver:
    """The receiving end of a transport's snapshot transfers: the chunks kept from earlier
    transfers (up to snapshot_cache_bytes) and the count of transfers under way (at most
    max_incoming_snapshots, which the transport refuses past: `busy`).

    Invariant: `incoming` is the number of `receive` calls under way.
    """

    def __init__(
        self, settings: PeerTransportSettings, stats: PeerTransportStats, log: logging.Logger
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._log = log
        self._limits = TransferLimits(
            max_snapshot_bytes=settings.max_snapshot_bytes,
            max_snapshot_chunks=settings.max_snapshot_chunks,
            max_snapshot_chunk_bytes=settings.max_snapshot_chunk_bytes,
        )
        # Chunks received in earlier transfers: what makes a cut-off transfer resumable.
        self._cache = ChunkCache(settings.snapshot_cache_bytes)
        self.incoming = 0

    @property
    def cache_bytes(self) -> int:
        """Bytes of chunks kept from earlier snapshot transfers."""
        return self._cache.size_bytes

    def busy(self) -> str | None:
        """Why another transfer is refused now, or None."""
        if self.incoming < self._settings.max_incoming_snapshots:
            return None
        return f"already receiving {self.incoming} snapshots (max_incoming_snapshots)"

    async def receive(
        self, stream: ReceiveStream, handler: object
    ) -> tuple[Message, IncomingSnapshot]:
        """One transfer, within snapshot_timeout_seconds: the MsgSnap it delivers, once its
        whole data is put together and checked (off the loop), by the handler too if it
        ChecksSnapshots. Raises MalformedMessage or SnapshotTooLarge for what the sender
        got wrong or the handler refused, TimeoutError for a transfer that stalls."""
        self.incoming += 1
        try:
            async with asyncio.timeout(self._settings.snapshot_timeout_seconds):
                incoming = await self._receive_chunks(stream, snapshot_source(handler))
                message = await asyncio.to_thread(incoming.finish)
                checks = snapshot_checker(handler)
                if checks is not None:
                    try:
                        await asyncio.to_thread(checks.check_snapshot, message)
                    except MalformedMessage:
                        self._stats.snapshots_refused += 1
                        raise
        finally:
            self.incoming -= 1
        return message, incoming

    def deliver(
        self, handler: TransportHandler, message: Message, incoming: IncomingSnapshot
    ) -> wire.SnapshotReply:
        """Hand a received snapshot to `handler`, log it; the reply that says so."""
        self._stats.snapshots_received += 1
        handler.deliver([message])
        snapshot = message.snapshot
        assert snapshot is not None
        self._log.info(
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
        return wire.SnapshotReply(delivered=delivered)

    async def _receive_chunks(
        self, stream: ReceiveStream, source: LocalSnapshots | None
    ) -> IncomingSnapshot:
        """Read the offer, answer what is missing, read and check those chunks (each kept
        in the cache at once)."""
        stats = self._stats
        incoming = IncomingSnapshot(
            self._settings.cluster_id, self._limits, await stream.read("its offer")
        )
        incoming.reuse_cached(self._cache)
        if incoming.missing() and source is not None:
            local = await _local_snapshot_data(source)
            if local:
                await asyncio.to_thread(incoming.reuse_local, local)
        stats.snapshot_chunks_from_cache += incoming.from_cache
        stats.snapshot_chunks_from_local += incoming.from_local
        await stream.write(incoming.wants())
        while not incoming.complete:
            data = await stream.read(f"chunk {incoming.received + 1} of {incoming.wanted_count}")
            received_bytes = incoming.received_bytes
            digest, chunk = await asyncio.to_thread(incoming.add, data)
            # Kept at once, so that a transfer cut off after this resumes after it.
            self._cache.put(digest, chunk)
            stats.snapshot_chunks_received += 1
            stats.snapshot_bytes_received += incoming.received_bytes - received_bytes
            await stream.write(incoming.progress())
        return incoming


async def _local_snapshot_data(handler: LocalSnapshots) -> bytes | None:
    """The handler's own state as snapshot data, or None if it cannot give it. Only an
    optimization: a failure here costs a full transfer, so it is logged, not raised."""
    try:
        return await handler.local_snapshot_data()
    except Exception:
        logger.exception("no local state to reuse for an incoming snapshot")
        return None
