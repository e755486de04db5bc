"""InProcessNetwork's fault hooks: partition, heal, delay on a ManualClock, drop filters."""

from __future__ import annotations

import asyncio
from random import Random

import pytest
from transport_helpers import heartbeat, run

from raftkv.raft.clock import ManualClock
from raftkv.raft.core.types import Message, MessageType, NodeId, Snapshot, SnapshotMetadata
from raftkv.raft.transport.base import MemberAction, MemberRequest, MemberResponse, TransportError
from raftkv.raft.transport.inprocess import InProcessNetwork, InProcessTransport
from raftkv.testing import RecordingHandler
from raftkv.testing.conformance.transport import wait_until

# Event-loop turns that are ample for a message sent now to be delivered: delivery is a
# call_soon (or a clock sleeper woken by advance), never wall-clock time.
SETTLE_TURNS = 5


async def settle() -> None:
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)


async def pair(
    network: InProcessNetwork,
) -> tuple[InProcessTransport, RecordingHandler, InProcessTransport, RecordingHandler]:
    a, b = network.transport("a"), network.transport("b")
    a_handler, b_handler = RecordingHandler(), RecordingHandler()
    await a.start(a_handler)
    await b.start(b_handler)
    a.set_peer(NodeId(2), "b")
    b.set_peer(NodeId(1), "a")
    return a, a_handler, b, b_handler


def test_a_partition_drops_and_heal_restores() -> None:
    async def scenario() -> None:
        network = InProcessNetwork()
        a, _, _, b_handler = await pair(network)
        network.partition(["a"], ["b"])
        a.send([heartbeat(1, 2, 1)])
        assert network.dropped == 1  # decided when sent
        network.heal()
        a.send([heartbeat(1, 2, 2)])
        await wait_until(lambda: bool(b_handler.delivered), "delivery after healing")
        assert [m.index for m in b_handler.delivered] == [2]
        network.isolate("b")
        a.send([heartbeat(1, 2, 3)])
        assert network.dropped == 2

    run(scenario())


def test_a_delay_delivers_only_once_the_clock_has_advanced() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        network = InProcessNetwork(clock=clock)
        network.delay_range = (1.0, 1.0)
        a, _, _, b_handler = await pair(network)
        a.send([heartbeat(1, 2, 1)])
        await settle()
        assert b_handler.delivered == []
        clock.advance(0.5)
        await settle()
        assert b_handler.delivered == []
        clock.advance(0.5)
        await settle()
        assert [m.index for m in b_handler.delivered] == [1]

    run(scenario())


def test_a_drop_filter_drops_what_it_selects() -> None:
    async def scenario() -> None:
        network = InProcessNetwork()
        network.drop_filter = lambda source, destination, message: message.index % 2 == 1
        a, _, _, b_handler = await pair(network)
        a.send([heartbeat(1, 2, index) for index in range(6)])
        await wait_until(lambda: len(b_handler.delivered) == 3, "the even messages")
        assert [m.index for m in b_handler.delivered] == [0, 2, 4]
        assert network.dropped == 3

    run(scenario())


def test_a_dropped_snapshot_is_reported_not_ok() -> None:
    async def scenario() -> None:
        network = InProcessNetwork(rng=Random(1))
        network.drop_rate = 1.0
        a, a_handler, _, b_handler = await pair(network)
        snapshot = Message(
            MessageType.SNAPSHOT,
            to=NodeId(2),
            sender=NodeId(1),
            snapshot=Snapshot(SnapshotMetadata(index=3, term=1), b"data"),
        )
        a.send([snapshot])
        await wait_until(lambda: bool(a_handler.snapshot_reports), "a snapshot report")
        assert a_handler.snapshot_reports == [(2, False)]
        assert b_handler.delivered == []

    run(scenario())


def test_a_receiver_learns_no_address_from_what_arrives() -> None:
    async def scenario() -> None:
        network = InProcessNetwork()
        first, second = network.transport("a"), network.transport("b")
        first_handler, second_handler = RecordingHandler(), RecordingHandler()
        await first.start(first_handler)
        await second.start(second_handler)
        first.set_peer(NodeId(2), "b")
        first.send([heartbeat(1, 2)])
        await wait_until(lambda: bool(second_handler.delivered), "delivery")
        assert second.peers() == {}

    run(scenario())


class SilentHandler(RecordingHandler):
    """Answers member requests only once told to."""

    def __init__(self) -> None:
        super().__init__()
        self.answer: asyncio.Future[MemberResponse] | None = None

    async def handle_member_request(self, request: MemberRequest) -> MemberResponse:
        self.member_requests.append(request)
        self.answer = asyncio.get_running_loop().create_future()
        return await self.answer


def test_a_member_request_times_out_on_the_networks_clock_not_the_wall_clock() -> None:
    """It used asyncio.timeout, the loop's wall clock: in a ManualClock simulation a short
    timeout fired or not depending on the machine's speed."""

    async def scenario() -> None:
        clock = ManualClock()
        network = InProcessNetwork(clock=clock)
        a, b = network.transport("a"), network.transport("b")
        handler = SilentHandler()
        await a.start(RecordingHandler())
        await b.start(handler)
        request = MemberRequest(MemberAction.PROMOTE, NodeId(2))
        asking = asyncio.ensure_future(a.member_request("b", request, 0.001))
        await asyncio.sleep(0.01)  # ten times the timeout, on the wall clock
        assert not asking.done()
        clock.advance(0.001)
        with pytest.raises(TransportError, match="did not answer"):
            await asking
        # An answer in time is returned.
        asking = asyncio.ensure_future(a.member_request("b", request, 1.0))
        await settle()
        assert handler.answer is not None
        handler.answer.set_result(MemberResponse(ok=True, leader_id=NodeId(2)))
        assert (await asking).leader_id == 2

    run(scenario())
