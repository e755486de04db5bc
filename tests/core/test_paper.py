"""One test per claim of §5 of the Raft paper (Ongaro & Ousterhout, "In Search of an
Understandable Consensus Algorithm", extended version), after etcd-io/raft's
`raft_paper_test.go`.

Each docstring starts with the section and states the claim, quoting the paper where it
can. Nodes run the paper's plain algorithm unless a test says otherwise: PreVote (thesis
§9.6) and CheckQuorum (thesis §6.2) are off, and the few tests that turn them on say so.

Index layout: every node starts from a bootstrap snapshot at index 1, term 1 (see
`paper_helpers`), so the paper's index 1 is that snapshot and log entries start at index 2.
Figures 7 and 8 fit this layout: in both, every log starts with a term-1 entry at index 1.
A new leader appends an empty entry of its term (thesis §6.4); tests account for it.
"""

from __future__ import annotations

import pytest
from paper_helpers import (
    Network,
    Peer,
    append_response,
    commit_noop,
    entries_with_terms,
    entry_data,
    ids,
    make_candidate,
    make_leader,
    new_peer,
    sent,
    vote_response,
)

from raftkv.raft.core import (
    NO_NODE,
    Entry,
    HardState,
    Message,
    MessageType,
    NodeId,
    StateRole,
)

ONE = NodeId(1)
TWO = NodeId(2)
THREE = NodeId(3)


def _peer_in_role(role: StateRole) -> Peer:
    """Node 1 of (1, 2, 3) in `role`: a follower at term 1, or a candidate or leader at 2."""
    peer = new_peer(1)
    match role:
        case StateRole.FOLLOWER:
            peer.drain()
        case StateRole.CANDIDATE:
            make_candidate(peer)
        case StateRole.LEADER:
            make_leader(peer)
            commit_noop(peer)
        case _:
            raise AssertionError(f"no paper role {role}")
    assert peer.raft.role is role
    return peer


def _append(
    sender: int,
    to: int,
    term: int,
    *,
    index: int,
    log_term: int,
    entries: list[Entry] | tuple[Entry, ...] = (),
    commit: int = 1,
) -> Message:
    return Message(
        type=MessageType.APPEND,
        sender=NodeId(sender),
        to=NodeId(to),
        term=term,
        index=index,
        log_term=log_term,
        entries=tuple(entries),
        commit=commit,
    )


def _vote_request(sender: int, to: int, term: int, *, index: int, log_term: int) -> Message:
    return Message(
        type=MessageType.VOTE,
        sender=NodeId(sender),
        to=NodeId(to),
        term=term,
        index=index,
        log_term=log_term,
    )


def _tick_until_leader(net: Network, node_ids: list[int], limit: int = 100) -> Peer:
    """Tick `node_ids` together until one of them leads; return it."""
    for _ in range(limit):
        net.tick(node_ids)
        leaders = [
            net[node_id] for node_id in node_ids if net[node_id].raft.role is StateRole.LEADER
        ]
        if leaders:
            [leader] = leaders
            return leader
    raise AssertionError(f"none of {node_ids} became leader within {limit} ticks")


def _ticks_until_election(peer: Peer, *, term: int, limit: int) -> int:
    """Tick `peer` until its term passes `term`; return how many ticks that took."""
    for elapsed in range(1, limit + 1):
        peer.tick()
        if peer.raft.term > term:
            return elapsed
    raise AssertionError(f"node {peer.id} did not start an election within {limit} ticks")


# == §5.1 Raft basics: terms =================================================================


@pytest.mark.parametrize("role", [StateRole.FOLLOWER, StateRole.CANDIDATE, StateRole.LEADER])
@pytest.mark.parametrize(
    "message_type",
    [
        MessageType.APPEND,
        MessageType.HEARTBEAT,
        MessageType.VOTE,
        MessageType.APPEND_RESPONSE,
        MessageType.VOTE_RESPONSE,
    ],
)
def test_node_adopts_higher_term_and_becomes_follower(
    role: StateRole, message_type: MessageType
) -> None:
    """Reference: §5.1. "If one server's current term is smaller than the other's, then it
    updates its current term to the larger value. If a candidate or leader discovers that
    its term is out of date, it immediately reverts to follower state." This holds in every
    role, for requests and responses alike, and the new term is persisted."""
    peer = _peer_in_role(role)
    higher = peer.raft.term + 1
    peer.step(
        Message(
            type=message_type,
            sender=TWO,
            to=ONE,
            term=higher,
            index=peer.raft.log.last_index(),
            log_term=peer.raft.log.last_term(),
            reject=message_type is MessageType.VOTE_RESPONSE,
        )
    )

    assert peer.raft.term == higher
    assert peer.raft.role is StateRole.FOLLOWER
    # Only AppendEntries and heartbeats come from the leader of the new term.
    from_leader = message_type in (MessageType.APPEND, MessageType.HEARTBEAT)
    assert peer.raft.leader_id == (TWO if from_leader else NO_NODE)
    peer.drain()
    assert peer.storage.hard_state.term == higher


@pytest.mark.parametrize("guards", [False, True], ids=["plain", "prevote+checkquorum"])
@pytest.mark.parametrize(
    "message_type", [MessageType.APPEND, MessageType.HEARTBEAT, MessageType.VOTE]
)
def test_node_rejects_request_with_stale_term(message_type: MessageType, guards: bool) -> None:
    """Reference: §5.1. "If a server receives a request with a stale term number, it rejects
    the request." A request from term 2 at a node in term 3 changes nothing: no entry is
    appended, no commit index moves, no vote is granted, no leader is recognized and the
    election timer is not reset. Whatever the node answers carries its own, newer term."""
    peer = new_peer(1, term=3, pre_vote=guards, check_quorum=guards)
    peer.drain()
    peer.tick(3)
    hard_state_before = peer.raft.hard_state()
    log_before = peer.log_entries()
    stale = {
        MessageType.APPEND: _append(
            2, 1, 2, index=1, log_term=1, entries=entries_with_terms([2]), commit=2
        ),
        MessageType.HEARTBEAT: Message(
            type=MessageType.HEARTBEAT, sender=TWO, to=ONE, term=2, commit=1
        ),
        MessageType.VOTE: _vote_request(2, 1, 2, index=100, log_term=2),
    }[message_type]

    peer.step(stale)
    answers = peer.drain()

    assert peer.raft.hard_state() == hard_state_before
    assert peer.log_entries() == log_before
    assert peer.raft.leader_id == NO_NODE
    assert peer.raft.election_elapsed == 3
    assert all(answer.term == 3 for answer in answers)
    assert not [
        answer
        for answer in sent(answers, MessageType.VOTE_RESPONSE)
        if not answer.reject and answer.term == 2
    ]


