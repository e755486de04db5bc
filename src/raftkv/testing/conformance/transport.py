"""check_transport: the behaviour every `Transport` must have, as a reusable async suite.

Anyone writing a transport runs it with a factory for theirs:

    class MyFactory:
        async def create(self, handler, address=None):
            transport = MyTransport(listen=address or "127.0.0.1:0")
            await transport.start(handler)
            return transport, transport.address
        async def close(self):
            ...  # stop whatever create() made and is still running

    asyncio.run(check_transport(MyFactory()))

What it checks, each on fresh transports (node ids 1, 2, 3):
- every message type that travels between nodes, with every field populated (binary entry
  data, a conf-change entry, a snapshot with data and a joint conf state), arrives
  unchanged; a snapshot's success reaches the sender as report_snapshot(peer, True);
- per-sender order is kept on a healthy link, with two senders interleaving;
- 10,000 small messages, sent in chunks of 1,000 (so a transport must queue at least
  1,000 messages per peer), all arrive;
- a message or snapshot for an unknown peer is reported (unreachable, snapshot not ok),
  never raised;
- a snapshot the receiving handler refuses (ChecksSnapshots) is not delivered and reaches
  the sender as report_snapshot(peer, False); once accepted, it is delivered;
- a stopped peer is reported unreachable within a bounded wait, `send` keeps not raising,
  a member request to it raises NotDelivered (a TransportError: it was never sent), and
  once a new transport listens on its address again (so `stop` released it) messages flow
  again;
- a member request round-trips every field of request and response;
- `stop` may be called twice, and `send`, `set_peer`, `remove_peer` after it do not raise.

Waits poll a condition every 10 ms up to a deadline and fail with what was expected and
what was seen; nothing sleeps hoping that things settle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.core.types import (
    LOCAL_MESSAGE_TYPES,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.transport.base import (
    MemberAction,
    MemberRequest,
    MemberResponse,
    NotDelivered,
    Transport,
    TransportError,
    TransportHandler,
)

__all__ = ["RecordingHandler", "TransportFactory", "check_transport", "wait_until"]

POLL_INTERVAL_SECONDS = 0.01
# Messages per `send` call in the bulk check: a transport must queue at least this many
# per peer.
BULK_CHUNK_MESSAGES = 1_000
BULK_TOTAL_MESSAGES = 10_000


class TransportFactory(Protocol):
    async def create(
        self, handler: TransportHandler, address: str | None = None
    ) -> tuple[Transport, str]:
        """A new transport, started with `handler`, and the address peers reach it at.

        With `address`, listen exactly there: the suite restarts a stopped node on its old
        address. (Started by the factory because a transport listening on port 0 learns its
        address only when it starts.)"""
        ...

    async def close(self) -> None:
        """Stop every transport `create` made that is still running."""
        ...


class RecordingHandler:
    """A TransportHandler that records every call, for tests.

    Member requests are recorded and answered with `member_response`. As a ChecksSnapshots
    handler it records each snapshot checked and refuses them while `refuse_snapshots`.
    """

    def __init__(self, member_response: MemberResponse | None = None) -> None:
        self.delivered: list[Message] = []
        self.unreachable: list[NodeId] = []
        self.snapshot_reports: list[tuple[NodeId, bool]] = []
        self.member_requests: list[MemberRequest] = []
        self.member_response = (
            member_response if member_response is not None else MemberResponse(ok=True)
        )
        self.snapshots_checked: list[Message] = []
        self.refuse_snapshots = False

    def deliver(self, messages: Sequence[Message]) -> None:
        self.delivered.extend(messages)

    def check_snapshot(self, message: Message) -> None:
        self.snapshots_checked.append(message)
        if self.refuse_snapshots:
            raise MalformedMessage("refused by the test")

    def report_unreachable(self, peer: NodeId) -> None:
        self.unreachable.append(peer)

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        self.snapshot_reports.append((peer, ok))

    async def handle_member_request(self, request: MemberRequest) -> MemberResponse:
        self.member_requests.append(request)
        return self.member_response

    def delivered_from(self, sender: NodeId) -> list[Message]:
        return [message for message in self.delivered if message.sender == sender]


async def wait_until(
    condition: Callable[[], bool],
    description: str,
    *,
    timeout_seconds: float = 10.0,
    observed: Callable[[], object] | None = None,
    retry: Callable[[], None] | None = None,
) -> None:
    """Poll `condition` until it holds; raise AssertionError after `timeout_seconds`.

    `retry` runs before every poll (say, to resend a probe, as Raft retransmits);
    `observed` renders what was seen for the failure message."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        if retry is not None:
            retry()
        if condition():
            return
        if loop.time() >= deadline:
            seen = f"; observed: {observed()!r}" if observed is not None else ""
            raise AssertionError(
                f"timed out after {timeout_seconds}s waiting for {description}{seen}"
            )
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


