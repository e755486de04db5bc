"""`PeerTransport`: what the network transports (TcpTransport, GrpcTransport) share — the
lifecycle, the peers' addresses and their senders, the handler, the counters (`stats`),
the outgoing snapshots and the tasks closing senders. A subclass brings its listener, its
per-peer sender, its snapshot streams and its member requests.

`send` never blocks and never raises for a peer that is down: an unreachable peer (one
with no sender, a full queue, or a failed stream) is reported to the handler with
`report_unreachable`, a snapshot that could not be delivered with `report_snapshot`.

Ordering. Messages to one peer leave in `send` order and, on a healthy stream, arrive in
that order. After a stream failure some messages are lost, never reordered on purpose.

Concurrency. Everything runs on the event loop that called `start`; handler callbacks run
there too and are never made from inside `send` (reports are scheduled with call_soon).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from random import Random
from typing import Protocol

from raftkv.raft.core.errors import InvalidArgument
from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.transport.base import MemberRequest, MemberResponse, TransportHandler
from raftkv.raft.transport.codec import WIRE_MESSAGE_TYPES
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats
from raftkv.raft.transport.snapshot_streams import SnapshotUploads, UploadStream

__all__ = ["Listener", "PeerSender", "PeerTransport"]


class Listener(Protocol):
    """The serving side of a transport."""

    @property
    def incoming_snapshots(self) -> int: ...

    @property
    def snapshot_cache_bytes(self) -> int: ...

    async def start(self, handler: TransportHandler) -> str:
        """Listen and serve `handler`; the address bound. TransportError if it cannot."""
        ...

    async def stop(self) -> None: ...


class PeerSender(Protocol):
    """One peer's queue and whatever sends it."""

    peer: NodeId
    # At most max_queue_messages messages for `peer`, in send order (the transport appends).
    queue: deque[Message]

    def queued(self) -> None:
        """Messages were appended to `queue`: send them (now or soon)."""
        ...

    def heard_from(self) -> None:
        """The peer sent us a frame, so it is up: end a backoff (see Reconnect)."""
        ...

    async def close(self) -> None: ...

    async def drain_then_close(self, timeout: float) -> None:
        """Send what is queued, for at most `timeout` seconds, then close."""
        ...


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class PeerTransport:
    """A `Transport` to peers over the network. Start once, stop once; `stop` is safe to
    repeat. Subclasses implement `_new_sender`, `_open_snapshot_stream` and
    `member_request`, and give their listener and logger to `__init__`."""

    def __init__(
        self,
        settings: PeerTransportSettings,
        listener: Listener,
        log: logging.Logger,
        *,
        stats: PeerTransportStats,
        rng: Random | None,
    ) -> None:
        self.settings = settings
        self.stats = stats
        # Drives the backoff jitter; inject a seeded one for reproducible tests.
        self._rng = rng if rng is not None else Random()
        self._log = log
        self._listener = listener
        self._state = _State.NEW
        self._handler: TransportHandler | None = None
        self._address = settings.listen_address
        self._snapshots = SnapshotUploads(
            settings, stats, self._open_snapshot_stream, self._report_snapshot, log
        )
        # Known peer addresses, kept whether or not the transport runs.
        self._addresses: dict[NodeId, str] = {}
        # One per peer while running. Invariant: keys == self._addresses' keys.
        self._senders: dict[NodeId, PeerSender] = {}
        # Senders (and whatever else a subclass closes) being closed, awaited by stop.
        self._closing_tasks: set[asyncio.Task[None]] = set()

    # -- what a subclass brings --------------------------------------------------------------

    def _new_sender(self, peer: NodeId, address: str, queue: deque[Message]) -> PeerSender:
        """A sender for `peer` at `address`, taking over `queue` (called while running)."""
        raise NotImplementedError

    async def _open_snapshot_stream(self, peer: NodeId) -> UploadStream:
        """A new stream for one snapshot transfer to `peer` (TransportError if none)."""
        raise NotImplementedError

    async def member_request(
        self, address: str, request: MemberRequest, timeout: float
    ) -> MemberResponse:
        raise NotImplementedError

    # -- the Transport ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where peers reach this node: the listen address, with the bound port once
        started (so "127.0.0.1:0" becomes "127.0.0.1:<port>")."""
        return self._address

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    async def start(self, handler: TransportHandler) -> None:
        if self._state is not _State.NEW:
            name = type(self).__name__
            raise InvalidArgument(f"a {self._state.value} {name} cannot start again")
        self._address = await self._listener.start(handler)
        self._handler = handler
        self._state = _State.RUNNING
        for peer, address in self._addresses.items():
            self._senders[peer] = self._new_sender(peer, address, deque())
        self._log.info("listening on %s (cluster %d)", self._address, self.settings.cluster_id)

    def send(self, messages: Sequence[Message]) -> None:
        if self._state is not _State.RUNNING:
            return
        # A local message type here is a bug in the caller: refuse the whole call before
        # queueing any of it.
        for message in messages:
            if message.type not in WIRE_MESSAGE_TYPES:
                raise InvalidArgument(f"{message.type.value} is local and never sent to a peer")
        senders = self._senders
        limit = self.settings.max_queue_messages
        queued: list[PeerSender] = []
        unreachable: set[NodeId] = set()
        failed_snapshots: list[NodeId] = []
        for message in messages:
            sender = senders.get(message.to)
            if sender is None:
                unreachable.add(message.to)
                self.stats.messages_dropped += 1
                if message.type is MessageType.SNAPSHOT:
                    failed_snapshots.append(message.to)
            elif message.type is MessageType.SNAPSHOT:
                self._snapshots.start(message.to, message)
            elif len(sender.queue) >= limit:
                unreachable.add(message.to)
                self.stats.messages_dropped += 1
            else:
                sender.queue.append(message)
                if sender not in queued:
                    queued.append(sender)
        for sender in queued:
            sender.queued()
        if unreachable:
            # Later, never from inside `send`: the handler is the caller of `send`.
            loop = asyncio.get_running_loop()
            for peer in unreachable:
                loop.call_soon(self._report_unreachable, peer)
            for peer in failed_snapshots:
                loop.call_soon(self._report_snapshot, peer, False)

    def set_peer(self, peer: NodeId, address: str) -> None:
        # Not validated here: an address may come from a joining node's request, and a bad
        # one must not raise into the node. It fails to connect and is reported unreachable.
        if self._addresses.get(peer) == address:
            return
        self._addresses[peer] = address
        if self._state is not _State.RUNNING:
            return
        previous = self._senders.pop(peer, None)
        # Messages already queued are for the peer, not the address: they carry over.
        queue = previous.queue if previous is not None else deque()
        if previous is not None:
            self._track_closing(previous.close(), f"raftkv-close-peer-{peer}")
        self._senders[peer] = self._new_sender(peer, address, queue)

    def remove_peer(self, peer: NodeId) -> None:
        """Forget `peer`: nothing more is queued for it. What is queued already still goes,
        for up to request_timeout_seconds: a member is removed when the leader applies its
        removal, which is when the message telling it the removal committed may still be
        queued (without it, the removed member never learns it was removed)."""
        self._addresses.pop(peer, None)
        sender = self._senders.pop(peer, None)
        if sender is not None:
            self._track_closing(
                sender.drain_then_close(self.settings.request_timeout_seconds),
                f"raftkv-close-peer-{sender.peer}",
            )

    def peers(self) -> dict[NodeId, str]:
        return dict(self._addresses)

    def incoming_snapshots(self) -> int:
        """Snapshot transfers being received now (at most max_incoming_snapshots)."""
        return self._listener.incoming_snapshots

    def snapshot_cache_bytes(self) -> int:
        """Bytes of chunks kept from earlier snapshot transfers (at most
        snapshot_cache_bytes)."""
        return self._listener.snapshot_cache_bytes

    def queue_lengths(self) -> dict[NodeId, int]:
        """Messages waiting to be sent, per peer (at most max_queue_messages each); empty
        unless running. For metrics: a queue that stays long means a slow or dead peer."""
        return {peer: len(sender.queue) for peer, sender in self._senders.items()}

    async def stop(self) -> None:
        """Stop serving and sending; queued messages are dropped."""
        if self._state is _State.STOPPED:
            return
        self._state = _State.STOPPED
        self._snapshots.cancel()
        for sender in self._senders.values():
            self._track_closing(sender.close(), f"raftkv-close-peer-{sender.peer}")
        self._senders.clear()
        while self._snapshots.running or self._closing_tasks:
            await asyncio.gather(
                *self._snapshots.running, *self._closing_tasks, return_exceptions=True
            )
        await self._listener.stop()
        self._handler = None

    # -- for the parts ----------------------------------------------------------------------

    def _heard_from(self, peer: NodeId) -> None:
        sender = self._senders.get(peer)
        if sender is not None:
            sender.heard_from()

    def _report_unreachable(self, peer: NodeId) -> None:
        if self._state is _State.RUNNING and self._handler is not None:
            self._handler.report_unreachable(peer)

    def _report_snapshot(self, peer: NodeId, ok: bool) -> None:
        if self._state is _State.RUNNING and self._handler is not None:
            self._handler.report_snapshot(peer, ok)

    def _track_closing(self, closing: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(closing, name=name)
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)