def test_stale_leader_steps_down_when_a_response_carries_a_newer_term() -> None:
    """Reference: §5.1. "Current terms are exchanged whenever servers communicate"; a leader
    that learns of a newer term "immediately reverts to follower state". A leader cut off
    while the others elected a new one learns the new term from their answers to its stale
    AppendEntries and steps down; its stale entry is appended nowhere else. (PreVote and
    CheckQuorum on: the answer to a stale AppendEntries is what carries the newer term.)"""
    net = Network.create(3, pre_vote=True, check_quorum=True)
    net.elect(1)
    net.isolate(1)
    new_leader = _tick_until_leader(net, [2, 3])
    assert new_leader.raft.term == net[1].raft.term + 1
    net.reconnect(1)

    net[1].propose(b"stale")
    net.stabilize()

    assert net[1].raft.role is StateRole.FOLLOWER
    assert net[1].raft.term == new_leader.raft.term
    for node_id in (2, 3):
        assert b"stale" not in [entry.data for entry in net[node_id].log_entries()]
    assert net.leaders() == [new_leader]


# == §5.2 Leader election ====================================================================


def test_node_starts_as_follower_and_restarts_as_follower() -> None:
    """Reference: §5.2. "When servers start up, they begin as followers." A node that was
    leader also comes back as a follower after a crash, keeping its persisted term."""
    peer = new_peer(1)
    assert peer.raft.role is StateRole.FOLLOWER
    assert peer.raft.leader_id == NO_NODE
    assert peer.raft.term == 1

    make_leader(peer)
    term = peer.raft.term
    peer.restart()

    assert peer.raft.role is StateRole.FOLLOWER
    assert peer.raft.leader_id == NO_NODE
    assert peer.raft.term == term
    assert peer.raft.vote == ONE


def test_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    """Reference: §5.2. "Leaders send periodic heartbeats (AppendEntries RPCs that carry no
    log entries) to all followers in order to maintain their authority." One round goes to
    every follower each heartbeat interval, and none in between."""
    leader = new_peer(1, heartbeat_tick=2, election_tick=10)
    make_leader(leader)
    commit_noop(leader)
    committed = leader.raft.log.committed

    for _ in range(3):
        leader.tick()
        assert leader.drain() == []
        leader.tick()
        heartbeats = leader.drain()
        assert [(m.type, m.to, m.term, m.commit) for m in heartbeats] == [
            (MessageType.HEARTBEAT, TWO, 2, committed),
            (MessageType.HEARTBEAT, THREE, 2, committed),
        ]
        assert all(not message.entries for message in heartbeats)


@pytest.mark.parametrize("role", [StateRole.FOLLOWER, StateRole.CANDIDATE])
def test_election_timeout_starts_an_election(role: StateRole) -> None:
    """Reference: §5.2. "If a follower receives no communication over a period of time
    called the election timeout, then it ... begins an election ... a follower increments
    its current term and transitions to candidate state. It then votes for itself and
    issues RequestVote RPCs in parallel to each of the other servers." A candidate whose
    election timed out does the same in the next term."""
    peer = _peer_in_role(role)
    term = peer.raft.term
    timeout = peer.raft.randomized_election_timeout

    peer.tick(timeout - 1)
    assert peer.drain() == []
    assert peer.raft.term == term

    peer.tick()
    ready = peer.ready()

    assert peer.raft.role is StateRole.CANDIDATE
    assert peer.raft.term == term + 1
    assert ready.hard_state == HardState(term=term + 1, vote=ONE, commit=1)
    assert ready.must_sync
    assert [(m.type, m.to, m.term, m.index, m.log_term) for m in ready.messages] == [
        (MessageType.VOTE, TWO, term + 1, 1, 1),
        (MessageType.VOTE, THREE, term + 1, 1, 1),
    ]


@pytest.mark.parametrize(
    ("size", "votes", "expected_role"),
    [
        (1, {}, StateRole.LEADER),
        (3, {2: True, 3: True}, StateRole.LEADER),
        (3, {2: True}, StateRole.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, StateRole.LEADER),
        (5, {2: True, 3: True, 4: True}, StateRole.LEADER),
        (5, {2: True, 3: True}, StateRole.LEADER),
        (5, {2: False, 3: True, 4: True}, StateRole.LEADER),
        # No majority either way yet: keep waiting (the timeout will start a new election).
        (3, {}, StateRole.CANDIDATE),
        (5, {2: True}, StateRole.CANDIDATE),
        (5, {2: True, 3: False, 4: False}, StateRole.CANDIDATE),
        # A majority refused: this election is lost.
        (3, {2: False, 3: False}, StateRole.FOLLOWER),
        (5, {2: False, 3: False, 4: False}, StateRole.FOLLOWER),
        (5, {2: True, 3: False, 4: False, 5: False}, StateRole.FOLLOWER),
    ],
    ids=str,
)
def test_candidate_wins_with_majority_or_loses_or_waits(
    size: int, votes: dict[int, bool], expected_role: StateRole
) -> None:
    """Reference: §5.2. "A candidate wins an election if it receives votes from a majority
    of the servers in the full cluster for the same term." Without a majority it stays a
    candidate until another leader appears or its election times out; once a majority has
    refused it cannot win and returns to follower."""
    peer = new_peer(1, ids(*range(1, size + 1)))
    peer.campaign()
    peer.drain()
    term = 2
    for voter, granted in votes.items():
        peer.step(vote_response(NodeId(voter), ONE, term, granted=granted))
    peer.drain()

    assert peer.raft.role is expected_role
    assert peer.raft.term == term