async def check_transport(factory: TransportFactory, *, timeout_seconds: float = 10.0) -> None:
    """Run every check against transports from `factory`; raise AssertionError on the first
    failure. Closes the factory at the end, whatever happens."""
    checks = (
        _check_every_message_type_round_trips,
        _check_per_sender_order,
        _check_bulk_delivery,
        _check_unknown_peer,
        _check_refused_snapshot,
        _check_member_request,
        _check_stopped_peer_and_restart,
        _check_stop_is_idempotent,
    )
    try:
        for check in checks:
            async with _Nodes(factory) as nodes:
                try:
                    await check(nodes, timeout_seconds)
                except AssertionError as error:
                    raise AssertionError(f"{check.__name__.strip('_')}: {error}") from error
    finally:
        await factory.close()


# -- fixtures -------------------------------------------------------------------------------

NODE_A = NodeId(1)
NODE_B = NodeId(2)
NODE_C = NodeId(3)


@dataclass(slots=True)
class _Node:
    node_id: NodeId
    transport: Transport
    address: str
    handler: RecordingHandler
    running: bool = True


class _Nodes:
    """Transports for a check; every one is stopped when the check ends."""

    def __init__(self, factory: TransportFactory) -> None:
        self.factory = factory
        self.nodes: dict[NodeId, _Node] = {}
        # Including replaced (stopped) ones.
        self.every_node: list[_Node] = []

    async def __aenter__(self) -> _Nodes:
        return self

    async def __aexit__(self, *exception: object) -> None:
        for node in self.every_node:
            if node.running:
                await self.stop(node)

    async def add(self, node_id: NodeId, address: str | None = None) -> _Node:
        handler = RecordingHandler()
        transport, bound = await self.factory.create(handler, address)
        # A restarted node replaces the stopped one under the same id.
        node = self.nodes[node_id] = _Node(node_id, transport, bound, handler)
        self.every_node.append(node)
        return node

    async def connected(self, *node_ids: NodeId) -> list[_Node]:
        """Transports for `node_ids`, each knowing every other's address."""
        nodes = [await self.add(node_id) for node_id in node_ids]
        for node in nodes:
            for other in nodes:
                if other is not node:
                    node.transport.set_peer(other.node_id, other.address)
        return nodes

    async def stop(self, node: _Node) -> None:
        node.running = False
        await node.transport.stop()


_BINARY = bytes(range(256))


def every_wire_message(sender: NodeId, to: NodeId) -> list[Message]:
    """One message of each type that travels between nodes, every field populated and
    each shaped as a correct peer would send it (so that a transport that validates lets
    it through)."""
    conf_state = ConfState(
        voters=frozenset({NodeId(1), NodeId(2), NodeId(3)}),
        learners=frozenset({NodeId(4)}),
        voters_outgoing=frozenset({NodeId(1), NodeId(2), NodeId(5)}),
        learners_next=frozenset({NodeId(5)}),
        auto_leave=True,
    )
    snapshot = Snapshot(
        metadata=SnapshotMetadata(index=9, term=4, conf_state=conf_state),
        data=_BINARY * 40 + b"\x00end",
    )
    change = ConfChange(
        changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER_NODE, NodeId(6)),),
        context=b"\x00ctx",
    )
    entries: tuple[Entry, ...] = (
        Entry(term=4, index=11, kind=EntryKind.NORMAL, data=_BINARY),
        Entry(term=5, index=12, kind=EntryKind.CONF_CHANGE, data=change.encode()),
        Entry(term=5, index=13, kind=EntryKind.NORMAL, data=b""),
    )
    messages = []
    for number, message_type in enumerate(MessageType):
        if message_type in LOCAL_MESSAGE_TYPES:
            continue
        message_entries = entries
        if message_type in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESPONSE):
            message_entries = (Entry(term=0, index=0, data=b"\x00read-context\xff"),)
        messages.append(
            Message(
                type=message_type,
                to=to,
                sender=sender,
                # Forwarded requests carry no term (check_peer_message).
                term=0 if message_type in (MessageType.PROPOSE, MessageType.READ_INDEX) else 5,
                log_term=4,
                index=10,
                entries=message_entries,
                commit=8 + number,
                snapshot=snapshot,
                reject=True,
                reject_hint=7,
                context=b"\xffcontext\x00" + bytes([number]),
            )
        )
    return messages


def _heartbeat(sender: NodeId, to: NodeId, index: int) -> Message:
    return Message(type=MessageType.HEARTBEAT, to=to, sender=sender, term=1, index=index)


# -- checks -------------------------------------------------------------------------------


