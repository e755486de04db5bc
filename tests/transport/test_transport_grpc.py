"""What only GrpcTransport does: hostile input on its peer port (raw gRPC calls), its
method paths, the status its streams end with when it stops. (What every peer transport
does: test_peer_transports.py and test_peer_snapshot_transfer.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from random import Random

import grpc
import grpc.aio
import pytest
from transport_helpers import CLUSTER_ID, GrpcFactory, heartbeat, run

from raftkv.raft.core.types import (
    ConfState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport import raft_pb2_grpc
from raftkv.raft.transport.grpc_transport import (
    SEND_METHOD,
    SNAPSHOT_TRANSFER_METHOD,
)
from raftkv.raft.transport.snapshot_transfer import OutgoingSnapshot
from raftkv.testing import RecordingHandler
from raftkv.testing.conformance.transport import wait_until

VICTIM = NodeId(1)
GOOD_PEER = NodeId(2)
LOGGER = "raftkv.transport.grpc"
VOTERS = ConfState(voters=frozenset({NodeId(1), NodeId(2)}))

# -- hostile input on the peer port --------------------------------------------------------

Attack = Callable[[str], Awaitable[None]]


async def random_bytes_on_a_raw_socket(address: str) -> None:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(Random(7).randbytes(4096))
    # The server answers garbage by closing the connection; reading to the end proves it
    # has dealt with it. (It may reset rather than close: both are fine.)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def expect_rejection(call: grpc.aio.StreamUnaryCall[bytes, bytes]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value


def raw_frames(*frames: bytes) -> Attack:
    """A valid gRPC call on Raft/Send whose frames are `frames`, byte for byte."""

    async def attack(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            # No serializer: the bytes go out exactly as given.
            send = channel.stream_unary(SEND_METHOD)
            await expect_rejection(send(iter(frames)))

    return attack


def batch(*messages: wire.Message, cluster_id: int = CLUSTER_ID, from_node: int = 9) -> bytes:
    return wire.MessageBatch(
        cluster_id=cluster_id, from_node=from_node, messages=messages
    ).SerializeToString()


def heartbeat_from(sender: int, **fields: object) -> wire.Message:
    return wire.Message(type=wire.MSG_HEARTBEAT, to=VICTIM, sender=sender, term=1, **fields)  # type: ignore[arg-type]


async def a_batch_from_another_cluster(address: str) -> None:
    # Through the generated stub, as another raftkv build would send it.
    async with grpc.aio.insecure_channel(address) as channel:
        stub = raft_pb2_grpc.RaftStub(channel)
        frame = wire.MessageBatch(
            cluster_id=CLUSTER_ID + 1, from_node=9, messages=[heartbeat_from(9)]
        )
        await expect_rejection(stub.Send(iter([frame])))


async def a_snapshot_chunk_that_fails_its_hash(address: str) -> None:
    message = Message(
        MessageType.SNAPSHOT,
        to=VICTIM,
        sender=NodeId(9),
        term=1,
        snapshot=Snapshot(SnapshotMetadata(index=5, term=1, conf_state=VOTERS), data=b"x" * 10_000),
    )
    outgoing = OutgoingSnapshot.build(CLUSTER_ID, message, 4096)
    async with grpc.aio.insecure_channel(address) as channel:
        # No serializers: the bytes go out exactly as given.
        call = channel.stream_stream(SNAPSHOT_TRANSFER_METHOD)()
        await call.write(outgoing.upload().SerializeToString())
        wants = wire.SnapshotReply.FromString(await call.read())
        assert list(wants.wants.positions) == [0, 2]  # the first two chunks are equal
        bad = outgoing.chunk(0)
        bad.chunk.encoding = wire.CHUNK_ENCODING_RAW
        bad.chunk.data = b"y" * 4096
        await call.write(bad.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value
        assert "chunk 0 fails its SHA-256" in str(raised.value.details())


ATTACKS: dict[str, Attack] = {
    "random bytes on a raw socket": random_bytes_on_a_raw_socket,
    "undecodable bytes in a Send frame": raw_frames(b"\xff\xff\xff\xff"),
    "random bytes in a Send frame": raw_frames(Random(3).randbytes(1000)),
    "a good frame then an undecodable one": raw_frames(
        batch(heartbeat_from(9), cluster_id=CLUSTER_ID + 7), b"\x0a\xff"
    ),
    "a batch from another cluster": a_batch_from_another_cluster,
    "an unknown message type": raw_frames(batch(wire.Message(type=77, sender=9))),
    "an unknown entry kind": raw_frames(batch(heartbeat_from(9, entries=[wire.Entry(kind=5)]))),
    "a sender that is not the frame's": raw_frames(batch(heartbeat_from(8), from_node=9)),
    "entries out of order": raw_frames(
        batch(
            wire.Message(
                type=wire.MSG_APPEND,
                sender=9,
                term=2,
                index=3,
                entries=[wire.Entry(term=2, index=5)],
            )
        )
    ),
    "a snapshot chunk that fails its SHA-256": a_snapshot_chunk_that_fails_its_hash,
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_hostile_input_is_refused_and_the_node_keeps_serving(
    attack: Attack, caplog: pytest.LogCaptureFixture
) -> None:
    expected = heartbeat(GOOD_PEER, VICTIM, index=7)

    async def scenario() -> None:
        factory = GrpcFactory()
        try:
            victim_handler = RecordingHandler()
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
            # Nothing from the bad input reached the handler (it came first, if at all).
            assert victim_handler.delivered == [expected]
        finally:
            await factory.close()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(scenario())
    rejections = [record for record in caplog.records if "rejected" in record.getMessage()]
    if attack is not random_bytes_on_a_raw_socket:  # gRPC itself turns that one away
        assert len(rejections) == 1, caplog.records
        assert "127.0.0.1" in rejections[0].getMessage()


# -- what only gRPC does ------------------------------------------------------------------


def test_method_paths_match_the_generated_stub() -> None:
    # The server registers raw-bytes handlers by name; the stub must call the same paths.
    service = wire.DESCRIPTOR.services_by_name["Raft"]
    assert f"/{service.full_name}/Send" == SEND_METHOD
    assert f"/{service.full_name}/SnapshotTransfer" == SNAPSHOT_TRANSFER_METHOD
    assert sorted(service.methods_by_name) == ["Member", "Send", "SnapshotTransfer"]
    assert hasattr(raft_pb2_grpc.RaftStub, "__init__")


def test_stopping_with_peer_streams_open_ends_them_with_a_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # gRPC logs an "unhandled" CancelledError traceback for each call still running when
    # its server stops; a peer's Send stream always is. stop() ends them first.
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        factory = GrpcFactory()
        try:
            sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
            sender = await factory.started(sender_handler)
            receiver = await factory.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            sender.send([heartbeat(1, 2)])
            await wait_until(lambda: bool(receiver_handler.delivered), "the stream to be open")
            await receiver.stop()
            await wait_until(lambda: bool(sender_handler.unreachable), "the sender to notice")
        finally:
            await factory.close()

    run(scenario())
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert any("the node is stopping" in record.getMessage() for record in caplog.records)