@pytest.mark.parametrize(
    ("voted_for", "candidate", "granted"),
    [
        (0, 2, True),
        (0, 3, True),
        (2, 2, True),  # a retransmitted request from the candidate we chose
        (3, 3, True),
        (2, 3, False),
        (3, 2, False),
    ],
)
def test_follower_votes_at_most_once_per_term(
    voted_for: int, candidate: int, granted: bool
) -> None:
    """Reference: §5.2. "Each server will vote for at most one candidate in a given term, on
    a first-come-first-served basis." The vote is persisted before it is announced: the
    answer is a `persisted_messages` entry of the Ready whose hard state holds the vote."""
    peer = new_peer(1, term=1, vote=voted_for)
    peer.drain()

    peer.step(_vote_request(candidate, 1, 1, index=1, log_term=1))
    ready = peer.ready()

    assert [(m.type, m.to, m.term, m.reject) for m in ready.persisted_messages] == [
        (MessageType.VOTE_RESPONSE, NodeId(candidate), 1, not granted)
    ]
    assert sent(ready.messages, MessageType.VOTE_RESPONSE) == []
    expected_vote = candidate if granted else voted_for
    assert peer.raft.vote == expected_vote
    if voted_for == 0 and granted:
        assert ready.hard_state == HardState(term=1, vote=NodeId(candidate), commit=1)


def test_voter_grants_first_candidate_of_a_term_and_refuses_the_second() -> None:
    """Reference: §5.2. Two candidates of the same term ask one voter: the first request
    gets the vote ("first-come-first-served"), the second is refused, and so at most one
    candidate can win a given term (Election Safety, figure 3)."""
    voter = new_peer(3)
    voter.drain()

    voter.step(_vote_request(1, 3, 2, index=1, log_term=1))
    voter.step(_vote_request(2, 3, 2, index=1, log_term=1))
    answers = sent(voter.drain(), MessageType.VOTE_RESPONSE)

    assert [(m.to, m.term, m.reject) for m in answers] == [(ONE, 2, False), (TWO, 2, True)]
    assert voter.storage.hard_state.vote == ONE


@pytest.mark.parametrize("leader_term_offset", [0, 1], ids=["same-term", "higher-term"])
def test_candidate_steps_down_on_append_from_leader(leader_term_offset: int) -> None:
    """Reference: §5.2. "While waiting for votes, a candidate may receive an AppendEntries
    RPC from another server claiming to be leader. If the leader's term ... is at least as
    large as the candidate's current term, then the candidate recognizes the leader as
    legitimate and returns to follower state." It also accepts the entries."""
    peer = _peer_in_role(StateRole.CANDIDATE)
    term = peer.raft.term + leader_term_offset
    entry = Entry(term=term, index=2, data=b"from leader")

    peer.step(_append(2, 1, term, index=1, log_term=1, entries=[entry]))
    answers = peer.drain()

    assert peer.raft.role is StateRole.FOLLOWER
    assert peer.raft.term == term
    assert peer.raft.leader_id == TWO
    assert peer.log_entries() == [entry]
    assert [(m.type, m.to, m.reject, m.index) for m in answers] == [
        (MessageType.APPEND_RESPONSE, TWO, False, 2)
    ]


def test_split_vote_times_out_into_a_new_election() -> None:
    """Reference: §5.2. "If many followers become candidates at the same time, votes could
    be split so that no candidate obtains a majority. When this happens, each candidate
    will time out and start a new election by incrementing its term." Here 4 nodes split
    2–2 in term 2; nobody leads term 2, and the first candidate to time out wins term 3."""
    net = Network.create(4)
    split = {(ONE, NodeId(4)), (TWO, THREE)}
    net.drop_if = lambda m: m.type is MessageType.VOTE and (m.sender, m.to) in split
    net[1].campaign()
    net[2].campaign()
    net.stabilize()

    assert [net[node_id].raft.role for node_id in (1, 2)] == [StateRole.CANDIDATE] * 2
    assert net.leaders() == []
    assert all(net[node_id].raft.term == 2 for node_id in (1, 2, 3, 4))

    net.drop_if = lambda m: False
    net.tick([1], net[1].raft.randomized_election_timeout)

    assert [peer.id for peer in net.leaders()] == [ONE]
    assert all(net[node_id].raft.term == 3 for node_id in (1, 2, 3, 4))
    assert all(net[node_id].raft.leader_id == ONE for node_id in (1, 2, 3, 4))


@pytest.mark.parametrize("role", [StateRole.FOLLOWER, StateRole.CANDIDATE])
def test_election_timeouts_are_randomized_over_one_to_two_timeouts(role: StateRole) -> None:
    """Reference: §5.2. "Raft uses randomized election timeouts to ensure that split votes
    are rare ... election timeouts are chosen randomly from a fixed interval (e.g.,
    150–300ms)." Over many seeds, the ticks until a follower or candidate starts an
    election cover every value in [election_tick, 2 * election_tick) and nothing else."""
    election_tick = 10
    observed = set()
    for seed in range(200):
        peer = new_peer(1, election_tick=election_tick, seed=seed)
        if role is StateRole.CANDIDATE:
            make_candidate(peer)
        observed.add(_ticks_until_election(peer, term=peer.raft.term, limit=2 * election_tick))

    assert observed == set(range(election_tick, 2 * election_tick))


def test_randomized_timeouts_rarely_expire_together() -> None:
    """Reference: §5.2. Randomized timeouts spread the servers out "so that in most cases
    only a single server will time out; it wins the election and sends heartbeats before
    any other servers time out." Over 100 five-node clusters, the first node to time out is
    alone at that tick in most of them."""
    election_tick = 10
    rounds = 100
    conflicts = 0
    for round_number in range(rounds):
        voters = ids(1, 2, 3, 4, 5)
        peers = [
            new_peer(node_id, voters, election_tick=election_tick, seed=round_number * 10 + node_id)
            for node_id in voters
        ]
        for _ in range(2 * election_tick):
            for peer in peers:
                peer.tick()
            timed_out = [peer for peer in peers if peer.raft.role is StateRole.CANDIDATE]
            if timed_out:
                conflicts += len(timed_out) > 1
                break
        else:
            raise AssertionError("no node timed out within two election timeouts")

    assert conflicts <= 0.3 * rounds


