"""Snapshot transfers over gRPC: a transfer cut off by a dropped connection resumes with
only the chunks that had not arrived; a receiver that holds most of the state (its handler
is LocalSnapshots) gets only what changed; the sender keeps a bounded number of chunks in
flight; mixed versions fail with a clear error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from random import Random

import grpc
import grpc.aio
import pytest
from transport_helpers import CLUSTER_ID, TEST_SETTINGS, GrpcFactory, run

from raftkv.raft.core.types import (
    ConfState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.snapshot_chunks import encode_container
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.grpc_transport import GrpcTransport
from raftkv.raft.transport.settings import PeerTransportStats
from raftkv.raft.transport.snapshot_streams import SnapshotUploads, TransferProgress, UploadStream
from raftkv.raft.transport.snapshot_transfer import OutgoingSnapshot
from raftkv.testing import RecordingHandler
from raftkv.testing.conformance.transport import wait_until

LOGGER = "raftkv.transport.grpc"
RECEIVER = NodeId(2)
VOTERS = ConfState(voters=frozenset({NodeId(1), RECEIVER}))


def snapshot_message(data: bytes) -> Message:
    return Message(
        MessageType.SNAPSHOT,
        to=RECEIVER,
        sender=NodeId(1),
        term=4,
        snapshot=Snapshot(SnapshotMetadata(index=100, term=4, conf_state=VOTERS), data=data),
    )


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


class CuttingProxy:
    """A TCP proxy on loopback that, while armed, drops every connection (abortively, as
    a failed link does) once `cut_after_bytes` have gone from client to server."""

    def __init__(self, upstream: str, cut_after_bytes: int) -> None:
        self.upstream = upstream
        self.cut_after_bytes = cut_after_bytes
        self.armed = True
        self.cuts = 0
        self.address = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        host, port = self.upstream.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        cut_after = self.cut_after_bytes if self.armed else None

        async def pump(
            source: asyncio.StreamReader, target: asyncio.StreamWriter, counted: bool
        ) -> None:
            forwarded = 0
            while data := await source.read(16 * 1024):
                forwarded += len(data)
                if counted and cut_after is not None and forwarded > cut_after:
                    self.cuts += 1
                    writer.transport.abort()
                    upstream_writer.transport.abort()
                    return
                target.write(data)
                await target.drain()
            target.close()

        try:
            await asyncio.gather(
                pump(reader, upstream_writer, counted=True),
                pump(upstream_reader, writer, counted=False),
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            upstream_writer.transport.abort()
            self._tasks.discard(task)


async def send_until_reported(
    sender: GrpcTransport, handler: RecordingHandler, message: Message, ok: bool
) -> None:
    """Send `message` until a report with `ok` comes back (as Raft retries a snapshot: a
    channel still reconnecting after a dropped connection fails at once)."""
    while True:
        handler.snapshot_reports.clear()
        sender.send([message])
        await wait_until(lambda: bool(handler.snapshot_reports), "a snapshot report")
        if handler.snapshot_reports == [(RECEIVER, ok)]:
            return
        await asyncio.sleep(0.05)


def test_a_transfer_cut_off_by_a_dropped_connection_resumes_with_only_the_missing_chunks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = Random(1).randbytes(50 * 4096)  # incompressible: 50 chunks of 4 KiB, sent raw
    message = snapshot_message(data)

    async def scenario() -> None:
        factory = GrpcFactory()
        sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
        sender = await factory.started(sender_handler)
        receiver = await factory.started(receiver_handler)
        proxy = CuttingProxy(receiver.address, cut_after_bytes=len(data) // 2)
        try:
            sender.set_peer(RECEIVER, await proxy.start())
            sender.send([message])
            await wait_until(lambda: bool(sender_handler.snapshot_reports), "a snapshot report")
            assert sender_handler.snapshot_reports == [(RECEIVER, False)]
            assert proxy.cuts == 1
            await wait_until(
                lambda: receiver.incoming_snapshots() == 0, "the receiver to drop the transfer"
            )
            assert receiver_handler.delivered == []
            before = receiver.stats.snapshot_chunks_received
            assert 0 < before < 50, before
            sent_before = sender.stats.snapshot_chunks_sent

            proxy.armed = False
            await send_until_reported(sender, sender_handler, message, ok=True)
            assert receiver_handler.delivered == [message]
            resent = sender.stats.snapshot_chunks_sent - sent_before
            assert resent == 50 - before
            assert receiver.stats.snapshot_chunks_from_cache == before
            assert sender.stats.snapshot_chunks_reused == before
        finally:
            await factory.close()
            await proxy.close()

    caplog.set_level(logging.INFO, logger=LOGGER)
    run(scenario())
    sent = [line for line in log_lines(caplog) if line.startswith("sent snapshot")]
    assert len(sent) == 1 and f"for {len(data)} bytes of data" in sent[0], sent


class StatefulHandler(RecordingHandler):
    """A receiver (LocalSnapshots) whose own state is `state`, snapshot data in the chunked
    format; counts how often it was asked for it."""

    def __init__(self, state: bytes) -> None:
        super().__init__()
        self.state = state
        self.asked = 0

    async def local_snapshot_data(self) -> bytes | None:
        self.asked += 1
        return self.state


def states(seed: int = 2) -> tuple[bytes, bytes]:
    """(the follower's state, the leader's snapshot data): 40 chunks, 3 of them changed."""
    rng = Random(seed)
    chunks = [rng.randbytes(rng.randrange(2000, 4000)) for _ in range(40)]
    follower = encode_container(chunks, prefix=b"STATE")
    chunks[5], chunks[20] = b"changed" * 300, b"rewritten" * 300
    chunks.append(b"appended" * 300)
    leader = b"an envelope" + encode_container(chunks, prefix=b"STATE")
    return follower, leader


def test_a_receiver_that_holds_most_of_the_state_receives_only_what_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    follower, leader = states()
    message = snapshot_message(leader)

    async def scenario() -> None:
        factory = GrpcFactory()
        try:
            sender_handler = RecordingHandler()
            receiver_handler = StatefulHandler(state=follower)
            sender = await factory.started(sender_handler)
            receiver = await factory.started(receiver_handler)
            sender.set_peer(RECEIVER, receiver.address)
            await send_until_reported(sender, sender_handler, message, ok=True)
            assert receiver_handler.delivered == [message]
            assert receiver_handler.asked == 1
            stats = sender.stats
            # 41 chunks, 38 unchanged; the envelope and the manifest are new too.
            assert stats.snapshot_chunks_reused == 38
            assert stats.snapshot_chunks_sent == 5
            assert stats.snapshot_full_bytes == len(leader)
            assert stats.snapshot_bytes_sent < len(leader) // 10
            assert stats.snapshot_bytes_reused > len(leader) * 0.9
            assert receiver.stats.snapshot_chunks_from_local == 38
            assert receiver.stats.snapshot_bytes_received == stats.snapshot_bytes_sent

            # The same snapshot again: the chunks received are in the cache now, the rest
            # in the receiver's state (not cached: that would only duplicate it). Nothing
            # is sent.
            sent = stats.snapshot_chunks_sent
            await send_until_reported(sender, sender_handler, message, ok=True)
            assert receiver.stats.snapshot_chunks_from_cache == 5
            assert stats.snapshot_chunks_sent == sent
        finally:
            await factory.close()

    caplog.set_level(logging.INFO, logger=LOGGER)
    run(scenario())
    lines = [line for line in log_lines(caplog) if line.startswith("sent snapshot")]
    assert "5 of 5 wanted chunks sent (38 of 43 held by the peer)" in lines[0], lines


def test_a_receiver_without_local_state_receives_everything() -> None:
    _, leader = states()
    message = snapshot_message(leader)

    async def scenario() -> None:
        factory = GrpcFactory()
        try:
            sender_handler = RecordingHandler()
            sender = await factory.started(sender_handler)
            receiver = await factory.started(RecordingHandler())
            sender.set_peer(RECEIVER, receiver.address)
            await send_until_reported(sender, sender_handler, message, ok=True)
            assert sender.stats.snapshot_chunks_reused == 0
            assert sender.stats.snapshot_chunks_sent == 43
        finally:
            await factory.close()

    run(scenario())


def test_a_failing_local_state_costs_a_full_transfer_not_the_snapshot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(RecordingHandler):
        async def local_snapshot_data(self) -> bytes | None:
            raise OSError("disk gone")

    _, leader = states()
    message = snapshot_message(leader)

    async def scenario() -> None:
        factory = GrpcFactory()
        try:
            sender_handler, receiver_handler = RecordingHandler(), Broken()
            sender = await factory.started(sender_handler)
            receiver = await factory.started(receiver_handler)
            sender.set_peer(RECEIVER, receiver.address)
            await send_until_reported(sender, sender_handler, message, ok=True)
            assert receiver_handler.delivered == [message]
            assert sender.stats.snapshot_chunks_sent == 43
        finally:
            await factory.close()

    run(scenario())
    assert any("no local state to reuse" in record.getMessage() for record in caplog.records)


# -- flow control ------------------------------------------------------------------------------


class LazyReceiverCall:
    """A SnapshotTransfer call whose receiver acknowledges a chunk only when asked to read:
    measures how far ahead of the acknowledgements the sender writes."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.written = 0
        self.acknowledged = 0
        self.most_unacknowledged = 0
        self.wants_sent = False
        self.closed = False

    async def write(self, upload: wire.SnapshotUpload) -> None:
        if upload.WhichOneof("kind") == "chunk":
            self.written += 1
            self.most_unacknowledged = max(
                self.most_unacknowledged, self.written - self.acknowledged
            )

    async def read(self) -> wire.SnapshotReply:
        if not self.wants_sent:
            self.wants_sent = True
            return wire.SnapshotReply(wants=wire.SnapshotWants(positions=range(self.chunks)))
        if self.acknowledged < self.written:
            self.acknowledged += 1
            return wire.SnapshotReply(chunks_received=self.acknowledged)
        assert self.closed and self.written == self.chunks
        return wire.SnapshotReply(delivered=wire.SnapshotDelivered())

    async def done_writing(self) -> None:
        self.closed = True


