"""The `RawNode` API contract (`raftkv.raft.core.rawnode`), modelled on etcd-io/raft's
`rawnode_test.go` and raft-rs's "a failed call does not mutate state" rule.

Every rejected call is checked h11-style: the observable state (status, log, queued
messages, Ready availability) is compared before and after.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
import pytest

from raftkv.raft.core import (
    NO_NODE,
    ConfChange,
    ConfChangeInvalid,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InvalidArgument,
    InvariantViolation,
    MalformedMessage,
    Message,
    MessageType,
    NodeId,
    NotLeader,
    PeerNotFound,
    ProposalDropped,
    RaftError,
    RawNode,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raftkv.raft.core.raft import Raft
from raftkv.raft.core.types import MAX_INDEX, MAX_TERM
from raftkv.raft.storage.memory import MemoryStorage

FOLLOWER = StateRole.FOLLOWER
PRE_CANDIDATE = StateRole.PRE_CANDIDATE
CANDIDATE = StateRole.CANDIDATE
LEADER = StateRole.LEADER


def ids(*numbers: int) -> frozenset[NodeId]:
    return frozenset(NodeId(number) for number in numbers)


class Driver:
    """Owns one RawNode and its MemoryStorage; processes Readies as the contract says
    (messages are dropped: these tests play the peers by hand) and checks the contract's
    numbering and `must_sync` rule on every Ready."""

    def __init__(self, node: RawNode, storage: MemoryStorage) -> None:
        self.node = node
        self.storage = storage
        self.readies: list[Ready] = []
        self.applied: list[Entry] = []
        self._persisted = storage.hard_state

    @property
    def raft(self) -> Raft:
        return self.node.raft

    def ready(self) -> Ready:
        ready = self.node.ready()
        expected_number = self.readies[-1].number + 1 if self.readies else 1
        assert ready.number == expected_number
        hard_state = ready.hard_state
        term_or_vote_changed = hard_state is not None and (
            (hard_state.term, hard_state.vote) != (self._persisted.term, self._persisted.vote)
        )
        assert ready.must_sync is (
            bool(ready.entries) or ready.snapshot is not None or term_or_vote_changed
        )
        self.readies.append(ready)
        return ready

    def persist_and_apply(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            self.storage.apply_snapshot(ready.snapshot)
        self.storage.append(ready.entries)
        if ready.hard_state is not None:
            self.storage.set_hard_state(ready.hard_state)
            self._persisted = ready.hard_state
        for entry in ready.committed_entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                self.node.apply_conf_change(ConfChange.decode(entry.data))
            self.applied.append(entry)

    def process(self) -> Ready:
        assert self.node.has_ready()
        ready = self.ready()
        self.persist_and_apply(ready)
        self.node.advance(ready)
        return ready

    def drain(self, limit: int = 20) -> list[Ready]:
        processed: list[Ready] = []
        while self.node.has_ready():
            assert len(processed) < limit, "the node keeps producing Readies"
            processed.append(self.process())
        return processed


def bootstrap(voters: tuple[int, ...] = (1,), **settings: Any) -> Driver:
    storage = MemoryStorage()
    storage.apply_snapshot(
        Snapshot(
            SnapshotMetadata(
                index=1,
                term=1,
                conf_state=ConfState(voters=ids(*voters)),
            )
        )
    )
    config = Config(id=NodeId(1), rng=random.Random(0), **settings)
    return Driver(RawNode(config, storage), storage)


def single_node_leader(**settings: Any) -> Driver:
    """A one-voter cluster that elected itself and applied its no-op (index 2)."""
    driver = bootstrap(**settings)
    driver.node.campaign()
    driver.drain()
    assert driver.raft.role is LEADER
    assert driver.raft.log.applied == 2
    return driver


def three_node_leader() -> Driver:
    """Node 1 of {1, 2, 3}, elected in term 1 with node 2's vote (PreVote off)."""
    driver = bootstrap((1, 2, 3), pre_vote=False)
    driver.node.campaign()
    driver.process()
    driver.node.step(vote_response(2, term=1))
    assert driver.raft.role is LEADER
    return driver


def follower_of(leader: int, term: int = 2, **settings: Any) -> Driver:
    """Node 1 of {1, 2, 3}, following `leader` in `term`."""
    driver = bootstrap((1, 2, 3), **settings)
    driver.node.step(
        Message(
            type=MessageType.HEARTBEAT, to=NodeId(1), sender=NodeId(leader), term=term, commit=1
        )
    )
    assert (driver.raft.role, driver.raft.leader_id) == (FOLLOWER, leader)
    driver.drain()
    return driver


def vote_response(sender: int, term: int) -> Message:
    return Message(type=MessageType.VOTE_RESPONSE, to=NodeId(1), sender=NodeId(sender), term=term)


def append_response(sender: int, term: int, index: int) -> Message:
    return Message(
        type=MessageType.APPEND_RESPONSE,
        to=NodeId(1),
        sender=NodeId(sender),
        term=term,
        index=index,
    )


