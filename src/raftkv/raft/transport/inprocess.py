"""InProcessTransport: nodes in one event loop, connected by an `InProcessNetwork`.

For tests, the deterministic driver simulation and embedding several nodes in one
process. The network has fault hooks: drop a fraction of messages, delay them (on the
network's clock, so a ManualClock decides when they arrive), partition addresses into
groups, or filter messages with a predicate.

Delivery is never synchronous: a message sent now reaches its destination on a later turn
of the event loop, so a node is never re-entered from inside its own `send`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from random import Random

from raftkv.raft.clock import Clock, SystemClock
from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.transport.base import (
    ChecksSnapshots,
    MemberRequest,
    MemberResponse,
    NotDelivered,
    TransportError,
    TransportHandler,
)

# Returns True to drop a message: (sender address, destination address, message).
DropFilter = Callable[[str, str, Message], bool]


class InProcessNetwork:
    def __init__(self, *, clock: Clock | None = None, rng: Random | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else Random(0)
        self._endpoints: dict[str, InProcessTransport] = {}
        # Address -> partition group; addresses in different groups cannot talk. Addresses
        # not listed are in group 0 (with everyone else unlisted).
        self._group: dict[str, int] = {}
        self.drop_rate = 0.0
        self.delay_range: tuple[float, float] = (0.0, 0.0)
        self.drop_filter: DropFilter | None = None
        self.delivered = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def transport(self, address: str) -> InProcessTransport:
        """A transport that receives at `address` once started."""
        return InProcessTransport(self, address)

    # -- fault hooks -----------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: each group talks only within itself."""
        self._group = {}
        for number, group in enumerate(groups, start=1):
            for address in group:
                self._group[address] = number

    def isolate(self, address: str) -> None:
        self._group[address] = -1 - len(self._group)

    def heal(self) -> None:
        self._group = {}

    def connected(self, source: str, destination: str) -> bool:
        return self._group.get(source, 0) == self._group.get(destination, 0)

    # -- delivery --------------------------------------------------------------------------

    # register, unregister and route are the transports' side of the network: an
    # InProcessTransport calls them when it starts, stops and sends.

    def register(self, transport: InProcessTransport) -> None:
        current = self._endpoints.get(transport.address)
        if current is not None and current is not transport and current.running:
            raise TransportError(f"address {transport.address} is already in use")
        self._endpoints[transport.address] = transport

    def unregister(self, transport: InProcessTransport) -> None:
        if self._endpoints.get(transport.address) is transport:
            del self._endpoints[transport.address]

    def endpoint(self, address: str) -> InProcessTransport | None:
        transport = self._endpoints.get(address)
        return transport if transport is not None and transport.running else None

    def _lost(self, source: str, destination: str, message: Message) -> bool:
        if not self.connected(source, destination):
            return True
        if self.drop_filter is not None and self.drop_filter(source, destination, message):
            return True
        return self.drop_rate > 0 and self._rng.random() < self.drop_rate

    def route(
        self, source: InProcessTransport, destination_address: str, batch: list[Message]
    ) -> None:
        kept: list[Message] = []
        for message in batch:
            if not self._lost(source.address, destination_address, message):
                kept.append(message)
                continue
            self.dropped += 1
            if message.type is MessageType.SNAPSHOT:
                source.report_lost_snapshot(message.to)
        if not kept:
            return
        low, high = self.delay_range
        delay = low if high <= low else self._rng.uniform(low, high)
        if delay <= 0:
            asyncio.get_running_loop().call_soon(self._arrive, source, destination_address, kept)
            return
        task = asyncio.get_running_loop().create_task(
            self._arrive_later(delay, source, destination_address, kept)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _arrive_later(
        self, delay: float, source: InProcessTransport, address: str, batch: list[Message]
    ) -> None:
        await self.clock.sleep(delay)
        self._arrive(source, address, batch)

    def _arrive(self, source: InProcessTransport, address: str, batch: list[Message]) -> None:
        destination = self.endpoint(address)
        if destination is None or destination.handler is None:
            # The destination is down: the sender learns it, as a refused connection.
            self.dropped += len(batch)
            if source.running and source.handler is not None:
                for peer in {m.to for m in batch}:
                    source.handler.report_unreachable(peer)
                for message in batch:
                    if message.type is MessageType.SNAPSHOT:
                        source.handler.report_snapshot(message.to, False)
            return
        self.delivered += len(batch)
        # As GrpcTransport: the receiver learns no address from what arrives, and a
        # snapshot its handler refuses is dropped and reported failed.
        outcomes = {
            id(message): _usable(destination.handler, message)
            for message in batch
            if message.type is MessageType.SNAPSHOT
        }
        destination.handler.deliver([m for m in batch if outcomes.get(id(m), True)])
        for message in batch:
            if message.type is MessageType.SNAPSHOT and source.running and source.handler:
                source.handler.report_snapshot(message.to, outcomes[id(message)])


def _usable(handler: TransportHandler, snapshot: Message) -> bool:
    """Whether `handler` accepts the MsgSnap `snapshot` (ChecksSnapshots; checked inline:
    in-process snapshots are small and simulations must stay deterministic)."""
    if not isinstance(handler, ChecksSnapshots):
        return True
    try:
        handler.check_snapshot(snapshot)
    except MalformedMessage:
        return False
    return True


class InProcessTransport:
    def __init__(self, network: InProcessNetwork, address: str) -> None:
        self.network = network
        self.address = address
        self.handler: TransportHandler | None = None
        self.running = False
        self._peers: dict[NodeId, str] = {}

    async def start(self, handler: TransportHandler) -> None:
        self.handler = handler
        self.network.register(self)
        self.running = True

    def send(self, messages: Sequence[Message]) -> None:
        if not self.running:
            return
        batches: dict[str, list[Message]] = {}
        for message in messages:
            address = self._peers.get(message.to)
            if address is None:
                self._later(self._report_unreachable, message.to)
                if message.type is MessageType.SNAPSHOT:
                    self.report_lost_snapshot(message.to)
                continue
            batches.setdefault(address, []).append(message)
        for address, batch in batches.items():
            self.network.route(self, address, batch)

    def set_peer(self, peer: NodeId, address: str) -> None:
        self._peers[peer] = address

    def remove_peer(self, peer: NodeId) -> None:
        self._peers.pop(peer, None)

    def peers(self) -> dict[NodeId, str]:
        return dict(self._peers)

    async def member_request(
        self, address: str, request: MemberRequest, timeout: float
    ) -> MemberResponse:
        destination = self.network.endpoint(address)
        if destination is None or destination.handler is None:
            raise NotDelivered(f"no node listens at {address}")
        if not self.network.connected(self.address, address):
            raise NotDelivered(f"{address} is unreachable (partitioned)")
        # Timed on the network's clock, as delays are: asyncio.timeout would use the event
        # loop's wall clock, which makes a ManualClock simulation depend on machine speed.
        answer = asyncio.ensure_future(destination.handler.handle_member_request(request))
        expiry = asyncio.ensure_future(self.network.clock.sleep(timeout))
        try:
            await asyncio.wait((answer, expiry), return_when=asyncio.FIRST_COMPLETED)
        finally:
            expiry.cancel()
            answer.cancel()  # a no-op once it is done
        if not answer.done():
            with contextlib.suppress(asyncio.CancelledError):
                await answer
            raise TransportError(f"{address} did not answer in {timeout}s")
        return answer.result()

    async def stop(self) -> None:
        self.running = False
        self.network.unregister(self)

    # -- helpers ---------------------------------------------------------------------------

    def _later(self, callback: Callable[..., None], *arguments: object) -> None:
        asyncio.get_running_loop().call_soon(callback, *arguments)

    def _report_unreachable(self, peer: NodeId) -> None:
        if self.running and self.handler is not None:
            self.handler.report_unreachable(peer)

    def report_lost_snapshot(self, peer: NodeId) -> None:
        """Tell the handler, on a later turn of the loop, that a snapshot for `peer` was
        lost (the network calls it for a snapshot it drops)."""
        self._later(self._report_snapshot, peer, False)

    def _report_snapshot(self, peer: NodeId, ok: bool) -> None:
        if self.running and self.handler is not None:
            self.handler.report_snapshot(peer, ok)