async def _check_every_message_type_round_trips(nodes: _Nodes, timeout_seconds: float) -> None:
    a, b = await nodes.connected(NODE_A, NODE_B)
    sent = every_wire_message(NODE_A, NODE_B)
    a.transport.send(sent)
    await wait_until(
        lambda: len(b.handler.delivered) >= len(sent) and bool(a.handler.snapshot_reports),
        f"{len(sent)} messages and a snapshot report",
        timeout_seconds=timeout_seconds,
        observed=lambda: ([m.type.value for m in b.handler.delivered], a.handler.snapshot_reports),
    )
    received = b.handler.delivered
    expect(
        [m for m in received if not is_snapshot(m)] == [m for m in sent if not is_snapshot(m)],
        "non-snapshot messages arrive unchanged and in order",
        received,
    )
    expect(
        [m for m in received if is_snapshot(m)] == [m for m in sent if is_snapshot(m)],
        "the snapshot message arrives unchanged",
        [m for m in received if is_snapshot(m)],
    )
    expect(
        a.handler.snapshot_reports == [(NODE_B, True)],
        "report_snapshot(peer, ok=True) reaches the sender",
        a.handler.snapshot_reports,
    )
    expect(not a.handler.unreachable, "no peer reported unreachable", a.handler.unreachable)


async def _check_per_sender_order(nodes: _Nodes, timeout_seconds: float) -> None:
    a, b, c = await nodes.connected(NODE_A, NODE_B, NODE_C)
    rounds, per_round = 20, 50
    for round_number in range(rounds):
        for sender in (a, c):
            sender.transport.send(
                [
                    _heartbeat(sender.node_id, NODE_B, round_number * per_round + offset)
                    for offset in range(per_round)
                ]
            )
        await asyncio.sleep(0)  # let the transports interleave their deliveries
    total = rounds * per_round
    await wait_until(
        lambda: len(b.handler.delivered) >= 2 * total,
        f"{2 * total} messages from two senders",
        timeout_seconds=timeout_seconds,
        observed=lambda: len(b.handler.delivered),
    )
    for sender in (a, c):
        indexes = [message.index for message in b.handler.delivered_from(sender.node_id)]
        expect(
            indexes == list(range(total)),
            f"messages from node {sender.node_id} arrive in send order",
            _first_disorder(indexes),
        )


async def _check_bulk_delivery(nodes: _Nodes, timeout_seconds: float) -> None:
    a, b = await nodes.connected(NODE_A, NODE_B)
    for start in range(0, BULK_TOTAL_MESSAGES, BULK_CHUNK_MESSAGES):
        a.transport.send(
            [
                _heartbeat(NODE_A, NODE_B, index)
                for index in range(start, start + BULK_CHUNK_MESSAGES)
            ]
        )
        expected = start + BULK_CHUNK_MESSAGES
        await wait_until(
            _delivered_at_least(b.handler, expected),
            f"{expected} of {BULK_TOTAL_MESSAGES} messages",
            timeout_seconds=timeout_seconds,
            observed=lambda: len(b.handler.delivered),
        )
    indexes = [message.index for message in b.handler.delivered]
    expect(
        indexes == list(range(BULK_TOTAL_MESSAGES)),
        "every message arrives once, in order",
        _first_disorder(indexes),
    )
    expect(not a.handler.unreachable, "no peer reported unreachable", a.handler.unreachable)


async def _check_unknown_peer(nodes: _Nodes, timeout_seconds: float) -> None:
    (a,) = await nodes.connected(NODE_A)
    unknown = NodeId(99)
    snapshot = next(
        m for m in every_wire_message(NODE_A, unknown) if m.type is MessageType.SNAPSHOT
    )
    a.transport.send([_heartbeat(NODE_A, unknown, 1), snapshot])  # must not raise
    await wait_until(
        lambda: unknown in a.handler.unreachable and (unknown, False) in a.handler.snapshot_reports,
        "report_unreachable(99) and report_snapshot(99, ok=False)",
        timeout_seconds=timeout_seconds,
        observed=lambda: (a.handler.unreachable, a.handler.snapshot_reports),
    )


