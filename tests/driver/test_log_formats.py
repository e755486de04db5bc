"""Format declarations (raftkv.raft.driver.log_formats): a node writes batch entries only
while every member has declared, through the log, that it reads them; an older member,
which never declares, keeps the whole cluster from batching."""

from __future__ import annotations

import asyncio

import pytest
from driver_helpers import memory_dict

from raftkv.raft.clock import ManualClock
from raftkv.raft.core.types import ConfState, Entry, EntryKind, NodeId
from raftkv.raft.driver.envelope import (
    MAX_DECLARED_MEMBERS,
    Declaration,
    EnvelopeError,
    RequestId,
    check_forwarded_entries,
    decode_declaration,
    decode_snapshot_envelope,
    encode_declaration,
    is_declaration,
)
from raftkv.raft.driver.log_formats import LogFormats
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.requests import Requests
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.status import NodeStats
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario
from raftkv.testing.state_machines import encode_incr

ONE, TWO, THREE, FOUR = NodeId(1), NodeId(2), NodeId(3), NodeId(4)
VOTERS = ConfState(voters=frozenset({ONE, TWO, THREE}))


def declaration(
    member: NodeId, *, applied: int = 0, known: frozenset[NodeId] = frozenset(), reads: int = 2
) -> Declaration:
    return Declaration(RequestId(member, 5, 1), reads, applied, known)


def formats_and_requests(
    node_id: NodeId, settings: NodeSettings | None = None
) -> tuple[LogFormats, Requests]:
    """One node's LogFormats and the Requests its declarations go through (incarnation 5,
    as `declaration` makes them)."""
    settings = settings or NodeSettings()
    requests = Requests(
        node_id=node_id,
        incarnation=5,
        settings=settings,
        clock=ManualClock(),
        stats=NodeStats(),
        wake=lambda: None,
        may_batch=lambda: False,
    )
    formats = LogFormats(node_id=node_id, settings=settings, clock=ManualClock(), requests=requests)
    return formats, requests


def formats_of(node_id: NodeId, settings: NodeSettings | None = None) -> LogFormats:
    return formats_and_requests(node_id, settings)[0]


# -- the envelope ------------------------------------------------------------------------------


def test_a_declaration_round_trips_and_is_told_from_proposals() -> None:
    sent = declaration(TWO, applied=41, known=frozenset({ONE, THREE}))
    data = encode_declaration(sent)
    assert is_declaration(data) and decode_declaration(data) == sent
    check_forwarded_entries([Entry(index=1, term=1, data=data)])


@pytest.mark.parametrize(
    ("mangle", "complaint"),
    [
        (lambda data: data[:20], "of 20 bytes is malformed"),
        (lambda data: data + b"\x00", "naming 1 members is malformed"),
        (lambda data: data[:-1], "naming 1 members is malformed"),
        (
            lambda data: data[:34] + (MAX_DECLARED_MEMBERS + 1).to_bytes(2, "big") + data[36:],
            "naming 1025 members",
        ),
    ],
)
def test_a_malformed_declaration_is_refused_also_when_a_follower_forwards_it(
    mangle: object, complaint: str
) -> None:
    assert callable(mangle)
    data = mangle(encode_declaration(declaration(TWO, known=frozenset({ONE}))))
    assert isinstance(data, bytes)
    with pytest.raises(EnvelopeError, match=complaint):
        decode_declaration(data)
    with pytest.raises(EnvelopeError, match=complaint):
        check_forwarded_entries([Entry(index=1, term=1, data=data)])


# -- the rule, on one node's LogFormats ----------------------------------------------------------


