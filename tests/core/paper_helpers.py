"""A small harness for the Raft paper tests (`test_paper.py`).

Theory of operation
-------------------
A `Peer` is one `RawNode` over its own `MemoryStorage`, bootstrapped from a snapshot at
index 1, term 1 that names the voters, plus a list of the entries it applied. Tests that
need a node with history write entries and a hard state into the storage before the
RawNode is built (`new_peer(..., entries=..., term=...)`).

`Peer.drain()` handles Readies the way the `Ready` contract says, synchronously: persist
the snapshot, entries and hard state; collect `messages` and `persisted_messages`; apply
the committed entries (conf changes through `apply_conf_change`); `advance`. It repeats
while the node has a Ready (an `advance` can produce more work: a durable self-vote may
win an election, a durable self-append may commit) and returns every message to send.
Tests that check what happens *before* `advance` use `Peer.ready()` and `Peer.persist()`.

A `Network` holds peers and one FIFO queue of in-flight messages. `stabilize()` delivers
messages breadth-first (etcd-io/raft's `network.send`): each delivery steps the recipient
and queues whatever it then emits, until nothing is in flight. Messages from or to an
isolated or crashed node, and messages matching `drop_if`, are dropped when sent. Nothing
ticks unless a test ticks: the runs are deterministic.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from raftkv.raft.core import (
    NO_NODE,
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raftkv.raft.core.raft import Raft
from raftkv.raft.storage.memory import MemoryStorage

# A limit on everything: no scenario here needs more deliveries or Readies than this.
MAX_DELIVERIES = 10_000
MAX_READIES_PER_DRAIN = 100


def ids(*numbers: int) -> tuple[NodeId, ...]:
    return tuple(NodeId(number) for number in numbers)


def entry_data(index: int, term: int) -> bytes:
    """Content determined by (index, term): two logs holding the same (index, term) hold the
    same entry, as the Log Matching Property says they must."""
    return f"i{index}t{term}".encode()


def entries_with_terms(terms: Sequence[int], first_index: int = 2) -> list[Entry]:
    """Entries at consecutive indices from `first_index` (2: right after the bootstrap
    snapshot at index 1) with the given terms."""
    return [
        Entry(term=term, index=first_index + offset, data=entry_data(first_index + offset, term))
        for offset, term in enumerate(terms)
    ]


def bootstrap_storage(
    voters: Iterable[NodeId],
    *,
    entries: Sequence[Entry] = (),
    term: int = 1,
    vote: NodeId = NO_NODE,
    commit: int = 1,
) -> MemoryStorage:
    """A MemoryStorage as a node that already lived would have left it: the bootstrap
    snapshot (index 1, term 1, `voters`), then `entries`, then the hard state."""
    storage = MemoryStorage()
    conf_state = ConfState(voters=frozenset(voters))
    storage.apply_snapshot(Snapshot(SnapshotMetadata(index=1, term=1, conf_state=conf_state)))
    storage.append(list(entries))
    storage.set_hard_state(HardState(term=term, vote=vote, commit=commit))
    return storage


class Peer:
    """One node: a RawNode, its durable storage and what its state machine applied."""

    def __init__(self, config: Config, storage: MemoryStorage) -> None:
        self.id = config.id
        self.config = config
        self.storage = storage
        self.node = RawNode(config, storage)
        self.applied: list[Entry] = []

    @property
    def raft(self) -> Raft:
        return self.node.raft

    # -- inputs ----------------------------------------------------------------------------

    def step(self, message: Message) -> None:
        self.node.step(message)

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            self.node.tick()

    def campaign(self) -> None:
        self.node.campaign()

    def propose(self, data: bytes) -> None:
        self.node.propose(data)

    # -- the Ready contract ----------------------------------------------------------------

    def ready(self) -> Ready:
        return self.node.ready()

    def persist(self, ready: Ready) -> list[Message]:
        """Do everything `ready` asks except `advance`; return the messages to send."""
        if ready.snapshot is not None:
            self.storage.apply_snapshot(ready.snapshot)
        self.storage.append(ready.entries)
        if ready.hard_state is not None:
            self.storage.set_hard_state(ready.hard_state)
        for entry in ready.committed_entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                self.node.apply_conf_change(ConfChange.decode(entry.data))
            self.applied.append(entry)
        return [*ready.messages, *ready.persisted_messages]

    def drain(self) -> list[Message]:
        """Handle Readies until there are none; return every message to send, in order."""
        messages: list[Message] = []
        for _ in range(MAX_READIES_PER_DRAIN):
            if not self.node.has_ready():
                return messages
            ready = self.node.ready()
            messages.extend(self.persist(ready))
            self.node.advance(ready)
        raise AssertionError(f"node {self.id} still has a Ready after {MAX_READIES_PER_DRAIN}")

    def restart(self) -> None:
        """Crash and restart: everything not in storage (unstable entries, the unsent
        messages, volatile state) is lost; the state machine keeps what it applied."""
        applied_index = self.applied[-1].index if self.applied else 0
        self.config = replace(self.config, applied=applied_index)
        self.node = RawNode(self.config, self.storage)

    # -- observations ----------------------------------------------------------------------

    def log_entries(self) -> list[Entry]:
        """The whole log after the bootstrap snapshot, unstable tail included."""
        return self.raft.log.all_entries()

    def log_terms(self) -> list[int]:
        return [entry.term for entry in self.log_entries()]

    def stored_entries(self) -> list[Entry]:
        storage = self.storage
        return storage.entries(storage.first_index(), storage.last_index() + 1, 2**63 - 1)


def new_peer(
    node_id: int,
    voters: Iterable[NodeId] = ids(1, 2, 3),
    *,
    entries: Sequence[Entry] = (),
    term: int = 1,
    vote: int = 0,
    commit: int = 1,
    election_tick: int = 10,
    heartbeat_tick: int = 1,
    pre_vote: bool = False,
    check_quorum: bool = False,
    max_size_per_message: int = 1 << 20,
    seed: int | None = None,
) -> Peer:
    """A peer with the paper's plain algorithm (no PreVote, no CheckQuorum) by default."""
    storage = bootstrap_storage(
        voters, entries=entries, term=term, vote=NodeId(vote), commit=commit
    )
    config = Config(
        id=NodeId(node_id),
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        max_size_per_message=max_size_per_message,
        rng=random.Random(node_id if seed is None else seed),
    )
    return Peer(config, storage)