@pytest.mark.parametrize(
    "message_type", [MessageType.APPEND, MessageType.HEARTBEAT, MessageType.VOTE]
)
def test_follower_resets_election_timer_on_leader_contact_or_vote(
    message_type: MessageType,
) -> None:
    """Reference: §5.2. "A server remains in follower state as long as it receives valid
    RPCs from a leader or candidate." Figure 2: a follower converts to candidate only if
    the election timeout elapses "without receiving AppendEntries RPC from current leader or
    granting vote to candidate"; either one restarts the timer."""
    peer = new_peer(1)
    peer.drain()
    timeout = peer.raft.randomized_election_timeout
    message = {
        MessageType.APPEND: _append(2, 1, 1, index=1, log_term=1),
        MessageType.HEARTBEAT: Message(
            type=MessageType.HEARTBEAT, sender=TWO, to=ONE, term=1, commit=1
        ),
        MessageType.VOTE: _vote_request(2, 1, 1, index=1, log_term=1),
    }[message_type]

    for _ in range(5):
        peer.tick(timeout - 1)
        peer.step(message)
        peer.drain()
        assert peer.raft.role is StateRole.FOLLOWER
    peer.tick(timeout - 1)
    assert peer.raft.role is StateRole.FOLLOWER
    peer.tick()
    assert peer.raft.role is StateRole.CANDIDATE


def test_ticking_cluster_elects_exactly_one_leader() -> None:
    """Reference: §5.2. Election Safety (figure 3): "at most one leader can be elected in a
    given term". Five nodes ticking from a cold start elect one leader, which every other
    node recognizes, and which stays leader by heartbeating."""
    net = Network.create(5)
    for _ in range(30):
        net.tick(range(1, 6))
        if net.leaders():
            break
    leaders = net.leaders()
    assert len(leaders) == 1
    leader = leaders[0]
    term = leader.raft.term

    net.tick(range(1, 6), 50)

    assert net.leaders() == [leader]
    for peer in net.peers.values():
        assert peer.raft.term == term
        assert peer.raft.leader_id == leader.id


# == §5.3 Log replication ====================================================================


def test_leader_appends_proposal_and_replicates_it_in_parallel() -> None:
    """Reference: §5.3. "The leader appends the command to its log as a new entry, then
    issues AppendEntries RPCs in parallel to each of the other servers to replicate the
    entry." The entry carries the leader's term; each AppendEntries names the entry before
    it (index and term) and the leader's commit index. The RPCs may go out before the
    leader's own append is durable (they are in `messages`, not `persisted_messages`)."""
    leader = new_peer(1)
    make_leader(leader)
    commit_noop(leader)
    last = leader.raft.log.last_index()

    leader.propose(b"some data")
    ready = leader.ready()

    entry = Entry(term=2, index=last + 1, data=b"some data")
    assert ready.entries == (entry,)
    assert ready.committed_entries == ()
    assert [(m.type, m.to, m.index, m.log_term, m.entries, m.commit) for m in ready.messages] == [
        (MessageType.APPEND, TWO, last, 2, (entry,), last),
        (MessageType.APPEND, THREE, last, 2, (entry,), last),
    ]


def test_leader_commits_and_applies_entry_replicated_on_majority() -> None:
    """Reference: §5.3. "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers ... The leader keeps track of the highest
    index it knows to be committed, and it includes that index in future AppendEntries RPCs
    ... so that the other servers eventually find out." The leader then applies it."""
    leader = new_peer(1)
    make_leader(leader)
    commit_noop(leader)
    leader.propose(b"some data")
    leader.drain()
    index = leader.raft.log.last_index()

    leader.step(append_response(TWO, ONE, 2, index))
    messages = leader.drain()

    assert leader.raft.log.committed == index
    assert leader.applied[-1] == Entry(term=2, index=index, data=b"some data")
    assert {m.to for m in sent(messages, MessageType.APPEND) if m.commit == index} == {
        TWO,
        THREE,
    }


@pytest.mark.parametrize(
    ("size", "acceptors", "committed"),
    [
        (1, (), True),
        (3, (), False),
        (3, (2,), True),
        (3, (2, 3), True),
        (5, (), False),
        (5, (2,), False),
        (5, (2, 3), True),
        (5, (2, 3, 4), True),
        (5, (2, 3, 4, 5), True),
    ],
    ids=str,
)
def test_leader_commits_once_a_majority_holds_the_entry(
    size: int, acceptors: tuple[int, ...], committed: bool
) -> None:
    """Reference: §5.3. An entry is committed when the leader "has replicated it on a
    majority of the servers" — the leader's own durable copy counts as one."""
    leader = new_peer(1, ids(*range(1, size + 1)))
    make_leader(leader)
    commit_noop(leader)
    leader.propose(b"some data")
    leader.drain()
    index = leader.raft.log.last_index()

    for acceptor in acceptors:
        leader.step(append_response(NodeId(acceptor), ONE, 2, index))
    leader.drain()

    assert (leader.raft.log.committed == index) is committed


@pytest.mark.parametrize("terms", [[], [2], [1], [1, 2]], ids=str)
def test_leader_commit_includes_preceding_entries(terms: list[int]) -> None:
    """Reference: §5.3. "This also commits all preceding entries in the leader's log,
    including entries created by previous leaders." They are applied in log order."""
    leader = new_peer(1, entries=entries_with_terms(terms), term=2)
    make_leader(leader)
    leader.propose(b"some data")
    leader.drain()
    last = leader.raft.log.last_index()

    for follower in (TWO, THREE):
        leader.step(append_response(follower, ONE, 3, last))
    leader.drain()

    assert leader.raft.log.committed == last
    expected = [*entries_with_terms(terms), Entry(term=3, index=len(terms) + 2)]
    expected.append(Entry(term=3, index=len(terms) + 3, data=b"some data"))
    assert leader.applied == expected