def observe(node: RawNode) -> tuple[object, ...]:
    """Everything a caller (or the next Ready) could see of the node."""
    raft = node.raft
    return (
        node.status(),
        raft.log.last_index(),
        raft.log.unstable_entries(),
        raft.log.unstable.snapshot,
        list(raft.messages),
        list(raft.messages_after_append),
        list(raft.reads.read_states),
        list(raft.reads.read_only.queue),
        list(raft.reads.waiting_for_commit),
        dict(raft.tracker.votes),
        raft.uncommitted_size,
        raft.pending_conf_index,
        raft.election_elapsed,
        node.has_ready(),
    )


def assert_rejected(node: RawNode, error: type[Exception], call: Callable[[], object]) -> Exception:
    """`call` raises `error` and leaves the node exactly as it was."""
    before = observe(node)
    with pytest.raises(error) as raised:
        call()
    assert observe(node) == before
    return raised.value


def learner_change(node_id: int) -> ConfChange:
    return ConfChange((ConfChangeSingle(ConfChangeType.ADD_LEARNER_NODE, NodeId(node_id)),))


# -- elections and commitment through Readies ------------------------------------------------


def test_single_node_elects_itself_and_commits_with_pre_vote() -> None:
    driver = bootstrap()
    node = driver.node
    node.campaign()
    # The pre-vote for ourselves is only counted once the Ready carrying it is advanced.
    assert driver.raft.role is PRE_CANDIDATE

    first = driver.ready()
    assert first.soft_state is not None and first.soft_state.role is PRE_CANDIDATE
    assert first.hard_state is None  # PreVote changes neither term nor vote
    assert (first.messages, first.persisted_messages) == ((), ())  # the self-vote is local
    assert driver.raft.role is PRE_CANDIDATE
    driver.persist_and_apply(first)
    node.advance(first)
    assert driver.raft.role is CANDIDATE

    second = driver.ready()
    assert second.hard_state == HardState(term=1, vote=NodeId(1), commit=1)
    assert second.must_sync
    assert driver.raft.role is CANDIDATE  # the vote is not durable yet
    driver.persist_and_apply(second)
    node.advance(second)
    assert driver.raft.role is LEADER

    third = driver.ready()
    assert third.soft_state is not None and third.soft_state.role is LEADER
    assert [(e.index, e.term, e.data) for e in third.entries] == [(2, 1, b"")]  # the no-op
    assert third.committed_entries == ()
    driver.persist_and_apply(third)
    assert driver.raft.log.committed == 1  # our own copy counts only once advanced
    node.advance(third)
    assert driver.raft.log.committed == 2

    fourth = driver.ready()
    assert fourth.hard_state == HardState(term=1, vote=NodeId(1), commit=2)
    assert [e.index for e in fourth.committed_entries] == [2]
    assert not fourth.must_sync  # only the commit index changed
    driver.persist_and_apply(fourth)
    node.advance(fourth)

    assert not node.has_ready()
    assert [ready.number for ready in driver.readies] == [1, 2, 3, 4]
    assert node.status().applied == 2


def test_single_node_elects_itself_and_commits_without_pre_vote() -> None:
    driver = bootstrap(pre_vote=False)
    driver.node.campaign()
    assert driver.raft.role is CANDIDATE
    readies = driver.drain()
    assert len(readies) == 3
    assert [r.soft_state.role if r.soft_state else None for r in readies] == [
        CANDIDATE,
        LEADER,
        None,
    ]
    assert [e.index for e in readies[2].committed_entries] == [2]


def test_single_node_proposal_commits_after_its_entry_is_durable() -> None:
    driver = single_node_leader()
    driver.node.propose(b"hello")
    with_entry = driver.process()
    assert [(e.index, e.data) for e in with_entry.entries] == [(3, b"hello")]
    assert with_entry.committed_entries == ()
    applied = driver.process()
    assert [(e.index, e.data) for e in applied.committed_entries] == [(3, b"hello")]
    assert not driver.node.has_ready()


def test_propose_many_appends_consecutively_in_one_append_per_follower() -> None:
    driver = three_node_leader()
    driver.drain()
    node = driver.node
    last = driver.raft.log.last_index()
    # Both followers acknowledge the no-op: they move to the replicate state.
    for follower in (2, 3):
        node.step(append_response(follower, term=1, index=last))
    driver.drain()
    node.propose_many([b"a", b"b", b"c"])
    ready = driver.ready()
    assert [(e.index, e.data) for e in ready.entries] == [
        (last + 1, b"a"),
        (last + 2, b"b"),
        (last + 3, b"c"),
    ]
    appends = [m for m in ready.messages if m.type is MessageType.APPEND and m.entries]
    assert sorted(m.to for m in appends) == [2, 3]
    assert all(len(m.entries) == 3 for m in appends)


def test_propose_many_refuses_an_empty_batch_and_changes_nothing() -> None:
    driver = single_node_leader()
    before = observe(driver.node)
    assert_rejected(driver.node, InvalidArgument, lambda: driver.node.propose_many([]))
    assert observe(driver.node) == before