def test_batching_waits_for_every_member_and_stops_for_a_new_one_until_it_declares() -> None:
    formats = formats_of(ONE)
    formats.apply_conf_state(VOTERS)
    for index, member in enumerate((ONE, TWO), start=2):
        formats.apply(index, declaration(member), replayed=False)
    assert not formats.batching_allowed()
    formats.apply(4, declaration(THREE), replayed=False)
    assert formats.batching_allowed()
    # A learner counts too: until it declares, it might be an older raftkv.
    formats.apply_conf_state(ConfState(voters=VOTERS.voters, learners=frozenset({FOUR})))
    assert not formats.batching_allowed()
    formats.apply(6, declaration(FOUR), replayed=False)
    assert formats.batching_allowed()
    # A member declaring an older format stops it again.
    formats.apply(7, declaration(TWO, reads=1), replayed=False)
    assert not formats.batching_allowed()


def test_batch_proposals_off_never_batches() -> None:
    formats = formats_of(ONE, NodeSettings(batch_proposals=False))
    formats.apply_conf_state(VOTERS)
    for index, member in enumerate((ONE, TWO, THREE), start=2):
        formats.apply(index, declaration(member), replayed=False)
    assert not formats.batching_allowed()


def test_a_declaration_from_an_id_that_is_no_member_is_ignored() -> None:
    formats = formats_of(ONE)
    formats.apply_conf_state(VOTERS)
    formats.apply(2, declaration(NodeId(99)), replayed=False)
    assert formats.declared() == {}


def test_a_snapshot_adds_its_declarations_and_keeps_later_ones_of_ours() -> None:
    formats = formats_of(ONE)
    formats.apply_conf_state(VOTERS)
    formats.apply(10, declaration(ONE), replayed=False)
    # A snapshot taken by a raftkv that kept no declarations, then one that did.
    formats.learn_from_snapshot({}, VOTERS, 12)
    assert formats.declared() == {ONE: (2, 10)}
    formats.learn_from_snapshot({ONE: (2, 3), TWO: (2, 8), THREE: (2, 9)}, VOTERS, 14)
    assert formats.declared() == {ONE: (2, 10), TWO: (2, 8), THREE: (2, 9)}
    assert formats.batching_allowed()


def test_a_member_whose_view_missed_our_declaration_is_told_again() -> None:
    async def scenario() -> None:
        formats, requests = formats_and_requests(ONE)
        formats.learn_from_snapshot({}, VOTERS, 1)
        formats.start(replay_until=1)
        await asyncio.sleep(0)
        # Ours is incomplete at start (nobody declared): we declare.
        assert formats.tasks()
        # The driver's own: not a caller's pending proposal.
        assert requests.pending_proposals == 0
        ours = declaration(ONE)
        formats.apply(5, ours, replayed=False)
        requests.complete(ours.request, None)  # as the Applier does
        await asyncio.sleep(0)
        assert not formats.tasks()
        # Two had applied up to 4, before ours: it could not know it. Nothing to do.
        formats.apply(6, declaration(TWO, applied=4), replayed=False)
        # Three knew it.
        formats.apply(7, declaration(THREE, applied=6, known=frozenset({ONE})), replayed=False)
        # A replayed one is the past.
        formats.apply(8, declaration(TWO, applied=6), replayed=True)
        await asyncio.sleep(0)
        assert not formats.tasks()
        # Two had applied past ours and did not know it (a snapshot without declarations):
        # we declare again.
        formats.apply(9, declaration(TWO, applied=7, known=frozenset({TWO, THREE})), replayed=False)
        await asyncio.sleep(0)
        assert formats.tasks()
        for task in formats.tasks():
            task.cancel()

    asyncio.run(scenario())


def test_a_start_whose_view_is_complete_does_not_declare() -> None:
    async def scenario() -> None:
        formats = formats_of(ONE)
        formats.learn_from_snapshot({ONE: (2, 2), TWO: (2, 3), THREE: (2, 4)}, VOTERS, 10)
        formats.start(replay_until=12)
        formats.entries_applied(12)
        await asyncio.sleep(0)
        assert not formats.tasks() and formats.batching_allowed()

    asyncio.run(scenario())


# -- a cluster ------------------------------------------------------------------------------------


