"""Sending Raft messages to one peer: its channel, its bounded queue and its sender task.

`GrpcTransport.send` appends to the peer's queue and wakes the task; it never blocks and
never raises for a peer that is down. The task drains the queue into frames (at most
`max_batch_messages` messages and `max_batch_bytes` bytes, one sender per frame) and writes
them on one long-lived client stream (`Raft.Send`). A stream fails when a write fails or
times out, when it cannot connect in `connect_timeout_seconds`, or when the peer ends it;
the task then reports the peer unreachable once, drops what was queued (Raft retransmits
what matters), rests a backoff (reconnect.py) and opens a new stream
when there is something to send. A frame from the peer (on our server side) proves it is
up: its backoff starts over, a rest in progress ends, and a channel that gRPC itself holds
in its own reconnect backoff is replaced by a fresh one, so a restarted peer is redialled
as soon as it speaks.

Ordering: messages to one peer leave in `send` order and, on a healthy stream, arrive in
that order. After a stream failure some messages are lost, never reordered on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from random import Random

import grpc
import grpc.aio

from raftkv.raft.core.errors import InvalidArgument
from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.codec import encode_batch, take_frame
from raftkv.raft.transport.grpc_options import GrpcOptions
from raftkv.raft.transport.grpc_service import SEND_METHOD
from raftkv.raft.transport.reconnect import Reconnect
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats

__all__ = ["GrpcPeerSender", "SenderContext"]

logger = logging.getLogger("raftkv.transport.grpc")

_SendCall = grpc.aio.StreamUnaryCall[wire.MessageBatch, wire.SendAck]


@dataclass(frozen=True, slots=True)
class SenderContext:
    """What the transport lends each of its peer senders (it owns all of it)."""

    settings: PeerTransportSettings
    # Counters the senders add to.
    stats: PeerTransportStats
    options: GrpcOptions
    # Drives the backoff jitter.
    rng: Random
    # Where peers reach this node: every frame's from_address.
    local_address: str
    # Tells the node a peer is unreachable (never called from inside `send`).
    report_unreachable: Callable[[NodeId], None]
    # Runs a closing coroutine (named) as a task that the transport's stop awaits.
    close_later: Callable[[Coroutine[object, object, None], str], None]


class GrpcPeerSender:
    """The channel, queue and sender task of one peer.

    Invariants: `queue` holds at most max_queue_messages non-snapshot messages for `peer`,
    in send order; `call` is the open Send stream or None; only the task writes on it, and
    only the task replaces `channel` (never while `call` is open).
    """

    def __init__(
        self, context: SenderContext, peer: NodeId, address: str, queue: deque[Message]
    ) -> None:
        self.context = context
        self.peer = peer
        self.address = address
        self.queue = queue
        self.wakeup = asyncio.Event()
        self.call: _SendCall | None = None
        # Set by the call's done callback: the stream ended while we were not writing.
        self.broken = False
        # The backoff between failed streams. Its `heard` event also has the next stream
        # open on a channel that is not in gRPC's own reconnect backoff.
        # The reports, log lines and backoff of failed streams. Its `heard` event also has
        # the next stream open on a channel that is not in gRPC's own reconnect backoff.
        self.reconnect = Reconnect(
            context.settings,
            context.rng,
            stats=context.stats,
            report_unreachable=context.report_unreachable,
            log=logger,
            peer=peer,
            address=address,
        )
        # Set whenever the task has sent everything queued (drain_then_close waits on it).
        self.emptied = asyncio.Event()
        self.channel: grpc.aio.Channel
        self._method: grpc.aio.StreamUnaryMultiCallable[wire.MessageBatch, wire.SendAck]
        self._use_channel(context.options.open_channel(address))
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"raftkv-send-to-{peer}"
        )
        if queue:
            self.wakeup.set()

    def _use_channel(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._method = channel.stream_unary(
            SEND_METHOD,
            request_serializer=wire.MessageBatch.SerializeToString,
            response_deserializer=wire.SendAck.FromString,
        )

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()

    async def drain_then_close(self, timeout: float) -> None:
        """Send what is queued, for at most `timeout` seconds (an unreachable peer gets it
        dropped), then close."""
        if self.queue:
            self.emptied.clear()
            self.wakeup.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.emptied.wait()
        self.context.stats.messages_dropped += len(self.queue)
        self.queue.clear()
        await self.close()

    def heard_from(self) -> None:
        """The peer sent us a frame, so it is up (see Reconnect)."""
        self.reconnect.heard_from()

    def queued(self) -> None:
        """Messages were appended to the queue: the task writes them."""
        self.wakeup.set()

    async def _run(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                if self.broken:
                    await self._fail(await _failure_reason(self.call))
                    continue
                while self.queue:
                    failure = await self._send_frame()
                    if failure is not None:
                        await self._fail(failure)
                        break
                if not self.queue:
                    self.emptied.set()
        finally:
            if self.call is not None:
                self.call.cancel()
                self.call = None

    async def _send_frame(self) -> str | None:
        """Write one frame from the queue; the reason the stream failed, or None."""
        context = self.context
        settings = context.settings
        frame = take_frame(self.queue, settings.max_batch_messages, settings.max_batch_bytes)
        try:
            batch = encode_batch(settings.cluster_id, frame, context.local_address)
        except InvalidArgument as error:
            # Our own bug (say, a negative term): nothing the peer can help with, and no
            # reason to break the stream. Raft retransmits.
            logger.error("dropped %d messages to peer %d: %s", len(frame), self.peer, error)
            context.stats.messages_dropped += len(frame)
            return None
        phase = "connect"
        try:
            if self.call is None:
                if self.reconnect.heard.is_set():
                    self._refresh_channel()
                async with asyncio.timeout(settings.connect_timeout_seconds):
                    self.call = await self._open_stream()
            phase = "write"
            async with asyncio.timeout(settings.request_timeout_seconds):
                await self.call.write(batch)
        except TimeoutError:
            context.stats.messages_dropped += len(frame)
            return f"{phase} timed out"
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            context.stats.messages_dropped += len(frame)
            return await _failure_reason(self.call)
        context.stats.frames_sent += 1
        context.stats.messages_sent += len(frame)
        self.reconnect.succeeded()
        return None

    def _refresh_channel(self) -> None:
        """After hearing from the peer: if gRPC holds the channel in its own reconnect
        backoff (TRANSIENT_FAILURE: calls fail at once until its timer, up to
        reconnect_backoff_max_seconds, runs out), dial on a fresh channel instead."""
        self.reconnect.heard.clear()
        state = self.channel.get_state(try_to_connect=False)
        if state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            return
        stale = self.channel
        self._use_channel(self.context.options.open_channel(self.address))
        # A snapshot transfer on the stale channel is failing anyway (the channel is down).
        self.context.close_later(stale.close(), f"raftkv-close-channel-{self.peer}")

    async def _open_stream(self) -> _SendCall:
        call = self._method(wait_for_ready=False)
        # Set before waiting, so a timeout or a failure finds the call to cancel or explain.
        self.call = call
        self.broken = False
        call.add_done_callback(self._on_call_done)
        await call.wait_for_connection()
        return call

    def _on_call_done(self, call: grpc.aio.Call) -> None:
        # The peer never ends a healthy stream: any end we did not cause is a failure.
        if call is self.call:
            self.broken = True
            self.wakeup.set()

    async def _fail(self, reason: str) -> None:
        """Give up the stream: report once, drop the queue, back off."""
        call, self.call = self.call, None
        self.broken = False
        if call is not None:
            call.cancel()
        await self.reconnect.give_up(self.queue, reason)


async def _failure_reason(call: _SendCall | None) -> str:
    """Why a Send stream ended, for the log."""
    if call is None or not call.done():
        return "stream closed"
    code = await call.code()
    details = await call.details()
    return f"{code.name}: {details}" if details else code.name