def test_proposal_between_ready_and_advance_is_not_acknowledged_early() -> None:
    driver = single_node_leader()
    node = driver.node
    node.propose(b"a")
    ready = driver.ready()
    assert [e.index for e in ready.entries] == [3]
    # The caller may keep proposing while the Ready is being persisted ...
    node.propose(b"b")
    driver.persist_and_apply(ready)
    node.advance(ready)
    # ... but advancing it makes only entry 3 durable: entry 4 is not committed yet.
    assert driver.raft.log.committed == 3
    following = driver.ready()
    assert [e.index for e in following.entries] == [4]
    assert [e.index for e in following.committed_entries] == [3]


def test_self_vote_counts_only_after_advance() -> None:
    driver = bootstrap((1, 2, 3), pre_vote=False)
    node = driver.node
    node.campaign()
    ready = driver.ready()
    assert {(m.type, m.to) for m in ready.messages} == {
        (MessageType.VOTE, NodeId(2)),
        (MessageType.VOTE, NodeId(3)),
    }
    # Node 2's vote arrives before our own vote is durable: one of three is not a majority.
    node.step(vote_response(2, term=1))
    assert driver.raft.role is CANDIDATE
    driver.persist_and_apply(ready)
    node.advance(ready)
    assert driver.raft.role is LEADER


def test_leader_self_acknowledgement_counts_only_after_advance() -> None:
    driver = three_node_leader()
    node = driver.node
    ready = driver.ready()
    assert [e.index for e in ready.entries] == [2]
    # A follower acknowledges the no-op before our own copy is durable: not a majority.
    node.step(append_response(2, term=1, index=2))
    assert driver.raft.log.committed == 1
    driver.persist_and_apply(ready)
    node.advance(ready)
    assert driver.raft.log.committed == 2


# -- Ready / advance misuse ------------------------------------------------------------------


def test_ready_twice_without_advance_raises() -> None:
    driver = bootstrap()
    driver.node.campaign()
    first = driver.ready()
    assert not driver.node.has_ready()  # nothing new until the outstanding Ready is done
    assert_rejected(driver.node, InvalidArgument, driver.node.ready)
    # The outstanding Ready is still the one to advance.
    driver.persist_and_apply(first)
    driver.node.advance(first)
    assert driver.ready().number == first.number + 1


def test_advance_without_ready_raises() -> None:
    driver = bootstrap()
    assert_rejected(driver.node, InvalidArgument, lambda: driver.node.advance(Ready(number=1)))


def test_advance_twice_raises() -> None:
    driver = bootstrap()
    driver.node.campaign()
    ready = driver.process()
    assert_rejected(driver.node, InvalidArgument, lambda: driver.node.advance(ready))


def test_advance_of_an_old_or_unknown_ready_raises() -> None:
    driver = bootstrap()
    driver.node.campaign()
    old = driver.process()
    current = driver.ready()
    driver.persist_and_apply(current)
    for wrong in (old, Ready(number=current.number + 1), Ready(number=0)):
        assert_rejected(driver.node, InvalidArgument, partial(driver.node.advance, wrong))
    assert driver.raft.role is CANDIDATE
    driver.node.advance(current)
    assert driver.raft.role is LEADER


def test_ready_numbers_increase_by_one() -> None:
    driver = single_node_leader()
    for data in (b"a", b"b", b"c"):
        driver.node.propose(data)
        driver.drain()
    numbers = [ready.number for ready in driver.readies]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) == 10


# -- step: local misuse and unknown peers ----------------------------------------------------

LOCAL_TYPES = sorted(
    (
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAPSHOT_STATUS,
    ),
    key=lambda kind: kind.value,
)


@pytest.mark.parametrize("message_type", LOCAL_TYPES, ids=lambda kind: kind.value)
@pytest.mark.parametrize("make", [bootstrap, single_node_leader], ids=["follower", "leader"])
def test_step_of_a_local_message_type_raises(
    message_type: MessageType, make: Callable[[], Driver]
) -> None:
    driver = make()
    message = Message(type=message_type, to=NodeId(1), sender=NodeId(1), term=1)
    assert_rejected(driver.node, InvalidArgument, lambda: driver.node.step(message))


@pytest.mark.parametrize(
    "message_type",
    [
        MessageType.APPEND_RESPONSE,
        MessageType.VOTE_RESPONSE,
        MessageType.PRE_VOTE_RESPONSE,
        MessageType.HEARTBEAT_RESPONSE,
    ],
    ids=lambda kind: kind.value,
)
@pytest.mark.parametrize("term", [1, 5])
def test_response_from_an_unknown_peer_raises(message_type: MessageType, term: int) -> None:
    driver = three_node_leader()
    message = Message(type=message_type, to=NodeId(1), sender=NodeId(9), term=term, index=2)
    assert_rejected(driver.node, PeerNotFound, lambda: driver.node.step(message))
    assert driver.raft.term == 1


# -- proposals -------------------------------------------------------------------------------


