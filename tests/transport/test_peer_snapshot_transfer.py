"""Snapshot transfers over every peer transport raftkv ships (gRPC, TCP): a transfer cut
off by a dropped connection resumes with only the chunks that had not arrived; a receiver
that holds most of the state (its handler is LocalSnapshots) gets only what changed. (The
conversation itself: test_snapshot_transfer.py; gRPC's flow control and mixed versions:
test_snapshot_transfer_grpc.py.)"""

from __future__ import annotations

import asyncio
import logging
from random import Random

import pytest
from transport_helpers import PEER_FACTORIES, PEER_LOGGERS, GrpcFactory, run

from raftkv.raft.core.types import (
    ConfState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.snapshot_chunks import encode_container
from raftkv.raft.transport.grpc_transport import GrpcTransport
from raftkv.raft.transport.tcp_transport import TcpTransport
from raftkv.testing import RecordingHandler
from raftkv.testing.conformance.transport import wait_until

RECEIVER = NodeId(2)
VOTERS = ConfState(voters=frozenset({NodeId(1), RECEIVER}))


@pytest.fixture(params=sorted(PEER_FACTORIES))
def factory_class(request: pytest.FixtureRequest) -> type[GrpcFactory]:
    """Each peer transport raftkv ships."""
    return PEER_FACTORIES[request.param]


@pytest.fixture
def logger_name(factory_class: type[GrpcFactory]) -> str:
    """The logger of the transport under test."""
    return PEER_LOGGERS[factory_class.transport_class]


def snapshot_message(data: bytes) -> Message:
    return Message(
        MessageType.SNAPSHOT,
        to=RECEIVER,
        sender=NodeId(1),
        term=4,
        snapshot=Snapshot(SnapshotMetadata(index=100, term=4, conf_state=VOTERS), data=data),
    )


def log_lines(caplog: pytest.LogCaptureFixture, logger_name: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger_name]


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
    sender: GrpcTransport | TcpTransport, handler: RecordingHandler, message: Message, ok: bool
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
    factory_class: type[GrpcFactory],
    caplog: pytest.LogCaptureFixture,
    logger_name: str,
) -> None:
    data = Random(1).randbytes(50 * 4096)  # incompressible: 50 chunks of 4 KiB, sent raw
    message = snapshot_message(data)

    async def scenario() -> None:
        factory = factory_class()
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

    caplog.set_level(logging.INFO, logger=logger_name)
    run(scenario())
    sent = [line for line in log_lines(caplog, logger_name) if line.startswith("sent snapshot")]
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
    factory_class: type[GrpcFactory],
    caplog: pytest.LogCaptureFixture,
    logger_name: str,
) -> None:
    follower, leader = states()
    message = snapshot_message(leader)

    async def scenario() -> None:
        factory = factory_class()
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

    caplog.set_level(logging.INFO, logger=logger_name)
    run(scenario())
    lines = [line for line in log_lines(caplog, logger_name) if line.startswith("sent snapshot")]
    assert "5 of 5 wanted chunks sent (38 of 43 held by the peer)" in lines[0], lines


def test_a_receiver_without_local_state_receives_everything(
    factory_class: type[GrpcFactory],
) -> None:
    _, leader = states()
    message = snapshot_message(leader)

    async def scenario() -> None:
        factory = factory_class()
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
    factory_class: type[GrpcFactory],
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(RecordingHandler):
        async def local_snapshot_data(self) -> bytes | None:
            raise OSError("disk gone")

    _, leader = states()
    message = snapshot_message(leader)

    async def scenario() -> None:
        factory = factory_class()
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
