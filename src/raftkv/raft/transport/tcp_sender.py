"""Sending Raft messages to one peer over TCP: its connection, its bounded queue and its
task.

`TcpTransport.send` appends to the peer's queue and calls `flush`, which writes the queue
out at once, as frames, when a connection is open and its buffer has room: the bytes reach
the kernel inside `send`, with no task to wake and no loop turn in between (the largest
cost of the gRPC transport's hop). Everything that waits runs on the peer's task: dialling,
waiting for a full buffer to drain (at most `request_timeout_seconds`, or the peer counts
as stalled) and the backoff after a failure. A connection fails when it cannot be made,
when a write stalls, or when the peer ends it (a watcher reads the connection; past the
byte accepting it the listener never writes on it, so anything read ends it too). The task then
reports the peer unreachable once, drops what was queued (Raft retransmits what matters),
rests a backoff (reconnect.py) and dials again when there is something to send.

Ordering: messages to one peer leave in `send` order and, on a healthy connection, arrive
in that order. After a failure some messages are lost, never reordered on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from random import Random

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport.codec import encode_batch, take_frame
from raftkv.raft.transport.reconnect import Reconnect
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats
from raftkv.raft.transport.tcp_connections import TcpConnections
from raftkv.raft.transport.tcp_framing import (
    GREETING_BYTES,
    Purpose,
    Status,
    frame,
    greeting,
    not_accepted,
    read_frame,
    split_reply,
)

__all__ = ["TcpPeerSender", "TcpSenderContext"]

logger = logging.getLogger("raftkv.transport.tcp")

# The longest frame the watcher reads from a MESSAGES connection: past its first byte the
# listener writes only a REFUSED reply (a reason of at most 1 KiB) before closing it.
_WATCH_FRAME_BYTES = 2048


@dataclass(frozen=True, slots=True)
class TcpSenderContext:
    """What the transport lends each of its peer senders (it owns all of it)."""

    settings: PeerTransportSettings
    # Counters the senders add to.
    stats: PeerTransportStats
    connections: TcpConnections
    # Drives the backoff jitter.
    rng: Random
    # Where peers reach this node: every frame's from_address.
    local_address: str
    # Tells the node a peer is unreachable (never called from inside `send`).
    report_unreachable: Callable[[NodeId], None]


class TcpPeerSender:
    """The connection, queue and task of one peer.

    Invariants: `queue` holds at most max_queue_messages non-snapshot messages for `peer`,
    in send order; `writer` is the open connection or None; only the task opens and
    closes it, `flush` only writes on it; `broken` is set once the connection failed and
    until the task has given it up.
    """

    def __init__(
        self, context: TcpSenderContext, peer: NodeId, address: str, queue: deque[Message]
    ) -> None:
        self.context = context
        self.peer = peer
        self.address = address
        self.queue = queue
        self.wakeup = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.broken = False
        self.failure_reason = ""
        self.reconnect = Reconnect(
            context.settings,
            context.rng,
            stats=context.stats,
            report_unreachable=context.report_unreachable,
            log=logger,
            peer=peer,
            address=address,
        )
        # Set whenever the queue was emptied onto the wire (drain_then_close waits on it).
        self.emptied = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"raftkv-send-to-{peer}"
        )
        if queue:
            self.wakeup.set()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def drain_then_close(self, timeout: float) -> None:
        """Send what is queued, for at most `timeout` seconds (an unreachable peer gets it
        dropped), then close."""
        if self.queue:
            self.emptied.clear()
            self.flush()
            self.wakeup.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.emptied.wait()
                    if self.writer is not None:
                        await self.writer.drain()
        self.context.stats.messages_dropped += len(self.queue)
        self.queue.clear()
        await self.close()

    def heard_from(self) -> None:
        """The peer sent us a frame, so it is up (see Reconnect)."""
        self.reconnect.heard_from()

    def queued(self) -> None:
        """Messages were appended to the queue: out they go, at once if they can."""
        self.flush()

    def flush(self) -> None:
        """Write the queue out as frames now, if a connection is open and its buffer below
        the limit; otherwise leave it to the task (woken here)."""
        writer = self.writer
        if writer is None or self.broken or writer.is_closing():
            self.wakeup.set()
            return
        context = self.context
        settings = context.settings
        stats = context.stats
        transport = writer.transport
        queue = self.queue
        while queue:
            if transport.get_write_buffer_size() >= settings.max_batch_bytes:
                self.wakeup.set()  # the task waits for the buffer to drain
                return
            messages = take_frame(self.queue, settings.max_batch_messages, settings.max_batch_bytes)
            try:
                batch = encode_batch(settings.cluster_id, messages, context.local_address)
            except InvalidArgument as error:
                # Our own bug (say, a negative term): nothing the peer can help with, and
                # no reason to break the connection. Raft retransmits.
                logger.error("dropped %d messages to peer %d: %s", len(messages), self.peer, error)
                stats.messages_dropped += len(messages)
                continue
            writer.write(frame(batch.SerializeToString()))
            stats.frames_sent += 1
            stats.messages_sent += len(messages)
        self.reconnect.succeeded()
        self.emptied.set()

    async def _run(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                if self.broken:
                    await self._fail(self.failure_reason)
                    continue
                if not self.queue:
                    self.emptied.set()
                    continue
                if self.writer is None:
                    failure = await self._connect()
                    if failure is not None:
                        await self._fail(failure)
                        continue
                self.flush()
                if self.queue and self.writer is not None and not self.broken:
                    failure = await self._drain()
                    if failure is not None:
                        await self._fail(failure)
                        continue
                    self.wakeup.set()
        finally:
            self._disconnect()

    async def _connect(self) -> str | None:
        """Open the connection; the reason it failed, or None."""
        settings = self.context.settings
        try:
            reader, writer = await self.context.connections.dial(self.address, Purpose.MESSAGES)
        except TimeoutError:
            return "connect timed out"
        except (OSError, ssl.SSLError) as error:
            return f"cannot connect: {error.strerror or error}"
        try:
            async with asyncio.timeout(settings.connect_timeout_seconds):
                accepted = await reader.readexactly(GREETING_BYTES)
        except TimeoutError:
            writer.close()
            return "the peer did not accept the connection in time"
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError):
            writer.close()
            return "the peer closed the connection (our TLS certificate? not a raftkv node?)"
        if accepted != greeting(Purpose.MESSAGES):
            writer.close()
            return not_accepted(accepted)
        self.writer = writer
        self.broken = False
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(reader, writer), name=f"raftkv-watch-send-to-{self.peer}"
        )
        return None

    async def _drain(self) -> str | None:
        """Wait for the buffer to drain below its limit; the reason it failed, or None."""
        writer = self.writer
        assert writer is not None
        try:
            async with asyncio.timeout(self.context.settings.request_timeout_seconds):
                await writer.drain()
        except TimeoutError:
            return "write timed out (the peer reads too slowly or not at all)"
        except (OSError, ssl.SSLError) as error:
            return f"write failed: {error.strerror or error}"
        return None

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Mark the connection broken when the peer ends it (or writes on it)."""
        try:
            status, payload = split_reply(await read_frame(reader, _WATCH_FRAME_BYTES))
            if status is Status.REFUSED:
                reason = f"the peer refused what we sent: {payload.decode(errors='replace')}"
            else:
                reason = "the peer wrote on a message stream"
        except asyncio.IncompleteReadError:
            reason = "the peer closed the connection"
        except MalformedMessage as error:
            reason = f"the peer wrote on a message stream: {error}"
        except (OSError, ssl.SSLError) as error:
            reason = f"connection lost: {error.strerror or error}"
        if writer is self.writer and not self.broken:
            self.broken = True
            self.failure_reason = reason
            self.wakeup.set()

    def _disconnect(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()

    async def _fail(self, reason: str) -> None:
        """Give up the connection: report once, drop the queue, back off."""
        self._disconnect()
        self.broken = False
        await self.reconnect.give_up(self.queue, reason)