def test_proposal_on_follower_without_forwarding_raises_not_leader() -> None:
    driver = follower_of(2, disable_proposal_forwarding=True)
    error = assert_rejected(driver.node, NotLeader, lambda: driver.node.propose(b"x"))
    assert isinstance(error, NotLeader)
    assert error.leader_hint == NodeId(2)
    assert isinstance(error, ProposalDropped)  # callers may catch the general case


def test_proposal_on_follower_is_forwarded_to_the_leader() -> None:
    driver = follower_of(3)
    driver.node.propose(b"x")
    ready = driver.process()
    forwarded = [m for m in ready.messages if m.type is MessageType.PROPOSE]
    assert [(m.to, m.term, [e.data for e in m.entries]) for m in forwarded] == [
        (NodeId(3), 0, [b"x"])
    ]
    assert ready.entries == ()


@pytest.mark.parametrize("forwarding_disabled", [False, True])
def test_proposal_without_a_leader_is_dropped(forwarding_disabled: bool) -> None:
    driver = bootstrap((1, 2, 3), disable_proposal_forwarding=forwarding_disabled)
    assert driver.raft.leader_id == NO_NODE
    assert_rejected(driver.node, ProposalDropped, lambda: driver.node.propose(b"x"))


@pytest.mark.parametrize("pre_vote", [False, True])
def test_proposal_during_an_election_is_dropped(pre_vote: bool) -> None:
    driver = bootstrap((1, 2, 3), pre_vote=pre_vote)
    driver.node.campaign()
    driver.drain()
    assert driver.raft.role in (PRE_CANDIDATE, CANDIDATE)
    assert_rejected(driver.node, ProposalDropped, lambda: driver.node.propose(b"x"))


def test_proposal_over_the_uncommitted_limit_is_dropped() -> None:
    driver = single_node_leader(max_uncommitted_entries_size=10)
    node = driver.node
    node.propose(b"a" * 8)
    assert_rejected(node, ProposalDropped, lambda: node.propose(b"b" * 8))
    # Once the first proposal is committed and applied, there is room again.
    driver.drain()
    node.propose(b"b" * 8)
    assert driver.raft.log.last_index() == 4


def test_status_progress_only_on_leader() -> None:
    follower = follower_of(2)
    status = follower.node.status()
    assert status.progress == {}
    assert status.soft_state.leader_id == NodeId(2)

    leader = three_node_leader()
    status = leader.node.status()
    assert set(status.progress) == ids(1, 2, 3)
    assert status.soft_state.role is LEADER
    assert status.conf_state == ConfState(voters=ids(1, 2, 3))


@pytest.mark.parametrize("make", [partial(follower_of, 2), three_node_leader, single_node_leader])
def test_the_read_only_views_agree_with_status_and_change_nothing(
    make: Callable[[], Driver],
) -> None:
    node = make().node
    before = observe(node)
    status = node.status()
    assert node.soft_state() == status.soft_state
    assert node.term() == status.hard_state.term
    assert node.lead_transferee() == status.lead_transferee
    assert (node.committed_index(), node.applied_index()) == (status.committed, status.applied)
    assert node.last_index() == status.last_index
    assert node.conf_state() == status.conf_state
    assert node.voters() == status.conf_state.voters
    for peer in (1, 2, 3, 4):
        assert node.is_member(NodeId(peer)) is (peer in node.conf_state().voters)
        if status.progress:
            progress = status.progress.get(NodeId(peer))
            assert node.match_index(NodeId(peer)) == (progress and progress.match)
    assert node.match_index(NodeId(4)) is None
    assert observe(node) == before


# -- reads and leadership transfer -----------------------------------------------------------


def test_read_index_with_empty_context_raises() -> None:
    driver = single_node_leader()
    assert_rejected(driver.node, InvalidArgument, lambda: driver.node.read_index(b""))


def test_read_index_on_single_node_leader() -> None:
    driver = single_node_leader()
    driver.node.read_index(b"ctx")
    ready = driver.process()
    assert ready.read_states == (ReadState(index=2, request_context=b"ctx"),)


def test_read_index_without_a_leader_is_dropped() -> None:
    driver = bootstrap((1, 2, 3))
    assert_rejected(driver.node, ProposalDropped, lambda: driver.node.read_index(b"ctx"))


def test_transfer_leader_to_a_non_member_raises() -> None:
    driver = three_node_leader()
    assert_rejected(driver.node, InvalidArgument, lambda: driver.node.transfer_leader(NodeId(9)))
    assert driver.node.status().lead_transferee == NO_NODE


def test_transfer_leader_without_a_leader_is_dropped() -> None:
    driver = bootstrap((1, 2, 3))
    assert_rejected(driver.node, ProposalDropped, lambda: driver.node.transfer_leader(NodeId(2)))


# -- membership changes ----------------------------------------------------------------------


def test_conf_change_rejected_while_another_is_pending() -> None:
    driver = single_node_leader()
    node = driver.node
    node.propose_conf_change(learner_change(2))
    assert_rejected(node, ConfChangeInvalid, lambda: node.propose_conf_change(learner_change(3)))
    # Once the first change is applied, the next one is accepted.
    driver.drain()
    assert driver.node.status().conf_state == ConfState(voters=ids(1), learners=ids(2))
    node.propose_conf_change(learner_change(3))
    assert driver.raft.log.last_index() == 4


