"""Linearizable reads: a node's side of MsgReadIndex (Raft thesis §6.4) and of leader
leases (§6.4.1), modelled on etcd-io/raft's read-index handling in `raft.go`.

Theory of operation
-------------------
A read asks the leader for a read index: its commit index when the request arrived. Once
the application has applied that index, serving the read from its state is linearizable
if two things held when the request arrived:
1. The leader's commit index was at least every earlier leader's. True once an entry of
   its own term has committed (thesis §6.4 step 1; the empty entry each new leader
   appends gets it there). Requests that arrive before wait in `waiting_for_commit` and
   are taken up when an entry of the term commits.
2. It was still the leader. Confirmed by a round of heartbeats carrying the request's
   context, once a quorum acknowledged it (`ReadOnly`, read_only.py; SAFE), or assumed
   while the leader's lease holds (`lease_holds`; LEASE_BASED, falling back on a
   heartbeat round when it does not).
A leader alone in its configuration meets both at once and answers at once.

An answer is a `ReadState` when the request is the node's own (or carries no sender), and
a MsgReadIndexResp to the follower that forwarded it otherwise; that follower turns the
answer into a `ReadState`. The caller collects them with `take_read_states`.

Like the rest of the core this is pure: it reads the node's state through `ReadIndexNode`
(Raft's public state) and acts through the two callbacks it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from raftkv.raft.core.config import Config
from raftkv.raft.core.log import RaftLog
from raftkv.raft.core.quorum import VoteResult
from raftkv.raft.core.read_only import ReadOnly
from raftkv.raft.core.tracker import Progress, ProgressTracker
from raftkv.raft.core.types import (
    NO_NODE,
    Message,
    MessageType,
    NodeId,
    ReadOnlyOption,
    ReadState,
)


class ReadIndexNode(Protocol):
    """What the reads consult of the node that serves them (`Raft`)."""

    @property
    def id(self) -> NodeId: ...

    @property
    def term(self) -> int: ...

    # Ticks since the node started: the clock leases are measured on.
    @property
    def ticks(self) -> int: ...

    @property
    def lead_transferee(self) -> NodeId: ...

    @property
    def config(self) -> Config: ...

    @property
    def log(self) -> RaftLog: ...

    @property
    def tracker(self) -> ProgressTracker: ...


class LinearizableReads:
    """The read requests of one node, and the answers waiting to be collected.

    `send` sends a message (the node's `_send`); `broadcast_heartbeat(context)` starts a
    heartbeat round carrying `context`.

    Invariants: `waiting_for_commit` and `read_only` hold requests only while the node
    leads in the term they arrived in (`reset` empties them at every change of role or
    term); `read_states` holds the answers not yet collected, in the order they were given.
    """

    def __init__(
        self,
        node: ReadIndexNode,
        send: Callable[[Message], None],
        broadcast_heartbeat: Callable[[bytes], None],
    ) -> None:
        self._node = node
        self._send = send
        self._broadcast_heartbeat = broadcast_heartbeat
        # Requests waiting for a quorum to acknowledge a heartbeat round (rule 2).
        self.read_only = ReadOnly(node.config.read_only_option)
        # Leader: requests that arrived before an entry of this term committed (rule 1).
        self.waiting_for_commit: list[Message] = []
        self.read_states: list[ReadState] = []

    @property
    def lease_based(self) -> bool:
        return self.read_only.option is ReadOnlyOption.LEASE_BASED

    def reset(self) -> None:
        """The node changed role or term: requests not answered yet are dropped."""
        self.read_only.reset()
        self.waiting_for_commit = []

    def take_read_states(self) -> list[ReadState]:
        states, self.read_states = self.read_states, []
        return states

    def heartbeat_context(self) -> bytes:
        """The context a heartbeat round confirms: the newest request waiting for one (a
        later round confirms earlier requests too), or none."""
        return self.read_only.last_pending_context()

    # -- leader ----------------------------------------------------------------------------

    def step_leader(self, message: Message) -> None:
        """A MsgReadIndex reached the leader (from its own node or forwarded)."""
        node = self._node
        if node.tracker.is_singleton():
            self._answer(message, node.log.committed)
            return
        if not self._committed_entry_in_current_term():
            # Our commit index may lag the previous leader's until our no-op commits (thesis
            # §6.4 step 1); answer once it does.
            self.waiting_for_commit.append(message)
            return
        self._send_response(message)

    def release_waiting(self) -> None:
        """The commit index moved: take up the requests that waited for an entry of this
        term to commit, if one has."""
        if not self._committed_entry_in_current_term():
            return
        waiting, self.waiting_for_commit = self.waiting_for_commit, []
        for message in waiting:
            self._send_response(message)

    def record_heartbeat_ack(self, progress: Progress, sent_tick: int) -> None:
        """A follower acknowledged the heartbeat we sent at `sent_tick` (0 without leases):
        the lease it grants us runs from there. A tick from our future is not believed."""
        if self.lease_based and 0 < sent_tick <= self._node.ticks:
            progress.lease_ack_tick = max(progress.lease_ack_tick, sent_tick)

    def confirm(self, response: Message) -> None:
        """A heartbeat response: once a quorum acknowledged a round, answer every request
        up to the one it carried."""
        if not response.context:
            return
        acks = self.read_only.receive_ack(response.sender, response.context)
        if acks is None or self._node.tracker.voters.vote_result(acks) is not VoteResult.WON:
            return
        for status in self.read_only.advance(response.context):
            self._answer(status.request, status.index)

    def lease_holds(self) -> bool:
        """Whether no other leader can exist now (thesis §6.4.1), so a read may be served
        from our commit index without a heartbeat round.

        A follower that acknowledged a heartbeat we sent at tick `s` refuses every vote until
        an election timeout after it *received* it, which is no earlier than `s`. Once a
        quorum did so, no other node can win an election before tick `s + election_tick`
        on our clock, assuming clocks tick at the same rate; one tick of margin covers the
        phase between our ticks and theirs. Measured from the send, the lease survives
        any message delay. Not held during a leadership transfer, which bypasses leases.
        """
        node = self._node
        if node.lead_transferee != NO_NODE:
            return False
        own = node.tracker.progress.get(node.id)
        ticks = node.ticks
        # We vouch for ourselves as of now; followers as of the round they acknowledged.
        quorum_tick = node.tracker.quorum_index(
            lambda progress: ticks if progress is own else progress.lease_ack_tick
        )
        if quorum_tick == 0:
            return False  # no quorum has acknowledged any heartbeat of ours yet
        return ticks - quorum_tick < node.config.election_tick - 1

    def _committed_entry_in_current_term(self) -> bool:
        log = self._node.log
        return log.term_or_zero(log.committed) == self._node.term

    def _send_response(self, message: Message) -> None:
        node = self._node
        if self.lease_based and self.lease_holds():
            self._answer(message, node.log.committed)
            return
        # SAFE, or no lease held right now: confirm leadership with a heartbeat round.
        context = message.entries[0].data
        self.read_only.add_request(node.log.committed, message)
        self.read_only.receive_ack(node.id, context)
        self._broadcast_heartbeat(context)

    def _answer(self, request: Message, index: int) -> None:
        if request.sender in (NO_NODE, self._node.id):
            self.read_states.append(ReadState(index, request.entries[0].data))
        else:
            self._send(
                Message(
                    type=MessageType.READ_INDEX_RESPONSE,
                    to=request.sender,
                    index=index,
                    entries=request.entries,
                )
            )

    # -- follower --------------------------------------------------------------------------

    def step_follower_response(self, response: Message) -> None:
        """The leader answered a MsgReadIndex this node forwarded."""
        if len(response.entries) != 1:
            return  # malformed; a misbehaving peer, not our bug
        self.read_states.append(ReadState(response.index, response.entries[0].data))