async def no_stream(peer: NodeId) -> UploadStream:
    raise AssertionError("upload() is given its stream")


def test_the_sender_keeps_at_most_the_in_flight_limit_unacknowledged() -> None:
    async def scenario() -> None:
        settings = replace(TEST_SETTINGS, max_snapshot_chunks_in_flight=3)
        sender = SnapshotUploads(
            settings, PeerTransportStats(), no_stream, lambda peer, ok: None, logging.getLogger()
        )
        outgoing = OutgoingSnapshot.build(
            CLUSTER_ID, snapshot_message(Random(4).randbytes(10 * 4096)), 4096
        )
        call = LazyReceiverCall(outgoing.chunk_count)
        await sender.upload(call, outgoing, TransferProgress("test", 0.0))  # type: ignore[arg-type]
        assert (call.written, call.most_unacknowledged) == (10, 3)

    run(scenario())


# -- mixed versions ---------------------------------------------------------------------------


def test_an_older_sender_is_refused_with_a_clear_error() -> None:
    async def scenario() -> None:
        factory = GrpcFactory()
        try:
            receiver = await factory.started(RecordingHandler())
            async with grpc.aio.insecure_channel(receiver.address) as channel:
                call = channel.stream_unary("/raftkv.raft.v1.Raft/SendSnapshot")
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call(iter([b"\x0a\x00"]))
            assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "older raftkv" in str(raised.value.details())
        finally:
            await factory.close()

    run(scenario())


def test_a_peer_that_does_not_serve_transfers_fails_them_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        factory = GrpcFactory()
        older = grpc.aio.server()  # serves no method at all: UNIMPLEMENTED
        port = older.add_insecure_port("127.0.0.1:0")
        await older.start()
        try:
            sender_handler = RecordingHandler()
            sender = await factory.started(sender_handler)
            sender.set_peer(RECEIVER, f"127.0.0.1:{port}")
            sender.send([snapshot_message(b"x" * 100)])
            await wait_until(lambda: bool(sender_handler.snapshot_reports), "a snapshot report")
            assert sender_handler.snapshot_reports == [(RECEIVER, False)]
        finally:
            await factory.close()
            with contextlib.suppress(Exception):
                await older.stop(None)

    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(scenario())
    failures = [line for line in log_lines(caplog) if " failed: " in line]
    assert any("older raftkv and must be upgraded" in line for line in failures), failures