@pytest.mark.parametrize(
    ("entry_count", "leader_commit", "expected_commit"),
    [(1, 2, 2), (2, 3, 3), (2, 2, 2), (1, 5, 2)],
)
def test_follower_applies_committed_entries_in_order(
    entry_count: int, leader_commit: int, expected_commit: int
) -> None:
    """Reference: §5.3. "Once a follower learns that a log entry is committed, it applies
    the entry to its local state machine (in log order)." Figure 2: the follower sets
    commitIndex = min(leaderCommit, index of last new entry)."""
    follower = new_peer(1)
    follower.drain()
    entries = [
        Entry(term=1, index=2 + offset, data=b"x%d" % offset) for offset in range(entry_count)
    ]

    follower.step(_append(2, 1, 1, index=1, log_term=1, entries=entries, commit=leader_commit))
    ready = follower.ready()

    assert follower.raft.log.committed == expected_commit
    assert ready.committed_entries == tuple(entries[: expected_commit - 1])
    follower.persist(ready)
    follower.node.advance(ready)
    assert follower.applied == entries[: expected_commit - 1]


def test_follower_commits_only_entries_known_to_match_the_leader() -> None:
    """Reference: §5.3, figure 2: "If leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry)". A follower still holding an uncommitted
    entry of an old leader at index 3 hears a new leader whose commit index is 3 but whose
    request only covers index 2: it commits 2, not its own stale entry 3, which may differ
    from the leader's."""
    follower = new_peer(1, entries=entries_with_terms([1, 1]), term=1)
    follower.drain()

    follower.step(_append(2, 1, 2, index=1, log_term=1, entries=entries_with_terms([1]), commit=3))
    follower.drain()

    assert follower.raft.log.committed == 2
    assert follower.applied == entries_with_terms([1])


@pytest.mark.parametrize(
    ("log_term", "index", "reject", "hint"),
    [
        (1, 1, False, None),  # matches the snapshot
        (1, 2, False, None),
        (2, 3, False, None),  # matches the last entry
        (1, 3, True, (2, 1)),  # entry 3 exists with another term
        (3, 4, True, (3, 2)),  # entry 4 does not exist
    ],
)
def test_follower_append_consistency_check(
    log_term: int, index: int, reject: bool, hint: tuple[int, int] | None
) -> None:
    """Reference: §5.3. "When sending an AppendEntries RPC, the leader includes the index
    and term of the entry in its log that immediately precedes the new entries. If the
    follower does not find an entry in its log with the same index and term, then it
    refuses the new entries." A refusal leaves the log unchanged; any answer promising the
    log is sent only once the log is durable (`persisted_messages`). On refusal the follower
    also hints at the last entry it may share with the leader (etcd's extension)."""
    follower = new_peer(1, entries=entries_with_terms([1, 2]), term=2)
    follower.drain()
    log_before = follower.log_entries()

    follower.step(_append(2, 1, 2, index=index, log_term=log_term))
    ready = follower.ready()

    assert ready.messages == ()
    [answer] = ready.persisted_messages
    assert (answer.type, answer.to, answer.reject, answer.index) == (
        MessageType.APPEND_RESPONSE,
        TWO,
        reject,
        index,
    )
    if hint is not None:
        assert (answer.reject_hint, answer.log_term) == hint
    assert follower.log_entries() == log_before


@pytest.mark.parametrize(
    ("index", "log_term", "new_entries", "expected_terms", "expected_unstable"),
    [
        # Appends after a matching last entry.
        (3, 2, [(4, 3)], [1, 2, 3], [(4, 3)]),
        # Entry 3 conflicts (term 2 vs 3): it and all that follow are replaced.
        (2, 1, [(3, 3), (4, 4)], [1, 3, 4], [(3, 3), (4, 4)]),
        # Entries already present are kept as they are; nothing new to persist.
        (1, 1, [(2, 1)], [1, 2], []),
        # Conflict at the first entry: the whole log after the snapshot is replaced.
        (1, 1, [(2, 3)], [3], [(2, 3)]),
    ],
    ids=str,
)
def test_follower_deletes_conflicting_entries_and_appends_leaders(
    index: int,
    log_term: int,
    new_entries: list[tuple[int, int]],
    expected_terms: list[int],
    expected_unstable: list[tuple[int, int]],
) -> None:
    """Reference: §5.3. "If an existing entry conflicts with a new one (same index but
    different terms), delete the existing entry and all that follow it (§5.3). Append any
    new entries not already in the log" (figure 2). Storage ends up with the same log."""
    follower = new_peer(1, entries=entries_with_terms([1, 2]), term=2)
    follower.drain()
    entries = [Entry(term=term, index=i, data=entry_data(i, term)) for i, term in new_entries]

    follower.step(_append(2, 1, 4, index=index, log_term=log_term, entries=entries))
    ready = follower.ready()

    assert follower.log_terms() == expected_terms
    assert [(e.index, e.term) for e in ready.entries] == expected_unstable
    follower.persist(ready)
    follower.node.advance(ready)
    assert follower.stored_entries() == follower.log_entries()