# -- driving one node by hand ----------------------------------------------------------------


def sent(messages: Iterable[Message], message_type: MessageType) -> list[Message]:
    return [message for message in messages if message.type is message_type]


def make_candidate(peer: Peer) -> list[Message]:
    """Campaign (no PreVote) and persist the self-vote; return the vote requests."""
    peer.campaign()
    messages = peer.drain()
    assert peer.raft.role is StateRole.CANDIDATE
    return messages


def make_leader(peer: Peer) -> list[Message]:
    """Win an election with votes from just enough peers; return what the node sent."""
    if peer.raft.role is not StateRole.CANDIDATE:
        peer.campaign()
    messages = peer.drain()  # the self-vote is durable now (a single node has won)
    for voter in sorted(peer.raft.tracker.voter_ids() - {peer.id}):
        if peer.raft.role is StateRole.LEADER:
            break
        peer.step(vote_response(voter, peer.id, peer.raft.term))
    messages.extend(peer.drain())
    assert peer.raft.role is StateRole.LEADER
    return messages


def commit_noop(leader: Peer) -> list[Message]:
    """Every follower acknowledges the leader's whole log (its no-op): the entry commits
    and every follower is in the replicate state. Returns what the leader sent."""
    assert leader.raft.role is StateRole.LEADER
    messages = leader.drain()
    last_index = leader.raft.log.last_index()
    for voter in sorted(leader.raft.tracker.voter_ids() - {leader.id}):
        leader.step(append_response(voter, leader.id, leader.raft.term, last_index))
    messages.extend(leader.drain())
    assert leader.raft.log.committed == last_index
    return messages


def vote_response(sender: NodeId, to: NodeId, term: int, *, granted: bool = True) -> Message:
    return Message(
        type=MessageType.VOTE_RESPONSE, sender=sender, to=to, term=term, reject=not granted
    )