@pytest.mark.parametrize(
    "change",
    [
        ConfChange((ConfChangeSingle(ConfChangeType.REMOVE_NODE, NodeId(1)),)),  # no voters
        ConfChange(),  # leave joint while not joint
        ConfChange(
            (
                ConfChangeSingle(ConfChangeType.ADD_NODE, NodeId(2)),
                ConfChangeSingle(ConfChangeType.REMOVE_NODE, NodeId(1)),
                ConfChangeSingle(ConfChangeType.ADD_LEARNER_NODE, NodeId(2)),
            )
        ),  # joint with no incoming voter left
    ],
    ids=["remove-last-voter", "leave-non-joint", "joint-without-voters"],
)
def test_invalid_conf_change_proposal_is_rejected(change: ConfChange) -> None:
    driver = single_node_leader()
    assert_rejected(driver.node, ConfChangeInvalid, lambda: driver.node.propose_conf_change(change))


@pytest.mark.parametrize(
    ("transition", "auto_leave"),
    [(ConfChangeTransition.JOINT_IMPLICIT, True), (ConfChangeTransition.JOINT_EXPLICIT, False)],
)
def test_joint_conf_change_auto_leave(transition: ConfChangeTransition, auto_leave: bool) -> None:
    # etcd-io/raft TestRawNodeJointAutoLeave: adding a learner through joint consensus.
    driver = single_node_leader()
    node = driver.node
    node.propose_conf_change(
        ConfChange((ConfChangeSingle(ConfChangeType.ADD_LEARNER_NODE, NodeId(2)),), transition)
    )
    joint = ConfState(voters=ids(1), learners=ids(2), voters_outgoing=ids(1), auto_leave=auto_leave)
    readies = driver.drain()
    leave_entries = [
        entry
        for ready in readies
        for entry in ready.entries
        if entry.kind is EntryKind.CONF_CHANGE and entry.data == ConfChange().encode()
    ]
    if auto_leave:
        # The leader proposed leaving by itself once the joint configuration applied.
        assert [entry.index for entry in leave_entries] == [4]
        assert node.status().conf_state == ConfState(voters=ids(1), learners=ids(2))
    else:
        assert leave_entries == []
        assert node.status().conf_state == joint
        node.propose_conf_change(ConfChange())
        driver.drain()
        assert node.status().conf_state == ConfState(voters=ids(1), learners=ids(2))
    assert driver.applied[-1].kind is EntryKind.CONF_CHANGE
    assert driver.applied[-1].data == ConfChange().encode()


# -- malformed messages from peers -----------------------------------------------------------

MALFORMED_FROM_PEER = [
    ("propose-without-entries", Message(type=MessageType.PROPOSE, to=NodeId(1), sender=NodeId(2))),
    (
        "undecodable-conf-change",
        Message(
            type=MessageType.PROPOSE,
            to=NodeId(1),
            sender=NodeId(2),
            entries=(Entry(term=0, index=0, kind=EntryKind.CONF_CHANGE, data=b"\xff"),),
        ),
    ),
    (
        "read-index-without-context",
        Message(type=MessageType.READ_INDEX, to=NodeId(1), sender=NodeId(2)),
    ),
]


@pytest.mark.parametrize(
    "message",
    [message for _, message in MALFORMED_FROM_PEER],
    ids=[name for name, _ in MALFORMED_FROM_PEER],
)
def test_malformed_message_from_a_peer_does_not_break_the_leader(message: Message) -> None:
    # A misbehaving peer is not a broken invariant of ours (STYLE.md principle 7): the
    # message is ignored or rejected with a typed, non-fatal error, and nothing changes.
    driver = three_node_leader()
    driver.drain()
    driver.node.step(append_response(2, term=1, index=2))  # commit the no-op: reads are served
    driver.drain()
    before = observe(driver.node)
    try:
        driver.node.step(message)
    except RaftError as error:
        assert not isinstance(error, InvariantViolation), error
    assert observe(driver.node) == before


# -- must_sync and message ordering ----------------------------------------------------------