# Figure 7: the leader's log (term 8) and six possible follower logs, index 1 first.
FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_leader_brings_divergent_follower_log_into_line(case: str) -> None:
    """Reference: §5.3, figure 7. "The leader handles inconsistencies by forcing the
    followers' logs to duplicate its own ... After a rejection, the leader decrements
    nextIndex and retries the AppendEntries RPC. Eventually nextIndex will reach a point
    where the leader and follower logs match." Missing entries are filled in, extraneous
    uncommitted ones (c, d) and conflicting ones (e, f) are removed, and every retry after
    a rejection probes an earlier index. The leader, at term 8 as in the figure, wins term
    9 with node 3's vote (delivered by hand; node 3 is otherwise cut off)."""
    voters = ids(1, 2, 3)
    # Index 1 of every log in the figure is the bootstrap snapshot (term 1).
    leader = new_peer(1, voters, entries=entries_with_terms(FIGURE_7_LEADER[1:]), term=8)
    follower_terms = FIGURE_7_FOLLOWERS[case]
    follower = new_peer(2, voters, entries=entries_with_terms(follower_terms[1:]), term=7)
    net = Network([leader, follower, new_peer(3, voters)])
    net.isolate(3)

    leader.campaign()
    net.send(leader.drain())
    leader.step(vote_response(THREE, ONE, leader.raft.term))
    net.stabilize()
    net.propose(1, b"figure 7")

    assert leader.raft.role is StateRole.LEADER
    assert follower.log_entries() == leader.log_entries()
    assert follower.stored_entries() == leader.stored_entries()
    last = leader.raft.log.last_index()
    assert last == len(FIGURE_7_LEADER) + 2  # the new leader's no-op and the proposal
    assert leader.raft.tracker.progress[TWO].match == last
    assert follower.raft.log.committed == leader.raft.log.committed == last

    # Every rejection is followed by a retry that probes an earlier index.
    rejections = 0
    for position, message in enumerate(net.delivered):
        if message.type is MessageType.APPEND_RESPONSE and message.sender == 2 and message.reject:
            rejections += 1
            retry = next(
                later
                for later in net.delivered[position:]
                if later.type is MessageType.APPEND and later.to == 2
            )
            assert retry.index < message.index
    assert (rejections > 0) == (case in "abef")


def test_all_nodes_apply_the_same_entries_in_the_same_order() -> None:
    """Reference: §5.3. "If an entry is committed, ... followers apply it in log order";
    with Log Matching this gives State Machine Safety: every node applies the same
    sequence of entries."""
    net = Network.create(3)
    net.elect(1)
    for number in range(5):
        net.propose(1, b"command %d" % number)
    net.tick([1])  # a heartbeat carries the last commit index to everyone

    sequences = [[(e.index, e.term, e.data) for e in net[i].applied] for i in (1, 2, 3)]
    assert sequences[0] == sequences[1] == sequences[2]
    assert [data for _, _, data in sequences[0]][-5:] == [b"command %d" % n for n in range(5)]
    assert [index for index, _, _ in sequences[0]] == list(range(2, 2 + len(sequences[0])))


# == §5.4.1 Election restriction =============================================================


@pytest.mark.parametrize(
    ("voter_terms", "candidate_last_term", "candidate_last_index", "granted"),
    [
        # Voter's last entry: (term 1, index 2).
        ([1], 1, 2, True),  # same term, same length
        ([1], 1, 3, True),  # same term, longer
        ([1], 1, 1, False),  # same term, shorter
        ([1], 2, 1, True),  # higher last term wins even when shorter
        ([1], 2, 2, True),
        ([1], 2, 3, True),
        # Voter's last entry: (term 2, index 2).
        ([2], 1, 1, False),  # lower last term, shorter
        ([2], 1, 2, False),  # lower last term, same length
        ([2], 1, 3, False),  # lower last term loses even when longer
        ([2], 2, 2, True),
        ([2], 3, 1, True),
    ],
    ids=str,
)
def test_voter_refuses_candidate_with_less_up_to_date_log(
    voter_terms: list[int], candidate_last_term: int, candidate_last_index: int, granted: bool
) -> None:
    """Reference: §5.4.1. "The voter denies its vote if its own log is more up-to-date than
    that of the candidate ... If the logs have last entries with different terms, then the
    log with the later term is more up-to-date. If the logs end with the same term, then
    whichever log is longer is more up-to-date." """
    voter = new_peer(1, entries=entries_with_terms(voter_terms), term=2)
    voter.drain()

    voter.step(_vote_request(2, 1, 3, index=candidate_last_index, log_term=candidate_last_term))
    [answer] = sent(voter.drain(), MessageType.VOTE_RESPONSE)

    assert answer.reject is not granted
    assert voter.raft.term == 3
    assert voter.raft.vote == (TWO if granted else NO_NODE)


def test_node_missing_a_committed_entry_cannot_become_leader() -> None:
    """Reference: §5.4.1. "A candidate must contact a majority of the cluster in order to be
    elected, which means that every committed entry must be present in at least one of
    those servers." A node that missed a committed entry is refused; a node holding it wins,
    and the entry survives the change of leader (Leader Completeness)."""
    net = Network.create(3)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"committed")
    index = net[1].raft.log.last_index()
    assert net[1].raft.log.committed == index

    net.crash(1)
    net.reconnect(3)
    net[3].campaign()
    net.stabilize()
    assert net[3].raft.role is StateRole.CANDIDATE
    assert net[2].raft.vote == NO_NODE

    net.elect(2)
    net.tick([2])
    for node_id in (2, 3):
        entry = net[node_id].raft.log.slice(index, index + 1, 2**63 - 1)[0]
        assert entry.data == b"committed"
        assert net[node_id].raft.log.committed >= index


# == §5.4.2 Committing entries from previous terms ===========================================


def test_leader_counts_replicas_only_for_current_term_entries() -> None:
    """Reference: §5.4.2. "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by counting
    replicas." A leader of term 3 holding entries of terms 1 and 2 (indices 2, 3) and its
    no-op of term 3 (index 4) does not commit 2 or 3 when a majority holds them; it commits
    all three once a majority holds index 4."""
    leader = new_peer(1, entries=entries_with_terms([1, 2]), term=2)
    make_leader(leader)
    assert leader.raft.term == 3
    assert leader.log_terms() == [1, 2, 3]

    for acknowledged in (2, 3):
        leader.step(append_response(TWO, ONE, 3, acknowledged))
        leader.drain()
        assert leader.raft.tracker.progress[TWO].match == acknowledged
        assert leader.raft.log.committed == 1

    leader.step(append_response(TWO, ONE, 3, 4))
    leader.drain()
    assert leader.raft.log.committed == 4
    assert [(e.index, e.term) for e in leader.applied] == [(2, 1), (3, 2), (4, 3)]