def declarations_in(cluster: LocalCluster, node_id: NodeId) -> list[tuple[int, Declaration]]:
    storage = cluster.storages[node_id]
    entries = storage.entries(storage.first_index(), storage.last_index() + 1, 1 << 30)
    return [
        (entry.index, decode_declaration(entry.data))
        for entry in entries
        if entry.kind is EntryKind.NORMAL and is_declaration(entry.data)
    ]


async def increments(cluster: LocalCluster, leader: Node, count: int) -> None:
    proposals = [leader.propose(encode_incr("n"), batchable=True) for _ in range(count)]
    await cluster.complete(asyncio.gather(*proposals))


def test_every_member_declares_once_then_every_node_batches_also_after_restarts() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.wait_for_batching()
        declared = declarations_in(cluster, leader.id)
        assert sorted(item.request.origin for _, item in declared) == [ONE, TWO, THREE]
        await increments(cluster, leader, 30)
        assert leader.stats.proposals_batched > 0
        # A restart replays the declarations from the log: none is made again.
        leader = await cluster.crash_all_and_restart()
        await cluster.wait_for_batching()
        await increments(cluster, leader, 5)
        assert len(declarations_in(cluster, leader.id)) == 3
        await cluster.stop()

    run_scenario(scenario)


def test_snapshots_carry_the_declarations_through_compaction_and_restarts() -> None:
    async def scenario() -> None:
        settings = NodeSettings(snapshot_every_entries=10, snapshot_keep_entries=0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.wait_for_batching()
        for _ in range(8):
            await cluster.complete(leader.propose(encode_incr("n")))
        await cluster.run_until(
            lambda: all(
                not declarations_in(cluster, node_id) and node.status().snapshot_index > 0
                for node_id, node in cluster.nodes.items()
            )
        )
        stored = decode_snapshot_envelope(cluster.storages[leader.id].snapshot().data)
        assert sorted(stored.formats) == [ONE, TWO, THREE]
        await cluster.crash_all_and_restart()
        await cluster.wait_for_batching()
        assert all(not declarations_in(cluster, node_id) for node_id in cluster.nodes)
        await cluster.stop()

    run_scenario(scenario)


def test_an_older_member_keeps_every_node_from_batching_until_it_is_upgraded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older raftkv never declares: node 3 plays one by never starting its LogFormats."""
    real_start = LogFormats.start

    def start_unless_older(formats: LogFormats, replay_until: int) -> None:
        if formats is not older_formats[0]:
            real_start(formats, replay_until)

    older_formats: list[LogFormats] = []
    real_init = LogFormats.__init__

    def init(formats: LogFormats, **arguments: object) -> None:
        real_init(formats, **arguments)  # type: ignore[arg-type]
        if arguments["node_id"] == THREE and not older_formats:
            older_formats.append(formats)

    monkeypatch.setattr(LogFormats, "__init__", init)
    monkeypatch.setattr(LogFormats, "start", start_unless_older)

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.run_until(lambda: len(declarations_in(cluster, leader.id)) == 2)
        await increments(cluster, leader, 30)
        assert not any(node.batching for node in cluster.nodes.values())
        assert leader.stats.proposals_batched == 0
        # Upgraded: restarted as this raftkv, it declares, and the cluster batches.
        await cluster.crash(THREE)
        await cluster.restart(THREE)
        await cluster.wait_for_batching()
        leader = await cluster.wait_for_leader()
        await increments(cluster, leader, 30)
        assert leader.stats.proposals_batched > 0
        await cluster.stop()

    run_scenario(scenario)


def test_a_new_member_declares_and_the_cluster_batches_again() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.wait_for_batching()
        joiner = await cluster.add_joiner(FOUR)
        await cluster.complete(leader.add_learner(FOUR, address_of(FOUR)))
        await cluster.wait_for_batching()
        assert joiner.batching
        assert FOUR in {item.request.origin for _, item in declarations_in(cluster, leader.id)}
        await cluster.stop()

    run_scenario(scenario)
