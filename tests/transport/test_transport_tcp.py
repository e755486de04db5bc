"""What only TcpTransport does: hostile input on its peer port (raw sockets speaking, or
failing to speak, tcp_framing.py's wire), its connection cap, and peers that accept a
connection but do not behave. Every attack on the listener ends with the node serving a
good peer, nothing from the bad connection delivered, and the rejection counted in
`stats.streams_rejected` and logged. (What every peer transport does:
test_peer_transports.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from random import Random

import pytest
from transport_helpers import (
    CLUSTER_ID,
    TEST_SETTINGS,
    GrpcFactory,
    TcpFactory,
    heartbeat,
    run,
)

from raftkv.raft.core.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport import tcp_server
from raftkv.raft.transport.base import MemberAction, MemberRequest, TransportError
from raftkv.raft.transport.codec import encode_member_request
from raftkv.raft.transport.settings import PeerTransportSettings
from raftkv.raft.transport.snapshot_transfer import OutgoingSnapshot
from raftkv.raft.transport.tcp_framing import (
    GREETING_BYTES,
    Purpose,
    Status,
    frame,
    greeting,
    read_frame,
    split_reply,
)
from raftkv.raft.transport.tcp_transport import TcpTransport
from raftkv.testing import RecordingHandler
from raftkv.testing.conformance.transport import wait_until

LOGGER = "raftkv.transport.tcp"
VICTIM = NodeId(1)
GOOD_PEER = NodeId(2)
VOTERS = ConfState(voters=frozenset({VICTIM, GOOD_PEER}))
# How long a raw connection waits for the listener to act: far below the 60 s run bound,
# far above anything loopback needs.
ANSWER_SECONDS = 5.0
# How a listener accepts a message stream: it sends the greeting back.
ACCEPTED = greeting(Purpose.MESSAGES)


def refused_on_a_message_stream(answer: bytes) -> str:
    """The reason in what a listener wrote on a message stream it ended: the greeting sent
    back, then one REFUSED reply frame."""
    assert answer.startswith(ACCEPTED), answer
    reply = answer[len(ACCEPTED) :]
    length = int.from_bytes(reply[:4], "big")
    assert len(reply) == 4 + length, answer
    status, reason = split_reply(reply[4:])
    assert status is Status.REFUSED, answer
    return reason.decode()


# -- crafting input --------------------------------------------------------------------------


async def connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything the listener writes until it closes the connection (a reset counts as
    closing: the listener may close with our bytes unread)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(ANSWER_SECONDS):
            while data := await reader.read(4096):
                received += data
    return received


async def exchange(address: str, data: bytes) -> bytes:
    """Send `data` on a new connection, then read until the listener closes it: returns
    what the listener wrote. Returning at all proves the listener dealt with the input."""
    reader, writer = await connect(address)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await read_to_end(reader)
    finally:
        writer.close()


async def read_reply(reader: asyncio.StreamReader) -> tuple[Status, bytes]:
    async with asyncio.timeout(ANSWER_SECONDS):
        return split_reply(await read_frame(reader, 1024 * 1024))


def batch(*messages: wire.Message, cluster_id: int = CLUSTER_ID, from_node: int = 9) -> bytes:
    return wire.MessageBatch(
        cluster_id=cluster_id, from_node=from_node, messages=messages
    ).SerializeToString()


def heartbeat_from(sender: int, **fields: object) -> wire.Message:
    return wire.Message(type=wire.MSG_HEARTBEAT, to=VICTIM, sender=sender, term=1, **fields)  # type: ignore[arg-type]


def on_a_message_stream(*frames: bytes) -> bytes:
    return greeting(Purpose.MESSAGES) + b"".join(frame(payload) for payload in frames)


def snapshot_message(data: bytes) -> Message:
    return Message(
        MessageType.SNAPSHOT,
        to=VICTIM,
        sender=NodeId(9),
        term=1,
        snapshot=Snapshot(SnapshotMetadata(index=5, term=1, conf_state=VOTERS), data=data),
    )


async def attacked(
    attack: Callable[[str], Awaitable[object]],
    settings: PeerTransportSettings = TEST_SETTINGS,
    handler: RecordingHandler | None = None,
) -> int:
    """Run `attack` on a node, then prove the node still serves a good peer and that
    nothing of the attack reached its handler; the node's streams_rejected."""
    expected = heartbeat(GOOD_PEER, VICTIM, index=7)
    victim_handler = handler if handler is not None else RecordingHandler()
    factory = TcpFactory(settings)
    try:
        victim = await factory.started(victim_handler)
        good = await factory.started(RecordingHandler())
        await attack(victim.address)
        good.set_peer(VICTIM, victim.address)
        good.send([expected])
        await wait_until(
            lambda: bool(victim_handler.delivered),
            "the good peer's message",
            observed=lambda: victim_handler.delivered,
        )
        assert victim_handler.delivered == [expected]
        assert victim_handler.member_requests == []
        return victim.stats.streams_rejected
    finally:
        await factory.close()


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.getMessage().startswith("rejected")
    ]