def _figure_8_c() -> Network:
    """Five nodes brought to figure 8 (c): S1 leads term 4; the term-2 entry at index 3 is
    on S1, S2 and S3 (a majority), the term-4 no-op at index 4 only on S1 and S2.

    One entry per AppendEntries (`max_size_per_message=1`) lets the test hand S3 the
    term-2 entry without the term-4 one.
    """
    net = Network.create(5, max_size_per_message=1)
    # (a) S1 leads term 2 and replicates its entry at index 3 to S2 only.
    net.elect(1)
    net.isolate(3, 4, 5)
    net.propose(1, b"ab")
    assert net[1].log_terms() == net[2].log_terms() == [2, 2]
    # (b) S1 crashes; S5 wins term 3 with votes from S3, S4 and itself and appends an
    # entry (its no-op, index 3) that reaches nobody before it crashes too.
    net.crash(1)
    net.reconnect(3, 4, 5)
    net.drop_if = lambda m: m.sender == 5 and m.type is MessageType.APPEND
    net.elect(5)
    assert net[5].log_terms() == [2, 3]
    net.crash(5)
    # (c) S1 restarts and wins term 4 with S2 and S3 (S3 voted for S5 in term 3, so the
    # first attempt, in term 3, does not win). It replicates the term-2 entry to S3.
    net.restart(1)
    net.isolate(4)
    # The AppendEntries that would bring S3 the term-4 entry once it holds index 3 is lost.
    net.drop_if = lambda m: (
        m.type is MessageType.APPEND
        and m.to == 3
        and any(e.term == 4 for e in m.entries)
        and net[3].raft.log.last_index() >= 3
    )
    net[1].campaign()
    net.stabilize()
    assert net[1].raft.role is StateRole.CANDIDATE
    net.elect(1)
    assert net[1].raft.term == 4
    return net


def test_figure_8_entry_of_previous_term_on_majority_is_not_committed() -> None:
    """Reference: §5.4.2, figure 8 (c)–(d). "A log entry is stored on a majority of servers,
    yet it could still be overwritten by a future leader." S1 (term 4) has the term-2 entry
    at index 3 on S1, S2 and S3, and must not commit it: once S1 crashes, S5 can win term 5
    (votes from S3, S4) and replace it with its own term-3 entry — which is safe only
    because no node ever applied the term-2 entry."""
    net = _figure_8_c()
    leader = net[1]
    progress = leader.raft.tracker.progress
    assert [net[i].raft.log.term(3) for i in (1, 2, 3)] == [2, 2, 2]
    assert sorted(i for i in (1, 2, 3) if progress[NodeId(i)].match >= 3) == [1, 2, 3]
    assert leader.raft.log.committed == 2

    # (d) S1 crashes; S5 restarts and is elected (it needs a second try: term 4 is taken).
    net.crash(1)
    net.restart(5)
    net.reconnect(4)
    net.drop_if = lambda m: False
    net[5].campaign()
    net.stabilize()
    net.elect(5)
    net.tick([5])

    assert net[5].raft.term == 5
    for node_id in (2, 3, 4, 5):
        assert net[node_id].raft.log.term(3) == 3
        assert net[node_id].raft.log.committed == 4
    overwritten = Entry(term=2, index=3, data=b"ab")
    for peer in net.peers.values():
        assert overwritten not in peer.applied


def test_figure_8_previous_term_entry_commits_with_current_term_entry() -> None:
    """Reference: §5.4.2, figure 8 (e). "Once an entry from the current term has been
    committed in this way, then all prior entries are committed indirectly because of the
    Log Matching Property." When S1 replicates its term-4 entry to S3, index 4 commits on
    a majority and the term-2 entry at index 3 commits with it; after that S5 can no longer
    be elected, so the entry can never be overwritten."""
    net = _figure_8_c()
    net.drop_if = lambda m: False
    net.tick([1])  # a heartbeat round: S3 answers and S1 retries the lost AppendEntries

    leader = net[1]
    assert leader.raft.log.committed == 4
    assert [(e.index, e.term, e.data) for e in leader.applied][-2:] == [
        (3, 2, b"ab"),
        (4, 4, b""),
    ]

    net.crash(1)
    net.restart(5)
    net.reconnect(4)
    for _ in range(3):
        net[5].campaign()
        net.stabilize()
        assert net[5].raft.role is not StateRole.LEADER


# == §5.5 Follower and candidate crashes =====================================================


def test_leader_retries_appends_until_crashed_follower_catches_up() -> None:
    """Reference: §5.5. "If a follower or candidate crashes, then future RequestVote and
    AppendEntries RPCs sent to it will fail. Raft handles these failures by retrying them
    indefinitely; if the crashed server restarts, then the RPC will complete successfully."
    The follower catches up on entries committed while it was down, with no new proposal."""
    net = Network.create(3)
    net.elect(1)
    net.crash(3)
    net.propose(1, b"x")
    net.propose(1, b"y")
    net.tick([1, 2], 5)
    assert net[1].raft.log.committed == net[1].raft.log.last_index()
    lost = [m for m in net.dropped if m.to == 3]
    assert sent(lost, MessageType.APPEND) and sent(lost, MessageType.HEARTBEAT)

    net.restart(3)
    net.tick([1, 2])

    assert net[3].log_entries() == net[1].log_entries()
    assert net[3].raft.log.committed == net[1].raft.log.committed
    assert [e.data for e in net[3].applied][-2:] == [b"x", b"y"]


def test_duplicated_append_entries_does_not_change_the_log() -> None:
    """Reference: §5.5. "Raft RPCs are idempotent, so this causes no harm. For example, if a
    follower receives an AppendEntries request that includes log entries already present in
    its log, it ignores those entries in the new request." A duplicate gets the same answer;
    a delayed older request (a prefix of what the follower has) does not truncate it."""
    follower = new_peer(1)
    follower.drain()
    entries = entries_with_terms([1, 1, 1])
    request = _append(2, 1, 1, index=1, log_term=1, entries=entries)

    follower.step(request)
    first_answers = follower.drain()
    follower.step(request)
    second_answers = follower.drain()
    follower.step(_append(2, 1, 1, index=1, log_term=1, entries=entries[:1]))
    delayed_answers = follower.drain()

    assert first_answers == second_answers
    assert [(m.reject, m.index) for m in second_answers] == [(False, 4)]
    assert [(m.reject, m.index) for m in delayed_answers] == [(False, 2)]
    assert follower.log_entries() == entries
    assert follower.stored_entries() == entries