def test_must_sync_exactly_when_term_vote_entries_or_snapshot_change() -> None:
    driver = bootstrap((1, 2, 3))
    node = driver.node

    # Granting a vote in a new term: term and vote must be durable before the answer.
    node.step(
        Message(type=MessageType.VOTE, to=NodeId(1), sender=NodeId(2), term=2, index=1, log_term=1)
    )
    ready = driver.process()
    assert ready.hard_state == HardState(term=2, vote=NodeId(2), commit=1)
    assert ready.must_sync
    assert [(m.type, m.to) for m in ready.persisted_messages] == [
        (MessageType.VOTE_RESPONSE, NodeId(2))
    ]
    assert ready.messages == ()  # a vote is never sent before it is durable

    # New entries, same term and vote.
    node.step(
        Message(
            type=MessageType.APPEND,
            to=NodeId(1),
            sender=NodeId(2),
            term=2,
            index=1,
            log_term=1,
            entries=(Entry(term=2, index=2),),
            commit=1,
        )
    )
    ready = driver.process()
    assert ready.hard_state is None
    assert [e.index for e in ready.entries] == [2]
    assert ready.must_sync
    assert [(m.type, m.index) for m in ready.persisted_messages] == [
        (MessageType.APPEND_RESPONSE, 2)
    ]

    # Only the commit index moves: no sync needed.
    node.step(Message(type=MessageType.HEARTBEAT, to=NodeId(1), sender=NodeId(2), term=2, commit=2))
    ready = driver.process()
    assert ready.hard_state == HardState(term=2, vote=NodeId(2), commit=2)
    assert [e.index for e in ready.committed_entries] == [2]
    assert not ready.must_sync

    # Only messages.
    node.step(Message(type=MessageType.HEARTBEAT, to=NodeId(1), sender=NodeId(2), term=2, commit=2))
    ready = driver.process()
    assert (ready.hard_state, ready.entries, ready.snapshot) == (None, (), None)
    assert [m.type for m in ready.messages] == [MessageType.HEARTBEAT_RESPONSE]
    assert not ready.must_sync

    # A snapshot from a leader of a newer term.
    snapshot = Snapshot(SnapshotMetadata(index=10, term=3, conf_state=ConfState(ids(1, 2, 3))))
    node.step(
        Message(
            type=MessageType.SNAPSHOT, to=NodeId(1), sender=NodeId(3), term=3, snapshot=snapshot
        )
    )
    ready = driver.process()
    assert ready.snapshot == snapshot
    assert ready.hard_state == HardState(term=3, vote=NO_NODE, commit=10)
    assert ready.must_sync
    assert driver.node.status().applied == 10

    # A snapshot alone (same term, no vote change) still needs a sync.
    newer = Snapshot(SnapshotMetadata(index=20, term=3, conf_state=ConfState(ids(1, 2, 3))))
    node.step(
        Message(type=MessageType.SNAPSHOT, to=NodeId(1), sender=NodeId(3), term=3, snapshot=newer)
    )
    ready = driver.process()
    assert ready.snapshot == newer
    assert ready.hard_state == HardState(term=3, vote=NO_NODE, commit=20)
    assert ready.must_sync
    assert driver.storage.snapshot() == newer


def test_must_sync_false_for_soft_state_only() -> None:
    driver = bootstrap((1, 2, 3))  # PreVote on: campaigning changes no durable state
    driver.node.campaign()
    ready = driver.process()
    assert ready.soft_state is not None and ready.soft_state.role is PRE_CANDIDATE
    assert ready.hard_state is None
    assert not ready.must_sync
    assert {m.type for m in ready.messages} == {MessageType.PRE_VOTE}


# -- restart ---------------------------------------------------------------------------------


def restarted(applied: int = 0, max_committed_size_per_ready: int = 4 << 20) -> Driver:
    storage = MemoryStorage()
    storage.apply_snapshot(
        Snapshot(SnapshotMetadata(index=1, term=1, conf_state=ConfState(voters=ids(1))))
    )
    storage.append([Entry(term=1, index=i, data=b"0123456789") for i in range(2, 7)])
    storage.set_hard_state(HardState(term=1, commit=5))
    config = Config(
        id=NodeId(1),
        rng=random.Random(0),
        applied=applied,
        max_committed_size_per_ready=max_committed_size_per_ready,
    )
    return Driver(RawNode(config, storage), storage)


def test_restart_replays_committed_entries() -> None:
    driver = restarted()
    ready = driver.process()
    assert [e.index for e in ready.committed_entries] == [2, 3, 4, 5]
    assert (ready.hard_state, ready.soft_state, ready.entries) == (None, None, ())
    assert not ready.must_sync
    assert not driver.node.has_ready()
    assert driver.node.status().applied == 5


def test_restart_skips_applied_entries() -> None:
    driver = restarted(applied=3)
    ready = driver.process()
    assert [e.index for e in ready.committed_entries] == [4, 5]


def test_restart_with_everything_applied_has_no_ready() -> None:
    driver = restarted(applied=5)
    assert not driver.node.has_ready()


def test_committed_entries_are_paginated() -> None:
    driver = restarted(max_committed_size_per_ready=20)
    readies = driver.drain()
    assert [[e.index for e in r.committed_entries] for r in readies] == [[2, 3], [4, 5]]
    assert driver.node.status().applied == 5


# -- learning the commit index from a vote refusal -----------------------------------------


def _candidate_with_log(terms: tuple[int, ...], commit: int) -> RawNode:
    """Node 1 of (1, 2, 3) holding entries 2.. with `terms`, campaigning (no PreVote)."""
    storage = MemoryStorage()
    voters = frozenset({NodeId(1), NodeId(2), NodeId(3)})
    storage.apply_snapshot(Snapshot(SnapshotMetadata(1, 1, ConfState(voters=voters))))
    storage.append([Entry(term=term, index=2 + offset) for offset, term in enumerate(terms)])
    storage.set_hard_state(HardState(term=max(terms), vote=NO_NODE, commit=commit))
    node = RawNode(
        Config(id=NodeId(1), pre_vote=False, check_quorum=False, rng=random.Random(0)), storage
    )
    node.campaign()
    return node