# -- the greeting ----------------------------------------------------------------------------

BAD_GREETINGS = {
    "random bytes": (Random(7).randbytes(4096), "not a raftkv TCP transport greeting"),
    "a wrong magic": (b"HTTP\x01\x01\x00\x00", "not a raftkv TCP transport greeting"),
    "an unknown version": (b"RKVT\x02\x01\x00\x00", "framing version 2, this node speaks 1"),
    "an unknown purpose": (b"RKVT\x01\x09\x00\x00", "unknown connection purpose 9"),
    "non-zero reserved bytes": (b"RKVT\x01\x01\x00\x01", "reserved greeting bytes set"),
}


@pytest.mark.parametrize(("data", "reason"), BAD_GREETINGS.values(), ids=BAD_GREETINGS.keys())
def test_a_bad_greeting_is_rejected_and_answered_by_closing(
    data: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def attack(address: str) -> None:
        # Closed without a word (there is no purpose to answer in, not even the OK byte).
        assert await exchange(address, data) == b""

    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert run(attacked(attack)) == 1
    [line] = rejections(caplog)
    assert "127.0.0.1" in line and reason in line, line


def test_a_connection_that_says_nothing_is_closed_after_the_connect_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = replace(TEST_SETTINGS, connect_timeout_seconds=0.3)

    async def attack(address: str) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await connect(address)
        opened = loop.time()
        try:
            assert await read_to_end(reader) == b""
            # Closed by the timeout, not at once (and not never: read_to_end is bounded).
            assert loop.time() - opened >= 0.25
        finally:
            writer.close()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert run(attacked(attack, settings)) == 1
    [line] = rejections(caplog)
    assert "stalled (no frame in time)" in line, line


# -- message streams -------------------------------------------------------------------------


def test_a_frame_announced_over_the_limit_is_refused_before_it_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit = TEST_SETTINGS.max_receive_message_bytes

    async def attack(address: str) -> None:
        # Only the length goes out, never the bytes it announces: a listener that waited
        # for them would never close the connection (a message stream has no timeout), and
        # read_to_end would fail the test after ANSWER_SECONDS.
        announced = (limit + 1).to_bytes(4, "big")
        answer = await exchange(address, greeting(Purpose.MESSAGES) + announced)
        assert f"a frame of {limit + 1} bytes" in refused_on_a_message_stream(answer)

    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert run(attacked(attack)) == 1
    [line] = rejections(caplog)
    assert f"a frame of {limit + 1} bytes (at most {limit} accepted)" in line, line


BAD_FRAMES = {
    "an undecodable MessageBatch": ((b"\xff\xff\xff\xff",), "MessageBatch"),
    "random bytes in a frame": ((Random(3).randbytes(1000),), ""),
    "a batch from another cluster": (
        (batch(heartbeat_from(9), cluster_id=CLUSTER_ID + 1),),
        f"cluster id {CLUSTER_ID + 1} is not this cluster's",
    ),
    "a sender that is not the frame's": (
        (batch(heartbeat_from(8), from_node=9),),
        "message from 8 in a batch from node 9",
    ),
    "a MsgSnap in a batch": (
        (
            batch(
                wire.Message(
                    type=wire.MSG_SNAPSHOT,
                    to=VICTIM,
                    sender=9,
                    term=1,
                    snapshot=wire.Snapshot(
                        metadata=wire.SnapshotMetadata(
                            index=5, term=1, conf_state=wire.ConfState(voters=[1, 2])
                        ),
                        data=b"state",
                    ),
                )
            ),
        ),
        "MsgSnap in a Send frame",
    ),
    "a good heartbeat and an unknown type in one frame": (
        (batch(heartbeat_from(9), wire.Message(type=77, sender=9)),),
        "",
    ),
    "a good frame then an undecodable one": ((batch(heartbeat_from(9)), b"\x0a\xff"), ""),
}


@pytest.mark.parametrize(("frames", "reason"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_a_bad_frame_on_a_message_stream_ends_it_and_delivers_nothing_of_it(
    frames: tuple[bytes, ...], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = RecordingHandler()

    async def attack(address: str) -> None:
        # The OK byte for the greeting, then a REFUSED reply saying why, then the close.
        answer = await exchange(address, on_a_message_stream(*frames))
        assert reason in refused_on_a_message_stream(answer)
        if len(frames) > 1:
            # A good frame before the bad one is delivered: it was good.
            assert [m.sender for m in handler.delivered] == [9]
            handler.delivered.clear()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert run(attacked(attack, handler=handler)) == 1
    [line] = rejections(caplog)
    assert "127.0.0.1" in line and "messages connection" in line and reason in line, line


# -- snapshot and member connections ---------------------------------------------------------


async def refused_snapshot_offer(address: str, offer: bytes) -> str:
    reader, writer = await connect(address)
    try:
        writer.write(greeting(Purpose.SNAPSHOT) + frame(offer))
        status, reason = await read_reply(reader)
        assert status is Status.REFUSED
        assert await read_to_end(reader) == b""  # and closed
        return reason.decode()
    finally:
        writer.close()


BAD_OFFERS = {
    "undecodable": (b"\xff\xff\xff", "undecodable SnapshotUpload"),
    "from another cluster": (
        OutgoingSnapshot.build(CLUSTER_ID + 1, snapshot_message(b"x" * 100), 4096)
        .upload()
        .SerializeToString(),
        f"cluster id {CLUSTER_ID + 1} is not this cluster's ({CLUSTER_ID})",
    ),
    "a chunk where the offer was due": (
        OutgoingSnapshot.build(CLUSTER_ID, snapshot_message(b"x" * 100), 4096)
        .chunk(0)
        .SerializeToString(),
        "snapshot stream sent chunk where offer was due",
    ),
}


@pytest.mark.parametrize(("offer", "reason"), BAD_OFFERS.values(), ids=BAD_OFFERS.keys())
def test_a_bad_snapshot_offer_gets_a_refused_reply_naming_the_problem(
    offer: bytes, reason: str
) -> None:
    async def attack(address: str) -> None:
        assert reason in await refused_snapshot_offer(address, offer)

    assert run(attacked(attack)) == 1


def test_a_snapshot_chunk_failing_its_hash_gets_a_refused_reply() -> None:
    handler = RecordingHandler()

    async def attack(address: str) -> None:
        outgoing = OutgoingSnapshot.build(CLUSTER_ID, snapshot_message(b"x" * 10_000), 4096)
        reader, writer = await connect(address)
        try:
            writer.write(greeting(Purpose.SNAPSHOT) + frame(outgoing.upload().SerializeToString()))
            status, payload = await read_reply(reader)
            assert status is Status.OK
            wants = wire.SnapshotReply.FromString(payload)
            assert list(wants.wants.positions) == [0, 2]  # the first two chunks are equal
            bad = outgoing.chunk(0)
            bad.chunk.encoding = wire.CHUNK_ENCODING_RAW
            bad.chunk.data = b"y" * 4096
            writer.write(frame(bad.SerializeToString()))
            status, reason = await read_reply(reader)
            assert status is Status.REFUSED
            assert "snapshot chunk 0 fails its SHA-256" in reason.decode()
            assert await read_to_end(reader) == b""
        finally:
            writer.close()
        assert handler.snapshots_checked == []

    assert run(attacked(attack, handler=handler)) == 1


def test_a_member_request_from_another_cluster_gets_a_refused_reply() -> None:
    request = MemberRequest(MemberAction.ADD_LEARNER, NodeId(3), "127.0.0.1:1")

    async def raw(address: str) -> None:
        payload = encode_member_request(CLUSTER_ID + 1, request).SerializeToString()
        reader, writer = await connect(address)
        try:
            writer.write(greeting(Purpose.MEMBER) + frame(payload))
            status, reason = await read_reply(reader)
            assert status is Status.REFUSED
            assert f"cluster id {CLUSTER_ID + 1} is not this cluster's" in reason.decode()
        finally:
            writer.close()

    async def through_the_transport(address: str) -> None:
        stranger = TcpTransport(replace(TEST_SETTINGS, cluster_id=CLUSTER_ID + 1))
        await stranger.start(RecordingHandler())
        try:
            with pytest.raises(TransportError, match=r"refused: cluster id 2 is not this"):
                await stranger.member_request(address, request, ANSWER_SECONDS)
        finally:
            await stranger.stop()

    async def both(address: str) -> None:
        await raw(address)
        await through_the_transport(address)

    assert run(attacked(both)) == 2


# -- the connection cap ----------------------------------------------------------------------


def test_connections_over_the_cap_are_closed_at_once_and_a_peer_still_gets_through(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cap = 8
    monkeypatch.setattr(tcp_server, "_MAX_CONNECTIONS", cap)
    # A connection closed by the greeting's timeout would take this long: "at once" is
    # far less.
    settings = replace(TEST_SETTINGS, connect_timeout_seconds=30.0)

    async def scenario() -> None:
        factory = TcpFactory(settings)
        idle: list[asyncio.StreamWriter] = []
        try:
            victim_handler = RecordingHandler()
            victim = await factory.started(victim_handler)
            good = await factory.started(RecordingHandler())
            good.set_peer(VICTIM, victim.address)
            good.send([heartbeat(GOOD_PEER, VICTIM, 1)])
            await wait_until(lambda: len(victim_handler.delivered) == 1, "the first message")
            # The good peer holds one connection; fill the rest with idle message streams
            # (each accepted with the greeting sent back: served, so counted).
            for _ in range(cap - 1):
                reader, writer = await connect(victim.address)
                idle.append(writer)
                writer.write(greeting(Purpose.MESSAGES))
                async with asyncio.timeout(ANSWER_SECONDS):
                    assert await reader.readexactly(len(ACCEPTED)) == ACCEPTED
            loop = asyncio.get_running_loop()
            for _ in range(3):
                started = loop.time()
                assert await exchange(victim.address, greeting(Purpose.MESSAGES)) == b""
                assert loop.time() - started < ANSWER_SECONDS
            assert victim.stats.streams_rejected == 3
            good.send([heartbeat(GOOD_PEER, VICTIM, 2)])
            await wait_until(lambda: len(victim_handler.delivered) == 2, "the second message")
            assert [m.index for m in victim_handler.delivered] == [1, 2]
        finally:
            for writer in idle:
                writer.close()
            await factory.close()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(scenario())
    lines = rejections(caplog)
    # Rate-limited: one line for the three (all from 127.0.0.1).
    assert len(lines) == 1 and f"over {cap} connections" in lines[0], lines


# -- peers that accept a connection and misbehave --------------------------------------------


class RawListener:
    """A listener that reads a dialler's greeting, answers `answer`, then never reads
    again (and never closes until `close`)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.greetings: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        # A small read buffer: asyncio stops reading the socket after a few KiB.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1024)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.greetings.append(await reader.readexactly(GREETING_BYTES))
        writer.write(self.answer)


def test_a_peer_that_never_reads_is_reported_unreachable_and_its_queue_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = replace(TEST_SETTINGS, max_batch_bytes=16 * 1024, request_timeout_seconds=0.5)
    appends = [
        Message(
            MessageType.APPEND,
            to=GOOD_PEER,
            sender=VICTIM,
            term=1,
            index=index,
            entries=(Entry(term=1, index=index + 1, data=b"x" * 8192),),
        )
        for index in range(100)
    ]

    async def scenario() -> None:
        listener = RawListener(ACCEPTED)
        handler = RecordingHandler()
        sender = TcpTransport(settings)
        try:
            address = await listener.start()
            await sender.start(handler)
            sender.set_peer(GOOD_PEER, address)
            # Fill the kernel's buffers at both ends, then the connection's own, until a
            # write has waited request_timeout_seconds.
            await wait_until(
                lambda: sender.stats.stream_failures >= 1,
                "the stalled connection to fail",
                timeout_seconds=30.0,
                retry=lambda: None if sender.stats.stream_failures else sender.send(appends),
            )
            assert listener.greetings == [greeting(Purpose.MESSAGES)]
            assert handler.unreachable[-1] == GOOD_PEER
            assert sender.queue_lengths() == {GOOD_PEER: 0}
            assert sender.stats.messages_dropped > 0
        finally:
            await sender.stop()
            await listener.close()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(scenario())
    failures = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert failures and "write timed out" in failures[0], failures


def test_a_listener_answering_the_greeting_with_something_else_is_reported_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        listener = RawListener(b"XXXXXXXX")
        handler = RecordingHandler()
        sender = TcpTransport(TEST_SETTINGS)
        try:
            address = await listener.start()
            await sender.start(handler)
            sender.set_peer(GOOD_PEER, address)
            await wait_until(
                lambda: GOOD_PEER in handler.unreachable,
                "a report",
                retry=lambda: sender.send([heartbeat(VICTIM, GOOD_PEER)]),
            )
            assert sender.stats.messages_sent == 0
        finally:
            await sender.stop()
            await listener.close()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(scenario())
    failures = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert failures, caplog.records
    assert "the peer answered b'XXXXXXXX' (not a raftkv node of this version)" in failures[0]


def test_members_on_different_peer_transports_say_so_in_their_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rolling upgrade from a raftkv that spoke gRPC only, or one member set otherwise:
    neither side may leave the operator guessing."""

    async def scenario() -> None:
        tcp_nodes, grpc_nodes = TcpFactory(), GrpcFactory()
        try:
            tcp_handler, grpc_handler = RecordingHandler(), RecordingHandler()
            tcp_node = await tcp_nodes.started(tcp_handler)
            grpc_node = await grpc_nodes.started(grpc_handler)
            tcp_node.set_peer(GOOD_PEER, grpc_node.address)
            grpc_node.set_peer(VICTIM, tcp_node.address)
            await wait_until(
                lambda: GOOD_PEER in tcp_handler.unreachable and VICTIM in grpc_handler.unreachable,
                "both to find the other unreachable",
                retry=lambda: (
                    tcp_node.send([heartbeat(VICTIM, GOOD_PEER)]),
                    grpc_node.send([heartbeat(GOOD_PEER, VICTIM)]),
                ),
            )
            await wait_until(
                lambda: tcp_node.stats.streams_rejected > 0, "the TCP node to refuse gRPC"
            )
            assert tcp_handler.delivered == grpc_handler.delivered == []
        finally:
            await tcp_nodes.close()
            await grpc_nodes.close()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    # The TCP node, dialled by gRPC, and dialling gRPC:
    assert any("a gRPC client on the TCP peer port: every member" in line for line in lines)
    assert any("the peer speaks gRPC (HTTP/2): every member" in line for line in lines), lines


def test_a_sender_logs_why_its_peer_refused_what_it_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A member of another cluster: the receiver refuses the first frame, saying why.
    async def scenario() -> None:
        factory = TcpFactory()
        strangers = TcpFactory(replace(TEST_SETTINGS, cluster_id=CLUSTER_ID + 1))
        try:
            receiver_handler, stranger_handler = RecordingHandler(), RecordingHandler()
            receiver = await factory.started(receiver_handler)
            stranger = await strangers.started(stranger_handler)
            stranger.set_peer(VICTIM, receiver.address)
            await wait_until(
                lambda: VICTIM in stranger_handler.unreachable,
                "the stranger to learn it was refused",
                retry=lambda: stranger.send([heartbeat(GOOD_PEER, VICTIM)]),
            )
            assert receiver_handler.delivered == []
        finally:
            await strangers.close()
            await factory.close()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(scenario())
    failures = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    expected = f"the peer refused what we sent: cluster id {CLUSTER_ID + 1} is not this cluster"
    assert any(expected in failure for failure in failures), failures


def test_stopping_with_peer_connections_open_ends_them_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # stop() cancels the task serving each open connection: asyncio's stream server logs
    # a handler that ends cancelled as an error, unless the server swallows it.
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        factory = TcpFactory()
        try:
            sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
            sender = await factory.started(sender_handler)
            receiver = await factory.started(receiver_handler)
            sender.set_peer(GOOD_PEER, receiver.address)
            sender.send([heartbeat(VICTIM, GOOD_PEER)])
            await wait_until(lambda: bool(receiver_handler.delivered), "the stream to be open")
            await receiver.stop()
            await wait_until(lambda: bool(sender_handler.unreachable), "the sender to notice")
        finally:
            await factory.close()

    run(scenario())
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    failures = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert failures and "the peer closed the connection" in failures[0], failures