async def _check_refused_snapshot(nodes: _Nodes, timeout_seconds: float) -> None:
    a, b = await nodes.connected(NODE_A, NODE_B)
    snapshot = next(m for m in every_wire_message(NODE_A, NODE_B) if m.type is MessageType.SNAPSHOT)
    b.handler.refuse_snapshots = True
    a.transport.send([snapshot])
    await wait_until(
        lambda: bool(a.handler.snapshot_reports),
        "report_snapshot(2, ok=False) for a snapshot the receiver refuses",
        timeout_seconds=timeout_seconds,
        observed=lambda: a.handler.snapshot_reports,
    )
    reports = a.handler.snapshot_reports
    expect(reports == [(NODE_B, False)], "reported not ok", reports)
    expect(
        not any(is_snapshot(m) for m in b.handler.delivered),
        "the refused snapshot is not delivered",
        b.handler.delivered,
    )
    expect(len(b.handler.snapshots_checked) == 1, "checked once", b.handler.snapshots_checked)
    b.handler.refuse_snapshots = False
    a.transport.send([snapshot])
    await wait_until(
        lambda: len(a.handler.snapshot_reports) == 2,
        "a second snapshot report",
        timeout_seconds=timeout_seconds,
        observed=lambda: a.handler.snapshot_reports,
    )
    expect(a.handler.snapshot_reports[1] == (NODE_B, True), "reported ok", reports)
    expect(
        [m for m in b.handler.delivered if is_snapshot(m)] == [snapshot],
        "the accepted snapshot is delivered",
        b.handler.delivered,
    )


async def _check_member_request(nodes: _Nodes, timeout_seconds: float) -> None:
    a, b = await nodes.connected(NODE_A, NODE_B)
    response = MemberResponse(
        ok=False,
        error="not_leader",
        message="ask node 3",
        leader_id=NODE_C,
        leader_address="somewhere:1",
        members=((NODE_A, "a:1"), (NODE_C, "c:3")),
    )
    b.handler.member_response = response
    for action in MemberAction:
        request = MemberRequest(action=action, node_id=NodeId(7), address="joiner:7")
        answer = await a.transport.member_request(b.address, request, timeout_seconds)
        expect(answer == response, "the member response round-trips", answer)
        expect(
            b.handler.member_requests[-1:] == [request],
            "the member request round-trips",
            b.handler.member_requests,
        )


async def _check_stopped_peer_and_restart(nodes: _Nodes, timeout_seconds: float) -> None:
    a, b = await nodes.connected(NODE_A, NODE_B)
    a.transport.send([_heartbeat(NODE_A, NODE_B, 0)])
    await wait_until(
        lambda: bool(b.handler.delivered), "a first message", timeout_seconds=timeout_seconds
    )
    await nodes.stop(b)
    # Keep sending, as Raft's heartbeats would, until the failure is noticed.
    await wait_until(
        lambda: NODE_B in a.handler.unreachable,
        "report_unreachable for a stopped peer",
        timeout_seconds=timeout_seconds,
        retry=lambda: a.transport.send([_heartbeat(NODE_A, NODE_B, 1)]),
    )
    try:
        await a.transport.member_request(
            b.address, MemberRequest(MemberAction.PROMOTE, NODE_B), min(timeout_seconds, 2.0)
        )
    except NotDelivered:
        pass  # nobody listens there: the request was never sent, and the error says so
    except TransportError as error:
        raise AssertionError(
            f"a member request to a stopped node must raise NotDelivered, got {error!r}"
        ) from error
    else:
        raise AssertionError("a member request to a stopped node raised no TransportError")
    # The stopped transport released its address: a new one can listen there, and the
    # sender reconnects to it.
    restarted = await nodes.add(NODE_B, address=b.address)
    await wait_until(
        lambda: any(m.index == 2 for m in restarted.handler.delivered),
        "delivery to a peer restarted on the same address",
        timeout_seconds=timeout_seconds,
        retry=lambda: a.transport.send([_heartbeat(NODE_A, NODE_B, 2)]),
    )
    expect(not b.handler.delivered[1:], "nothing reached the stopped handler", b.handler.delivered)


async def _check_stop_is_idempotent(nodes: _Nodes, timeout_seconds: float) -> None:
    a, b = await nodes.connected(NODE_A, NODE_B)
    a.transport.send([_heartbeat(NODE_A, NODE_B, 0)])
    await wait_until(
        lambda: bool(b.handler.delivered), "a first message", timeout_seconds=timeout_seconds
    )
    await nodes.stop(a)
    await a.transport.stop()
    # Must not raise (nor send: nothing observable proves that without a fixed sleep).
    a.transport.send([_heartbeat(NODE_A, NODE_B, 1)])
    a.transport.set_peer(NODE_C, "unused:1")
    a.transport.remove_peer(NODE_C)


# -- helpers ------------------------------------------------------------------------------


def is_snapshot(message: Message) -> bool:
    # A snapshot travels apart from the other messages, so only their order is fixed.
    return message.type is MessageType.SNAPSHOT


def _delivered_at_least(handler: RecordingHandler, count: int) -> Callable[[], bool]:
    return lambda: len(handler.delivered) >= count


def expect(condition: bool, description: str, observed: object) -> None:
    if not condition:
        raise AssertionError(f"expected {description}; observed: {observed!r}")


def _first_disorder(indexes: list[int]) -> str:
    for position, index in enumerate(indexes):
        if index != position:
            return f"position {position} holds {index} (of {len(indexes)} received)"
    return f"{len(indexes)} received"