def _refusal(term: int, commit: int, log_term: int) -> Message:
    return Message(
        type=MessageType.VOTE_RESPONSE,
        to=NodeId(1),
        sender=NodeId(2),
        term=term,
        reject=True,
        commit=commit,
        log_term=log_term,
    )


def test_candidate_adopts_commit_from_a_refusal_whose_entry_matches() -> None:
    # Log Matching: the voter's committed entry at 4 has term 2, so does ours; everything up
    # to 4 is identical and committed.
    node = _candidate_with_log((1, 2, 2, 2), commit=1)
    term = node.raft.term
    node.step(_refusal(term, commit=4, log_term=2))
    assert node.raft.log.committed == 4


def test_candidate_ignores_commit_from_a_refusal_whose_entry_differs() -> None:
    # Our entry at 4 has term 2, the voter's term 3: our logs differ there, nothing learned.
    node = _candidate_with_log((1, 2, 2, 2), commit=1)
    term = node.raft.term
    node.step(_refusal(term, commit=4, log_term=3))
    assert node.raft.log.committed == 1
    # Beyond our log: nothing learned either.
    node.step(_refusal(term, commit=9, log_term=2))
    assert node.raft.log.committed == 1


# -- values from a buggy or hostile peer -----------------------------------------------------
# What a peer says is believed only as far as it can be true (raft.py, rule 6); numbers a
# correct peer never sends are refused before they reach the state (check_peer_message).


def follower_with_log(leader: int = 2, term: int = 2, last_index: int = 3) -> Driver:
    """Node 1 of {1, 2, 3} following `leader` in `term`, holding entries 2..last_index of
    that term, of which only the bootstrap entry (1) is known committed."""
    driver = follower_of(leader, term)
    driver.node.step(
        Message(
            type=MessageType.APPEND,
            to=NodeId(1),
            sender=NodeId(leader),
            term=term,
            log_term=1,
            index=1,
            entries=tuple(Entry(term, index) for index in range(2, last_index + 1)),
            commit=1,
        )
    )
    driver.drain()
    assert (driver.raft.log.last_index(), driver.raft.log.committed) == (last_index, 1)
    return driver


def heartbeat(sender: int, term: int, commit: int = 0) -> Message:
    return Message(
        type=MessageType.HEARTBEAT, to=NodeId(1), sender=NodeId(sender), term=term, commit=commit
    )


def sent_messages(driver: Driver) -> list[Message]:
    return [message for ready in driver.drain() for message in ready.messages]


def test_a_heartbeat_commit_beyond_the_log_is_answered_but_not_believed() -> None:
    """Issue 12 A2: one heartbeat naming a commit index past the follower's log used to stop
    the node ("commit index ... is beyond the last index"). A correct leader never sends
    one; committing even up to our last index on its word could commit a tail the leader
    never matched, so the commit is ignored while the heartbeat is still answered."""
    driver = follower_with_log(last_index=3)
    driver.node.step(heartbeat(2, term=2, commit=MAX_INDEX))
    assert driver.raft.log.committed == 1
    [response] = sent_messages(driver)
    assert (response.type, response.to, response.commit) == (
        MessageType.HEARTBEAT_RESPONSE,
        2,
        1,
    )
    # A commit the log holds is taken as before.
    driver.node.step(heartbeat(2, term=2, commit=3))
    assert driver.raft.log.committed == 3


@pytest.mark.parametrize(
    "message",
    [
        heartbeat(2, term=2, commit=2**64 - 1),
        heartbeat(2, term=2**64 - 1),
        heartbeat(2, term=MAX_TERM + 1),
        msgspec.structs.replace(heartbeat(2, term=2), index=MAX_INDEX + 1),
        heartbeat(2, term=0),
        heartbeat(0, term=2),
        msgspec.structs.replace(heartbeat(2, term=2), to=NodeId(3)),
    ],
    ids=[
        "commit 2**64-1",
        "term 2**64-1",
        "term past MAX_TERM",
        "index past MAX_INDEX",
        "no term",
        "no sender",
        "for another node",
    ],
)
def test_a_number_no_correct_peer_sends_is_refused_and_changes_nothing(message: Message) -> None:
    """Issue 12 A3: one heartbeat with term 2**64-1 made every node adopt a term whose
    successor cannot be encoded. Terms and indexes are bounded at the core's boundary (in
    process transports included), so nothing a peer sends gets near the encodable limit."""
    driver = follower_with_log()
    assert_rejected(driver.node, MalformedMessage, lambda: driver.node.step(message))
    assert driver.raft.term == 2


