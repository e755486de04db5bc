"""What every peer transport raftkv ships (gRPC, TCP) does beyond the conformance suite:
limits, snapshots in chunks, reconnection with backoff, peers, member requests,
lifecycle and settings. (Snapshot transfers resumed or sent as deltas:
test_peer_snapshot_transfer.py; hostile input: test_transport_grpc.py and
test_transport_tcp.py, each in its transport's own protocol.)"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from random import Random

import pytest
from transport_helpers import (
    CLUSTER_ID,
    PEER_FACTORIES,
    PEER_LOGGERS,
    TEST_SETTINGS,
    GrpcFactory,
    heartbeat,
    run,
)

from raftkv.raft.core.errors import InvalidArgument
from raftkv.raft.core.types import (
    ConfState,
    Entry,
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
    TransportError,
)
from raftkv.raft.transport.settings import PeerTransportSettings, TransportSettingsInvalid
from raftkv.testing import RecordingHandler
from raftkv.testing.conformance.transport import wait_until

VOTERS = ConfState(voters=frozenset({NodeId(1), NodeId(2)}))


@pytest.fixture(params=sorted(PEER_FACTORIES))
def factory_class(request: pytest.FixtureRequest) -> type[GrpcFactory]:
    """Each peer transport raftkv ships."""
    return PEER_FACTORIES[request.param]


@pytest.fixture
def logger_name(factory_class: type[GrpcFactory]) -> str:
    """The logger of the transport under test."""
    return PEER_LOGGERS[factory_class.transport_class]


# -- limits ------------------------------------------------------------------------------------


def test_a_full_queue_drops_and_reports_the_peer_once_per_send(
    factory_class: type[GrpcFactory],
) -> None:
    async def scenario() -> None:
        factory = factory_class(replace(TEST_SETTINGS, max_queue_messages=10))
        try:
            sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
            sender = await factory.started(sender_handler)
            receiver = await factory.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            # All 50 are offered before the sender task runs: 10 fit.
            sender.send([heartbeat(1, 2, index) for index in range(50)])
            assert sender.stats.messages_dropped == 40
            await wait_until(
                lambda: len(receiver_handler.delivered) == 10 and bool(sender_handler.unreachable),
                "the 10 queued messages and one report",
            )
            assert [message.index for message in receiver_handler.delivered] == list(range(10))
            assert sender_handler.unreachable == [2]
        finally:
            await factory.close()

    run(scenario())


def test_a_frame_over_the_receivers_limit_fails_the_stream_and_the_link_recovers(
    factory_class: type[GrpcFactory],
) -> None:
    receiving = replace(
        TEST_SETTINGS,
        max_receive_message_bytes=256 * 1024,
        max_batch_bytes=128 * 1024,
        snapshot_chunk_bytes=64 * 1024,
        max_snapshot_chunk_bytes=128 * 1024,
        max_snapshot_chunks=1024,
    )

    async def scenario() -> None:
        senders, receivers = factory_class(), factory_class(receiving)
        try:
            sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
            sender = await senders.started(sender_handler)
            receiver = await receivers.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            huge = Message(
                MessageType.APPEND,
                to=NodeId(2),
                sender=NodeId(1),
                term=1,
                entries=(Entry(term=1, index=1, data=b"x" * 300_000),),
            )
            sender.send([huge])
            await wait_until(lambda: NodeId(2) in sender_handler.unreachable, "a report")
            await wait_until(
                lambda: bool(receiver_handler.delivered),
                "a small message after reconnecting",
                retry=lambda: sender.send([heartbeat(1, 2, 3)]),
            )
            assert all(m.type is MessageType.HEARTBEAT for m in receiver_handler.delivered)
        finally:
            await senders.close()
            await receivers.close()

    run(scenario())


def test_frames_respect_the_batch_limits(factory_class: type[GrpcFactory]) -> None:
    settings = replace(TEST_SETTINGS, max_batch_messages=7, max_batch_bytes=64 * 1024)

    async def scenario() -> None:
        factory = factory_class(settings)
        try:
            receiver_handler = RecordingHandler()
            sender = await factory.started(RecordingHandler())
            receiver = await factory.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            sender.send([heartbeat(1, 2, index) for index in range(70)])
            await wait_until(lambda: len(receiver_handler.delivered) == 70, "70 messages")
            assert sender.stats.frames_sent == 10
            big = [
                Message(
                    MessageType.APPEND,
                    to=NodeId(2),
                    sender=NodeId(1),
                    term=1,
                    index=index,
                    entries=(Entry(term=1, index=index + 1, data=b"x" * 30_000),),
                )
                for index in range(6)
            ]
            sender.send(big)
            await wait_until(lambda: len(receiver_handler.delivered) == 76, "6 big messages")
            # 30 KB each within 64 KiB frames: three frames of two.
            assert sender.stats.frames_sent == 13
        finally:
            await factory.close()

    run(scenario())


def test_a_snapshot_over_the_receivers_limit_is_refused(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        senders = factory_class()
        receivers = factory_class(replace(TEST_SETTINGS, max_snapshot_bytes=1024 * 1024))
        try:
            sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
            sender = await senders.started(sender_handler)
            receiver = await receivers.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            sender.send([snapshot_message(size_bytes=1024 * 1024 + 1)])
            await wait_until(lambda: bool(sender_handler.snapshot_reports), "a snapshot report")
            assert sender_handler.snapshot_reports == [(2, False)]
            assert receiver_handler.delivered == []
            assert receiver.stats.streams_rejected == 1
        finally:
            await senders.close()
            await receivers.close()

    run(scenario())


def test_a_snapshot_the_receiving_node_cannot_use_is_refused(
    factory_class: type[GrpcFactory],
    caplog: pytest.LogCaptureFixture,
    logger_name: str,
) -> None:
    """Issue 12 A5: the handler checks a snapshot (ChecksSnapshots) before it is delivered,
    off the loop; a refused one fails the transfer (the sender reports it failed, so its
    leader retries), is counted, and is logged in one line."""

    async def scenario() -> None:
        factory = factory_class()
        try:
            sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
            receiver_handler.refuse_snapshots = True
            sender = await factory.started(sender_handler)
            receiver = await factory.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            sender.send([snapshot_message(size_bytes=10_000)])
            await wait_until(lambda: bool(sender_handler.snapshot_reports), "a snapshot report")
            assert sender_handler.snapshot_reports == [(2, False)]
            assert receiver_handler.delivered == []
            assert len(receiver_handler.snapshots_checked) == 1
            stats = receiver.stats
            assert (stats.snapshots_refused, stats.snapshots_received) == (1, 0)
        finally:
            await factory.close()

    with caplog.at_level(logging.WARNING, logger=logger_name):
        run(scenario())
    refusals = [r for r in caplog.records if "refused by the test" in r.getMessage()]
    assert [r.name for r in refusals] == [logger_name, logger_name]  # the receiver's, the sender's


# -- snapshots -------------------------------------------------------------------------------


def snapshot_message(size_bytes: int) -> Message:
    data = Random(size_bytes).randbytes(size_bytes)
    return Message(
        MessageType.SNAPSHOT,
        to=NodeId(2),
        sender=NodeId(1),
        term=4,
        snapshot=Snapshot(SnapshotMetadata(index=100, term=4, conf_state=VOTERS), data=data),
    )


def test_a_large_snapshot_arrives_in_chunks(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        factory = factory_class(replace(TEST_SETTINGS, snapshot_chunk_bytes=64 * 1024))
        try:
            sender_handler, receiver_handler = RecordingHandler(), RecordingHandler()
            sender = await factory.started(sender_handler)
            receiver = await factory.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            message = snapshot_message(size_bytes=3 * 1024 * 1024 + 17)
            sender.send([message, heartbeat(1, 2)])
            await wait_until(lambda: bool(sender_handler.snapshot_reports), "a snapshot report")
            assert sender_handler.snapshot_reports == [(2, True)]
            assert message in receiver_handler.delivered
        finally:
            await factory.close()

    run(scenario())


def test_stop_during_a_snapshot_transfer_is_clean(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        factory = factory_class(replace(TEST_SETTINGS, snapshot_chunk_bytes=16 * 1024))
        sender_handler = RecordingHandler()
        sender = await factory.started(sender_handler)
        receiver = await factory.started(RecordingHandler())
        sender.set_peer(NodeId(2), receiver.address)
        sender.send([snapshot_message(size_bytes=8 * 1024 * 1024)])
        await asyncio.sleep(0)  # the transfer task has started
        await sender.stop()
        await factory.close()
        # A stopped transport reports nothing to its handler.
        assert sender_handler.snapshot_reports == []

    run(scenario())


# -- reconnection -----------------------------------------------------------------------------


class CeilingRandom(Random):
    """Always waits the longest the backoff allows, and remembers each ceiling."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ceilings: list[float] = []

    def uniform(self, low: float, high: float) -> float:
        assert low == 0
        self.ceilings.append(high)
        return high