def test_crashed_voter_remembers_its_vote() -> None:
    """Reference: §5.5 with figure 2 ("Persistent state on all servers: currentTerm,
    votedFor"). A voter that granted its vote and crashed answers a retried RequestVote from
    the same candidate the same way, and still refuses any other candidate of that term."""
    voter = new_peer(2)
    voter.drain()
    voter.step(_vote_request(1, 2, 2, index=1, log_term=1))
    [granted] = sent(voter.drain(), MessageType.VOTE_RESPONSE)
    assert not granted.reject

    voter.restart()
    voter.step(_vote_request(1, 2, 2, index=1, log_term=1))
    voter.step(_vote_request(3, 2, 2, index=1, log_term=1))
    answers = sent(voter.drain(), MessageType.VOTE_RESPONSE)

    assert [(m.to, m.term, m.reject) for m in answers] == [(ONE, 2, False), (THREE, 2, True)]


# == Persistence before counting (our Ready contract, figure 2's "stable storage") ==========


def test_candidate_counts_its_own_vote_only_once_persisted() -> None:
    """Reference: §5.2 and figure 2 ("updated on stable storage before responding to RPCs").
    A candidate "votes for itself"; that vote is persisted in the same Ready that starts the
    election and only counts after `advance`. One peer's vote is not a majority of three
    until then."""
    peer = new_peer(1)
    peer.campaign()
    ready = peer.ready()
    assert ready.hard_state == HardState(term=2, vote=ONE, commit=1)
    assert ready.must_sync

    peer.step(vote_response(TWO, ONE, 2))
    assert peer.raft.role is StateRole.CANDIDATE
    assert peer.raft.tracker.votes == {TWO: True}

    peer.persist(ready)
    peer.node.advance(ready)
    assert peer.raft.role is StateRole.LEADER


def test_leader_counts_its_own_append_only_once_persisted() -> None:
    """Reference: §5.3 with figure 2. An entry is committed when replicated "on a majority
    of the servers"; the leader's copy counts only once durable, i.e. after `advance` of the
    Ready that carried it. With one follower's acknowledgement in three nodes, the entry
    commits exactly when the leader's own append is persisted."""
    leader = new_peer(1)
    make_leader(leader)
    commit_noop(leader)
    before = leader.raft.log.committed
    leader.propose(b"x")
    ready = leader.ready()
    index = ready.entries[-1].index

    leader.step(append_response(TWO, ONE, 2, index))
    assert leader.raft.log.committed == before

    leader.persist(ready)
    assert leader.raft.log.committed == before
    leader.node.advance(ready)
    assert leader.raft.log.committed == index
    assert leader.ready().committed_entries == (Entry(term=2, index=index, data=b"x"),)


def test_single_node_commits_only_after_persisting() -> None:
    """Reference: §5.3. In a one-node cluster the leader is the whole majority: an entry
    commits when the leader's own copy is durable, never before."""
    leader = new_peer(1, ids(1))
    make_leader(leader)
    leader.propose(b"x")
    ready = leader.ready()
    index = ready.entries[-1].index

    assert ready.committed_entries == ()
    assert leader.raft.log.committed == index - 1
    leader.persist(ready)
    leader.node.advance(ready)
    assert leader.raft.log.committed == index
    leader.drain()
    assert leader.applied[-1] == Entry(term=2, index=index, data=b"x")


# == With PreVote and CheckQuorum (thesis §9.6, §6.2) ========================================


def test_prevote_partitioned_node_does_not_disrupt_the_leader() -> None:
    """Reference: §5.2 as amended by PreVote (thesis §9.6). A node cut off from the cluster
    times out again and again but, asking first whether it could win, never raises its
    term; when it rejoins, the leader keeps its term and leadership."""
    net = Network.create(3, pre_vote=True, check_quorum=True)
    net.elect(1)
    term = net[1].raft.term
    net.isolate(3)

    for _ in range(5):
        net.tick([1, 2, 3], 10)
        assert net[3].raft.term == term
        assert net[3].raft.role in (StateRole.FOLLOWER, StateRole.PRE_CANDIDATE)
    net.reconnect(3)
    net.tick([1, 2, 3], 3)

    assert [peer.id for peer in net.leaders()] == [ONE]
    assert all(net[node_id].raft.term == term for node_id in (1, 2, 3))
    assert net[3].raft.leader_id == ONE


def test_without_prevote_rejoining_node_forces_a_new_term() -> None:
    """Reference: §5.1 (the contrast PreVote exists for). Without PreVote a partitioned
    node raises its term at each timeout; when it rejoins, its RequestVote carries a newer
    term and the leader, seeing it, "immediately reverts to follower state"."""
    net = Network.create(3)
    net.elect(1)
    term = net[1].raft.term
    net.isolate(3)
    net.tick([3], 50)
    assert net[3].raft.term > term + 1

    net.reconnect(3)
    net.tick([3], net[3].raft.randomized_election_timeout)

    assert net[1].raft.role is StateRole.FOLLOWER
    assert [peer.id for peer in net.leaders()] == [THREE]
    assert net[1].raft.term == net[3].raft.term > term + 1


@pytest.mark.parametrize("check_quorum", [False, True])
def test_isolated_leader_steps_down_with_check_quorum(check_quorum: bool) -> None:
    """Reference: §5.2 with CheckQuorum (thesis §6.2). A leader that has not heard from a
    majority for an election timeout steps down, so it stops acting as leader in a minority
    partition (within two election timeouts: activity is checked once per timeout); without
    CheckQuorum it stays leader until it learns of a newer term."""
    net = Network.create(3, pre_vote=check_quorum, check_quorum=check_quorum)
    net.elect(1)
    net.isolate(1)

    net.tick([1], 2 * 10)

    expected = StateRole.FOLLOWER if check_quorum else StateRole.LEADER
    assert net[1].raft.role is expected