@pytest.mark.parametrize("kind", [MessageType.PROPOSE, MessageType.READ_INDEX])
def test_a_request_forwarded_back_to_its_proposer_is_taken(kind: MessageType) -> None:
    """A forwarded request keeps its proposer as sender. Forwarded to a leader that lost
    leadership to the proposer, it comes back with sender == to: a correct message (the
    swarm simulator's seeds 148 and 150 found it refused as malformed)."""
    driver = single_node_leader()
    last = driver.raft.log.last_index()
    driver.node.step(
        Message(type=kind, to=NodeId(1), sender=NodeId(1), entries=(Entry(0, 0, data=b"x"),))
    )
    ready = driver.drain()
    if kind is MessageType.PROPOSE:
        assert driver.raft.log.last_index() == last + 1
    else:
        assert [read.request_context for r in ready for read in r.read_states] == [b"x"]
    # Anything else from a node to itself is no peer's message.
    assert_rejected(
        driver.node,
        MalformedMessage,
        lambda: driver.node.step(heartbeat(1, term=driver.raft.term)),
    )


def test_a_node_at_the_largest_term_never_campaigns() -> None:
    """MAX_TERM has no successor: a node pushed there stays a follower (only a recovery
    resets its term) instead of producing a term nothing can encode."""
    driver = follower_of(2, term=MAX_TERM)
    for _ in range(3 * driver.raft.config.election_tick):
        driver.node.tick()
    driver.node.campaign()
    assert (driver.raft.role, driver.raft.term) == (FOLLOWER, MAX_TERM)
    assert all(message.term <= MAX_TERM for message in sent_messages(driver))


def test_a_stored_term_beyond_the_largest_is_refused_at_start() -> None:
    storage = MemoryStorage()
    storage.apply_snapshot(
        Snapshot(SnapshotMetadata(index=1, term=1, conf_state=ConfState(voters=ids(1))))
    )
    storage.set_hard_state(HardState(term=2**64 - 1, commit=1))
    with pytest.raises(InvariantViolation, match="recover --force-new-cluster"):
        RawNode(Config(id=NodeId(1), rng=random.Random(0)), storage)


def test_timeout_now_is_obeyed_only_from_the_leader_followed_in_this_term() -> None:
    """Issue 12 A4: one forged MsgTimeoutNow moved leadership at once."""
    driver = follower_of(2, term=2)
    timeout_now = Message(type=MessageType.TIMEOUT_NOW, to=NodeId(1), term=2)
    driver.node.step(msgspec.structs.replace(timeout_now, sender=NodeId(3)))
    assert (driver.raft.role, driver.raft.term, driver.raft.leader_id) == (FOLLOWER, 2, 2)
    # From a newer term it cannot be our leader's: a leader sends TimeoutNow only to a
    # follower that acknowledged its log in its term.
    driver.node.step(msgspec.structs.replace(timeout_now, sender=NodeId(2), term=3))
    assert (driver.raft.role, driver.raft.term) == (FOLLOWER, 3)
    driver.drain()
    driver.node.step(heartbeat(2, term=3))
    driver.node.step(msgspec.structs.replace(timeout_now, sender=NodeId(2), term=3))
    assert (driver.raft.role, driver.raft.term) == (CANDIDATE, 4)


@pytest.mark.parametrize("message_type", [MessageType.HEARTBEAT, MessageType.APPEND])
def test_a_second_leader_in_one_term_is_ignored(message_type: MessageType) -> None:
    """Two leaders cannot share a term (Election Safety): a follower keeps the one it has
    and neither commits nor appends at the word of the other."""
    driver = follower_with_log(leader=2, term=2, last_index=3)
    forged = Message(
        type=message_type,
        to=NodeId(1),
        sender=NodeId(3),
        term=2,
        log_term=2,
        index=3,
        entries=(Entry(2, 4, data=b"forged"),) if message_type is MessageType.APPEND else (),
        commit=3,
    )
    driver.node.step(forged)
    assert driver.raft.leader_id == 2
    assert (driver.raft.log.last_index(), driver.raft.log.committed) == (3, 1)
    assert sent_messages(driver) == []


def test_the_leader_ignores_an_acknowledgement_beyond_its_log() -> None:
    """A follower cannot hold entries the leader never had; tracking such a match would
    send the leader looking for them (and then for a snapshot) forever."""
    driver = three_node_leader()
    driver.drain()
    last_index = driver.raft.log.last_index()
    driver.node.step(append_response(2, term=1, index=MAX_INDEX))
    assert driver.raft.tracker.progress[NodeId(2)].match == 0
    assert all(message.type is not MessageType.SNAPSHOT for message in sent_messages(driver))
    driver.node.step(append_response(2, term=1, index=last_index))
    assert driver.raft.tracker.progress[NodeId(2)].match == last_index


def test_a_follower_cannot_claim_more_commit_than_the_leader_told_it() -> None:
    driver = three_node_leader()
    driver.drain()
    driver.node.step(
        Message(
            type=MessageType.HEARTBEAT_RESPONSE,
            to=NodeId(1),
            sender=NodeId(2),
            term=1,
            commit=MAX_INDEX,
        )
    )
    assert driver.raft.tracker.progress[NodeId(2)].commit_known == driver.raft.log.committed