def test_backoff_doubles_up_to_its_cap_and_reports_once_per_failure(
    factory_class: type[GrpcFactory],
) -> None:
    settings = replace(
        TEST_SETTINGS, reconnect_backoff_initial_seconds=0.01, reconnect_backoff_max_seconds=0.05
    )

    async def scenario() -> None:
        factory = factory_class(settings)
        random = CeilingRandom()
        handler = RecordingHandler()
        sender = factory_class.transport_class(settings, rng=random)
        try:
            dead = await factory.started(RecordingHandler())
            await dead.stop()  # its port is now closed: connections are refused
            await sender.start(handler)
            sender.set_peer(NodeId(2), dead.address)
            await wait_until(
                lambda: len(random.ceilings) >= 5,
                "five failed streams",
                retry=lambda: sender.send([heartbeat(1, 2), heartbeat(1, 2)]),
            )
            assert random.ceilings[:5] == [0.01, 0.02, 0.04, 0.05, 0.05]
            # One report per failed stream, however many messages were lost with it.
            assert len(handler.unreachable) == sender.stats.stream_failures
        finally:
            await sender.stop()
            await factory.close()

    run(scenario())


def test_a_peer_that_restarts_on_the_same_address_is_reached_again(
    factory_class: type[GrpcFactory],
    caplog: pytest.LogCaptureFixture,
    logger_name: str,
) -> None:
    caplog.set_level(logging.INFO, logger=logger_name)

    async def scenario() -> None:
        factory = factory_class()
        try:
            sender_handler, first_handler, second_handler = (
                RecordingHandler(),
                RecordingHandler(),
                RecordingHandler(),
            )
            sender = await factory.started(sender_handler)
            peer = await factory.started(first_handler)
            sender.set_peer(NodeId(2), peer.address)
            sender.send([heartbeat(1, 2, 1)])
            await wait_until(lambda: bool(first_handler.delivered), "the first message")
            await peer.stop()
            await wait_until(
                lambda: sender.stats.stream_failures >= 3,
                "three failed streams while the peer is down",
                retry=lambda: sender.send([heartbeat(1, 2, 2)]),
            )
            assert NodeId(2) in sender_handler.unreachable
            await factory.started(second_handler, address=peer.address)
            await wait_until(
                lambda: bool(second_handler.delivered),
                "a message after the peer came back",
                retry=lambda: sender.send([heartbeat(1, 2, 3)]),
            )
            failures = sender.stats.stream_failures
            lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
            # Logged, but not once per failure (at most one line per peer per 10 s).
            assert 1 <= len(lines) < failures
            assert any("reachable again" in r.getMessage() for r in caplog.records)
        finally:
            await factory.close()

    run(scenario())