def append_response(sender: NodeId, to: NodeId, term: int, index: int) -> Message:
    return Message(type=MessageType.APPEND_RESPONSE, sender=sender, to=to, term=term, index=index)


# -- a network of peers ----------------------------------------------------------------------


class Network:
    def __init__(self, peers: Iterable[Peer]) -> None:
        self.peers = {peer.id: peer for peer in peers}
        # Nodes cut off from everyone (their state is kept) and nodes that crashed (their
        # RawNode is rebuilt from storage by `restart`).
        self.isolated: set[NodeId] = set()
        self.crashed: set[NodeId] = set()
        # Drop any message this predicate accepts (e.g. one specific APPEND).
        self.drop_if: Callable[[Message], bool] = lambda message: False
        self.in_flight: deque[Message] = deque()
        self.delivered: list[Message] = []
        self.dropped: list[Message] = []

    @classmethod
    def create(cls, size: int, **peer_options: Any) -> Network:
        """`size` fresh peers 1..size; `peer_options` are `new_peer`'s keywords."""
        voters = ids(*range(1, size + 1))
        return cls(new_peer(node_id, voters, **peer_options) for node_id in voters)

    def __getitem__(self, node_id: int) -> Peer:
        return self.peers[NodeId(node_id)]

    # -- faults ----------------------------------------------------------------------------

    def isolate(self, *node_ids: int) -> None:
        self.isolated.update(NodeId(node_id) for node_id in node_ids)

    def reconnect(self, *node_ids: int) -> None:
        self.isolated.difference_update(NodeId(node_id) for node_id in node_ids)

    def crash(self, node_id: int) -> None:
        self.crashed.add(NodeId(node_id))

    def restart(self, node_id: int) -> None:
        self.crashed.discard(NodeId(node_id))
        self[node_id].restart()

    def _is_dropped(self, message: Message) -> bool:
        unreachable = self.isolated | self.crashed
        return message.sender in unreachable or message.to in unreachable or self.drop_if(message)

    # -- running ---------------------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if self._is_dropped(message):
                self.dropped.append(message)
            else:
                self.in_flight.append(message)

    def collect(self) -> None:
        """Handle every live node's Readies and queue what they send."""
        for node_id in sorted(self.peers):
            if node_id not in self.crashed:
                self.send(self.peers[node_id].drain())

    def stabilize(self) -> None:
        """Deliver messages until none is in flight."""
        self.collect()
        for _ in range(MAX_DELIVERIES):
            if not self.in_flight:
                return
            message = self.in_flight.popleft()
            recipient = self.peers[message.to]
            recipient.step(message)
            self.delivered.append(message)
            self.send(recipient.drain())
        raise AssertionError(f"messages still in flight after {MAX_DELIVERIES} deliveries")

    def tick(self, node_ids: Iterable[int], count: int = 1) -> None:
        """Tick the given live nodes together `count` times, stabilizing after each tick."""
        chosen = [NodeId(node_id) for node_id in node_ids]
        for _ in range(count):
            for node_id in chosen:
                if node_id not in self.crashed:
                    self.peers[node_id].tick()
            self.stabilize()

    def elect(self, node_id: int) -> Peer:
        """`node_id` campaigns and the messages run to a fixed point; it must win."""
        peer = self[node_id]
        peer.campaign()
        self.stabilize()
        assert peer.raft.role is StateRole.LEADER, f"{node_id} is {peer.raft.role}"
        return peer

    def propose(self, node_id: int, data: bytes) -> None:
        self[node_id].propose(data)
        self.stabilize()

    def leaders(self) -> list[Peer]:
        return [
            peer
            for node_id, peer in sorted(self.peers.items())
            if node_id not in self.crashed and peer.raft.role is StateRole.LEADER
        ]

    def delivered_between(
        self, sender: int, to: int, message_type: MessageType | None = None
    ) -> list[Message]:
        return [
            message
            for message in self.delivered
            if message.sender == sender
            and message.to == to
            and (message_type is None or message.type is message_type)
        ]
