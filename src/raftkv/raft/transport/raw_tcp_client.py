"""RawTcpPeerClient: a node's TCP peer port spoken to with whatever the caller built — for
tests and fuzzing (`raftkv.testing.peer_fuzz`), never for nodes. The TCP counterpart of
`RawPeerClient` (raw_client.py), with the same methods and errors.

A node's TcpTransport sends only what the core produced, batched, on long-lived
connections. This client sends any message (malformed ones included: anything that
encodes), each frame on a connection of its own, so that a frame the receiver refuses ends
that connection only, and snapshots whole, each on its own SNAPSHOT connection. Having
sent a frame it ends its side of the connection and reads to the end: a receiver that
accepted the frame closes without a word, one that refused it answers with a REFUSED reply
first (tcp_framing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from google.protobuf.message import DecodeError

from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.core.types import Message
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import TransportError
from raftkv.raft.transport.codec import encode_batch
from raftkv.raft.transport.raw_client import CallRefused
from raftkv.raft.transport.settings import split_address
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

__all__ = ["RawTcpPeerClient"]

# The longest reply frame read (a snapshot reply, or a refusal's reason).
_MAX_REPLY_BYTES = 1024 * 1024


class RawTcpPeerClient:
    """Connections to the nodes at the addresses given, one per frame or snapshot.
    `timeout_seconds` bounds each."""

    def __init__(self, cluster_id: int, *, timeout_seconds: float = 10.0) -> None:
        self.cluster_id = cluster_id
        self.timeout_seconds = timeout_seconds

    async def close(self) -> None:
        """Nothing to close: every connection ends with its call."""

    async def send(self, address: str, messages: Sequence[Message]) -> None:
        """One connection carrying one frame of `messages` (one sender, no MsgSnap).
        Raises CallRefused, or TransportError if the connection ended any other way."""
        payload = encode_batch(self.cluster_id, messages).SerializeToString()
        async with self._connection(address, Purpose.MESSAGES) as (reader, writer):
            accepted = await reader.readexactly(GREETING_BYTES)
            if accepted != greeting(Purpose.MESSAGES):
                raise TransportError(f"{address} did not accept a message stream")
            writer.write(frame(payload))
            writer.write_eof()
            # The receiver closes without a word once it has taken the frame.
            with contextlib.suppress(asyncio.IncompleteReadError):
                status, reason = split_reply(await read_frame(reader, _MAX_REPLY_BYTES))
                if status is Status.REFUSED:
                    raise CallRefused(f"refused: {reason.decode(errors='replace')}")
                raise TransportError(f"{address} answered OK on a message stream")

    async def send_snapshot(
        self, address: str, message: Message, *, chunk_bytes: int = 4096
    ) -> None:
        """One snapshot transfer of the MsgSnap `message`: the offer, the chunks the
        receiver asks for, until it says delivered. Raises CallRefused, or TransportError
        if the connection ended any other way."""
        outgoing = OutgoingSnapshot.build(self.cluster_id, message, chunk_bytes)
        async with self._connection(address, Purpose.SNAPSHOT) as (reader, writer):
            writer.write(frame(outgoing.upload().SerializeToString()))
            wants = await _reply(reader)
            for position in outgoing.wanted(wants):
                writer.write(frame(outgoing.chunk(position).SerializeToString()))
            while (await _reply(reader)).WhichOneof("kind") != "delivered":
                pass

    @contextlib.asynccontextmanager
    async def _connection(
        self, address: str, purpose: Purpose
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A connection to `address` for `purpose`, greeting sent, closed at the end; the
        whole exchange within timeout_seconds. How it failed is a TransportError."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                reader, writer = await _dial(address, purpose)
                try:
                    yield reader, writer
                finally:
                    writer.close()
        except TimeoutError:
            raise TransportError(f"{address}: no end within {self.timeout_seconds}s") from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise TransportError(f"{address}: {error!r}") from None
        except MalformedMessage as error:
            raise TransportError(f"{address} broke the protocol: {error}") from None


async def _dial(
    address: str, purpose: Purpose
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = split_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(greeting(purpose))
    return reader, writer


async def _reply(reader: asyncio.StreamReader) -> wire.SnapshotReply:
    status, payload = split_reply(await read_frame(reader, _MAX_REPLY_BYTES))
    if status is Status.REFUSED:
        raise CallRefused(f"refused: {payload.decode(errors='replace')}")
    try:
        return wire.SnapshotReply.FromString(payload)
    except DecodeError as error:
        raise MalformedMessage(f"undecodable SnapshotReply: {error}") from None