def test_hearing_from_a_peer_ends_its_backoff_at_once(factory_class: type[GrpcFactory]) -> None:
    """A follower killed and restarted: the leader's backoff grew while it was down (here at
    once: 30 s, and gRPC's own channel backoff as long), but the restarted follower's first
    frame to the leader makes the leader redial it now, not when the backoff runs out."""
    settings = replace(
        TEST_SETTINGS, reconnect_backoff_initial_seconds=30.0, reconnect_backoff_max_seconds=30.0
    )

    async def scenario() -> None:
        factory = factory_class(settings)
        random = CeilingRandom()
        leader = factory_class.transport_class(settings, rng=random)
        try:
            follower = await factory.started(RecordingHandler())
            await follower.stop()  # killed: its port refuses connections
            await leader.start(RecordingHandler())
            leader.set_peer(NodeId(2), follower.address)
            await wait_until(
                lambda: leader.stats.stream_failures == 1,
                "the first failed stream (and a 30 s rest)",
                retry=lambda: leader.send([heartbeat(1, 2)]),
            )
            assert random.ceilings == [30.0]
            restarted_handler = RecordingHandler()
            restarted = await factory.started(restarted_handler, address=follower.address)
            restarted.set_peer(NodeId(1), leader.address)
            restarted.send([heartbeat(2, 1)])  # say, a pre-vote after its election timeout
            await wait_until(
                lambda: bool(restarted_handler.delivered_from(NodeId(1))),
                "the leader's message to the restarted follower",
                timeout_seconds=5.0,  # far below the 30 s rest
                retry=lambda: leader.send([heartbeat(1, 2)]),
            )
            assert random.ceilings == [30.0], "no further failure, no further rest"
            assert leader.stats.stream_failures == 1
        finally:
            await leader.stop()
            await factory.close()

    run(scenario())


def test_the_default_reconnect_backoff_stays_within_an_election_timeout() -> None:
    # A restarted peer may be needed for a quorum a moment later (another one failing):
    # the default (1 s) is the default election timeout (10 ticks of 100 ms).
    assert PeerTransportSettings(cluster_id=CLUSTER_ID).reconnect_backoff_max_seconds <= 1.0


# -- peers -------------------------------------------------------------------------------------


def test_set_peer_moves_a_peer_and_remove_peer_forgets_it(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            sender_handler, old_handler, new_handler = (
                RecordingHandler(),
                RecordingHandler(),
                RecordingHandler(),
            )
            sender = await factory.started(sender_handler)
            old = await factory.started(old_handler)
            new = await factory.started(new_handler)
            sender.set_peer(NodeId(2), old.address)
            sender.send([heartbeat(1, 2, 1)])
            await wait_until(lambda: bool(old_handler.delivered), "delivery at the old address")
            sender.set_peer(NodeId(2), new.address)
            sender.send([heartbeat(1, 2, 2)])
            await wait_until(lambda: bool(new_handler.delivered), "delivery at the new address")
            assert [m.index for m in old_handler.delivered] == [1]
            assert sender.peers() == {2: new.address}
            sender.remove_peer(NodeId(2))
            sender.send([heartbeat(1, 2, 3)])
            await wait_until(lambda: bool(sender_handler.unreachable), "an unknown-peer report")
            assert sender.peers() == {}
        finally:
            await factory.close()

    run(scenario())


def test_messages_queued_for_a_removed_peer_still_go(factory_class: type[GrpcFactory]) -> None:
    """A leader removes a member when it applies the removal, in the same loop turn that
    queued the message telling that member the removal committed: dropping the queue made
    the removed member miss it, and never learn it was removed."""

    async def scenario() -> None:
        factory = factory_class()
        try:
            receiver_handler = RecordingHandler()
            sender = await factory.started(RecordingHandler())
            receiver = await factory.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            sender.send([heartbeat(1, 2, 1)])
            await wait_until(lambda: bool(receiver_handler.delivered), "a first delivery")
            sender.send([heartbeat(1, 2, 2), heartbeat(1, 2, 3)])
            sender.remove_peer(NodeId(2))  # before the sender task ran
            await wait_until(
                lambda: [m.index for m in receiver_handler.delivered] == [1, 2, 3],
                "the queued messages to arrive",
            )
            assert sender.peers() == {}
        finally:
            await factory.close()

    run(scenario())


def test_a_peer_address_that_makes_no_sense_is_reported_unreachable(
    factory_class: type[GrpcFactory],
) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            handler = RecordingHandler()
            sender = await factory.started(handler)
            sender.set_peer(NodeId(2), "not an address")
            await wait_until(
                lambda: NodeId(2) in handler.unreachable,
                "a report",
                retry=lambda: sender.send([heartbeat(1, 2)]),
            )
        finally:
            await factory.close()

    run(scenario())


def test_peers_set_before_start_are_used_once_started(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            receiver_handler = RecordingHandler()
            receiver = await factory.started(receiver_handler)
            sender = factory.make()
            sender.set_peer(NodeId(2), receiver.address)
            sender.send([heartbeat(1, 2)])  # not started: dropped silently
            await sender.start(RecordingHandler())
            sender.send([heartbeat(1, 2, 5)])
            await wait_until(lambda: bool(receiver_handler.delivered), "delivery")
            assert [m.index for m in receiver_handler.delivered] == [5]
        finally:
            await factory.close()

    run(scenario())


def test_sending_a_local_message_type_is_refused_before_anything_is_queued(
    factory_class: type[GrpcFactory],
) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            receiver_handler = RecordingHandler()
            sender = await factory.started(RecordingHandler())
            receiver = await factory.started(receiver_handler)
            sender.set_peer(NodeId(2), receiver.address)
            with pytest.raises(InvalidArgument, match="MsgHup is local"):
                sender.send([heartbeat(1, 2, 1), Message(MessageType.HUP, to=NodeId(2))])
            sender.send([heartbeat(1, 2, 2)])
            await wait_until(lambda: bool(receiver_handler.delivered), "delivery")
            assert [m.index for m in receiver_handler.delivered] == [2]
        finally:
            await factory.close()

    run(scenario())


# -- member requests ---------------------------------------------------------------------------


class SilentHandler(RecordingHandler):
    async def handle_member_request(self, request: MemberRequest) -> MemberResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_member_request_that_gets_no_answer_in_time_raises(
    factory_class: type[GrpcFactory],
) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            asker = await factory.started(RecordingHandler())
            silent = await factory.started(SilentHandler())
            with pytest.raises(TransportError, match=r"did not answer in 0\.2s"):
                await asker.member_request(
                    silent.address, MemberRequest(MemberAction.PROMOTE, NodeId(3)), 0.2
                )
        finally:
            await factory.close()

    run(scenario())


# How each transport's refusal reads: gRPC's status code, TCP's REFUSED reply frame.
REFUSED_FOR_ANOTHER_CLUSTER = {
    PEER_FACTORIES["grpc"]: "INVALID_ARGUMENT: cluster id 2",
    PEER_FACTORIES["tcp"]: "refused: cluster id 2",
}


def test_a_member_request_from_another_cluster_is_refused(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        members, strangers = factory_class(), factory_class(replace(TEST_SETTINGS, cluster_id=2))
        try:
            handler = RecordingHandler()
            member = await members.started(handler)
            stranger = await strangers.started(RecordingHandler())
            with pytest.raises(TransportError, match=REFUSED_FOR_ANOTHER_CLUSTER[factory_class]):
                await stranger.member_request(
                    member.address, MemberRequest(MemberAction.ADD_LEARNER, NodeId(3), "x:1"), 2.0
                )
            assert handler.member_requests == []
        finally:
            await members.close()
            await strangers.close()

    run(scenario())


# -- lifecycle and settings ------------------------------------------------------------------


def test_an_address_in_use_cannot_be_listened_on_twice(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            first = await factory.started(RecordingHandler())
            second = factory.make(first.address)
            with pytest.raises(TransportError, match="cannot listen on"):
                await second.start(RecordingHandler())
        finally:
            await factory.close()

    run(scenario())


def test_a_transport_starts_once(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            transport = await factory.started(RecordingHandler())
            with pytest.raises(InvalidArgument, match="running"):
                await transport.start(RecordingHandler())
            await transport.stop()
            with pytest.raises(InvalidArgument, match="stopped"):
                await transport.start(RecordingHandler())
        finally:
            await factory.close()

    run(scenario())


def test_the_bound_port_replaces_port_zero(factory_class: type[GrpcFactory]) -> None:
    async def scenario() -> None:
        factory = factory_class()
        try:
            transport = factory.make()
            assert transport.address == "127.0.0.1:0"
            await transport.start(RecordingHandler())
            host, port = transport.address.rsplit(":", 1)
            assert host == "127.0.0.1" and int(port) > 0
        finally:
            await factory.close()

    run(scenario())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"cluster_id": 0}, "cluster_id"),
        ({"listen_address": "localhost"}, "host:port"),
        ({"listen_address": "127.0.0.1:70000"}, "host:port"),
        ({"max_queue_messages": 0}, "max_queue_messages"),
        ({"max_batch_bytes": 128 * 1024 * 1024}, "max_batch_bytes exceeds"),
        ({"snapshot_chunk_bytes": 64 * 1024 * 1024}, "snapshot_chunk_bytes"),
        ({"max_receive_message_bytes": 12 * 1024 * 1024}, "max_snapshot_chunk_bytes: a chunk"),
        (
            {"max_receive_message_bytes": 20 * 1024 * 1024, "max_snapshot_chunks": 1_000_000},
            "max_snapshot_chunks .1000000.: an offer",
        ),
        ({"request_timeout_seconds": 0.0}, "request_timeout_seconds"),
        ({"shutdown_grace_seconds": -1.0}, "shutdown_grace_seconds"),
        ({"reconnect_backoff_initial_seconds": 10.0}, "reconnect_backoff_initial_seconds"),
        ({"ca_file": Path("ca.pem")}, "together"),
        ({"server_name_override": "node"}, "TLS only"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_settings_are_refused(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(TransportSettingsInvalid, match=reason):
        replace(TEST_SETTINGS, **changes)  # type: ignore[arg-type]


def test_unreadable_tls_files_are_refused(tmp_path: Path, factory_class: type[GrpcFactory]) -> None:
    # The line names the file: a node with three TLS files says which one it cannot read.
    missing = tmp_path / "missing.pem"
    settings = PeerTransportSettings(
        cluster_id=1, ca_file=missing, cert_file=missing, key_file=missing
    )
    with pytest.raises(TransportSettingsInvalid, match=r"cannot read a TLS file: .*missing\.pem"):
        factory_class.transport_class(settings)


def test_a_receiver_never_dials_the_address_a_frame_claims(
    factory_class: type[GrpcFactory],
) -> None:
    """Issue 12 A4: a frame from an unknown id with a from_address made the receiver add
    and dial that address, so any outsider chose where nodes connect. Addresses come from
    set_peer alone (the membership); the frame's claim is ignored, known peer or not."""

    async def scenario() -> None:
        factory = factory_class()
        try:
            first_handler, second_handler = RecordingHandler(), RecordingHandler()
            first = await factory.started(first_handler)
            second = await factory.started(second_handler)
            first.set_peer(NodeId(2), second.address)
            first.send([heartbeat(1, 2, 1)])
            await wait_until(lambda: bool(second_handler.delivered), "the first heartbeat")
            assert second.peers() == {}
            second.set_peer(NodeId(1), "127.0.0.1:9")
            first.send([heartbeat(1, 2, 2)])
            await wait_until(lambda: len(second_handler.delivered) == 2, "the second heartbeat")
            assert second.peers() == {1: "127.0.0.1:9"}
        finally:
            await factory.close()

    run(scenario())
