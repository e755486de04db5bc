"""`RawNode`: the thread-unsafe, I/O-free interface to one Raft node.

Usage (see `Ready` for the full contract):

    node = RawNode(config, storage)
    while running:
        node.tick() every tick; node.step(message) for each message received;
        node.propose(data) to replicate data
        if node.has_ready():
            ready = node.ready()
            ... persist, send, apply, as `Ready` says ...
            node.advance(ready)

Every method either succeeds or raises without changing state. Between `ready()` and
`advance()` the caller may keep stepping messages, ticking and proposing; it must not call
`ready()` again until it has advanced.
"""

from __future__ import annotations

import contextlib

from raftkv.raft.core import confchange
from raftkv.raft.core.coalesce import coalesce
from raftkv.raft.core.config import Config
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    InvalidArgument,
    MalformedMessage,
    PeerNotFound,
    ProposalDropped,
)
from raftkv.raft.core.raft import Raft
from raftkv.raft.core.ready import ProgressStatus, Ready, Status
from raftkv.raft.core.storage import Storage
from raftkv.raft.core.types import (
    LOCAL_MESSAGE_TYPES,
    MAX_INDEX,
    MAX_NODE_ID,
    MAX_TERM,
    NO_NODE,
    RESPONSE_MESSAGE_TYPES,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    SoftState,
    StateRole,
)

# Requests a peer forwards on behalf of its client (see `RawNode.step`).
_FORWARDED_TYPES = frozenset(
    {MessageType.PROPOSE, MessageType.READ_INDEX, MessageType.TRANSFER_LEADER}
)


# Peer messages that carry no term: requests forwarded on behalf of a client, which the
# leader handles in whatever term it is in. Every other peer message carries one (term 0
# is how `Raft.step` recognises local input, which skips term handling).
_TERMLESS_TYPES = frozenset({MessageType.PROPOSE, MessageType.READ_INDEX})


def check_peer_message(message: Message) -> None:
    """Raise MalformedMessage if `message` has a shape no correct peer produces.

    Checked at the boundary so that the core's own assertions (InvariantViolation) only ever
    fire for our own bugs, never because of what a peer sent. Besides each type's shape,
    every number is bounded: node ids are positive, terms at most MAX_TERM and indexes at
    most MAX_INDEX, so whatever a peer sends can still be incremented and encoded.
    """
    # On the hot path of replication (every message received): locals, one test per field.
    message_type, sender, to, term = message.type, message.sender, message.to, message.term
    if not (
        0 < sender <= MAX_NODE_ID
        and 0 < to <= MAX_NODE_ID
        # A forwarded request keeps its proposer as sender (etcd's too): forwarded twice,
        # across a change of leader, it may come back to the node that first took it.
        and (sender != to or message_type in _TERMLESS_TYPES)
    ):
        raise MalformedMessage(f"{message_type.value} from {sender} to {to}: invalid node ids")
    if not (
        0 <= term <= MAX_TERM
        and 0 <= message.log_term <= MAX_TERM
        and 0 <= message.index <= MAX_INDEX
        and 0 <= message.commit <= MAX_INDEX
        and 0 <= message.reject_hint <= MAX_INDEX
    ):
        raise MalformedMessage(
            f"{message_type.value} with a number out of range (term {term}, log term "
            f"{message.log_term}, index {message.index}, commit {message.commit}, hint "
            f"{message.reject_hint})"
        )
    if (term == 0) != (message_type in _TERMLESS_TYPES):
        raise MalformedMessage(f"{message_type.value} with term {term}")
    if message_type is MessageType.APPEND:
        _check_append_entries(message)
    elif message_type is MessageType.PROPOSE:
        if not message.entries:
            raise MalformedMessage("MsgProp without entries")
    elif message_type in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESPONSE):
        if len(message.entries) != 1 or not message.entries[0].data:
            raise MalformedMessage(f"{message_type.value} needs exactly one non-empty context")
    elif message_type is MessageType.SNAPSHOT:
        _check_snapshot(message)


def _check_append_entries(message: Message) -> None:
    """Entries follow (log_term, index) at consecutive indexes, with terms from 1 up that
    never go backwards nor past the message's term, and end by MAX_INDEX."""
    entries = message.entries
    if not entries:
        return
    if message.index + len(entries) > MAX_INDEX:
        raise MalformedMessage(f"MsgApp entries beyond index {MAX_INDEX}")
    expected = message.index + 1
    previous_term = message.log_term or 1
    term = message.term
    for entry in entries:
        if entry.index != expected or not previous_term <= entry.term <= term:
            raise MalformedMessage(
                f"MsgApp entries out of order at {entry.term}/{entry.index} "
                f"(after {message.log_term}/{message.index}, term {term})"
            )
        expected += 1
        previous_term = entry.term


def _check_snapshot(message: Message) -> None:
    snapshot = message.snapshot
    if snapshot is None or snapshot.is_empty():
        raise MalformedMessage("MsgSnap without a snapshot")
    metadata = snapshot.metadata
    # A leader sends the snapshot of its own log: no entry in it is newer than its term.
    if not (0 < metadata.index <= MAX_INDEX and 0 < metadata.term <= message.term):
        raise MalformedMessage(
            f"MsgSnap of term {message.term} with snapshot {metadata.term}/{metadata.index}"
        )
    try:
        confchange.check_conf_state(metadata.conf_state)
    except ConfChangeInvalid as error:
        raise MalformedMessage(f"MsgSnap with an impossible configuration: {error}") from None


class RawNode:
    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        self._previous_soft_state = self.raft.soft_state()
        self._previous_hard_state = self.raft.hard_state()
        self._ready_number = 0
        # The Ready handed out and not yet advanced, with the messages addressed to
        # ourselves that take effect once it is durable.
        self._outstanding: Ready | None = None
        self._self_messages: list[Message] = []

    # -- inputs ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick (elections, heartbeats, lease checks)."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (as if the election timeout elapsed)."""
        self.raft.step(Message(type=MessageType.HUP, sender=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose `data` for the log. Raises ProposalDropped (or NotLeader) if it cannot be
        appended or forwarded now; success does not mean it will commit."""
        self.raft.step(
            Message(
                type=MessageType.PROPOSE,
                sender=self.raft.id,
                entries=(Entry(term=0, index=0, data=data),),
            )
        )

    def propose_many(self, data: list[bytes] | tuple[bytes, ...]) -> None:
        """Propose several commands as one message: all are appended (consecutively) or
        none is. The leader replicates them in one append per follower, which is what
        makes group commit cheap on the wire as well as on disk."""
        if not data:
            raise InvalidArgument("propose_many needs at least one command")
        self.raft.step(
            Message(
                type=MessageType.PROPOSE,
                sender=self.raft.id,
                entries=tuple(Entry(term=0, index=0, data=item) for item in data),
            )
        )

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose a membership change. On the leader it is validated first and raises
        ConfChangeInvalid if another change is pending or it would not apply."""
        self.raft.step(
            Message(
                type=MessageType.PROPOSE,
                sender=self.raft.id,
                entries=(Entry(term=0, index=0, kind=EntryKind.CONF_CHANGE, data=change.encode()),),
            )
        )

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        """Install a membership change whose entry the application is applying now."""
        return self.raft.apply_conf_change(change)

    def step(self, message: Message) -> None:
        """Process a message received from a peer.

        Raises MalformedMessage (and changes nothing) for a message no correct peer sends.
        A proposal, read or transfer request a peer forwarded to us that we cannot serve
        (we lost leadership, limits, an invalid conf change) is dropped: the node that
        accepted it from its client times out and retries, as with a lost message.
        """
        if message.type in LOCAL_MESSAGE_TYPES:
            raise InvalidArgument(f"{message.type.value} is local and cannot come from a peer")
        check_peer_message(message)
        if message.to != self.raft.id:
            raise MalformedMessage(f"{message.type.value} for node {message.to}")
        if message.type in RESPONSE_MESSAGE_TYPES and message.sender not in (
            self.raft.tracker.progress
        ):
            raise PeerNotFound(f"{message.type.value} from unknown node {message.sender}")
        if message.type in _FORWARDED_TYPES:
            with contextlib.suppress(ProposalDropped, ConfChangeInvalid):
                self.raft.step(message)
            return
        self.raft.step(message)

    def read_index(self, context: bytes) -> None:
        """Ask for a read index; a ReadState with `context` appears in a later Ready.

        `context` must be unique among this node's pending reads."""
        if not context:
            raise InvalidArgument("a read index needs a non-empty context")
        self.raft.step(
            Message(
                type=MessageType.READ_INDEX,
                sender=self.raft.id,
                entries=(Entry(term=0, index=0, data=context),),
            )
        )

    def transfer_leader(self, to: NodeId) -> None:
        """Ask the leader to hand leadership to `to` (thesis §3.10)."""
        if self.raft.role is StateRole.LEADER:
            if to not in self.raft.tracker.progress:
                raise InvalidArgument(f"cannot transfer leadership to non-member {to}")
        elif self.raft.leader_id == NO_NODE:
            raise ProposalDropped("no leader to transfer leadership from")
        self.raft.step(Message(type=MessageType.TRANSFER_LEADER, sender=to))

    def report_unreachable(self, peer: NodeId) -> None:
        """The transport could not deliver to `peer`."""
        self.raft.step(Message(type=MessageType.UNREACHABLE, sender=peer))

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        """A snapshot sent to `peer` was delivered (`ok`) or failed."""
        self.raft.step(Message(type=MessageType.SNAPSHOT_STATUS, sender=peer, reject=not ok))

    # -- output ----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        raft = self.raft
        if self._outstanding is not None:
            return False
        if raft.soft_state() != self._previous_soft_state:
            return True
        hard_state = raft.hard_state()
        if not hard_state.is_empty() and hard_state != self._previous_hard_state:
            return True
        return bool(
            raft.log.has_pending_snapshot()
            or raft.messages
            or raft.messages_after_append
            or raft.log.unstable.entries
            or raft.log.has_next_committed_entries()
            or raft.reads.read_states
        )

    def ready(self) -> Ready:
        """Everything the caller must do now, as one numbered batch (see `Ready`)."""
        if self._outstanding is not None:
            raise InvalidArgument(f"Ready {self._outstanding.number} has not been advanced yet")
        raft = self.raft
        soft_state: SoftState | None = raft.soft_state()
        if soft_state == self._previous_soft_state:
            soft_state = None
        hard_state: HardState | None = raft.hard_state()
        if hard_state == self._previous_hard_state:
            hard_state = None
        entries = tuple(raft.log.unstable_entries())
        snapshot = raft.log.unstable.snapshot
        persisted: list[Message] = []
        self._self_messages = []
        for message in raft.messages_after_append:
            if message.to == raft.id:
                self._self_messages.append(message)
            else:
                persisted.append(message)
        must_sync = (
            bool(entries)
            or snapshot is not None
            or (
                hard_state is not None
                and (
                    hard_state.term != self._previous_hard_state.term
                    or hard_state.vote != self._previous_hard_state.vote
                )
            )
        )
        self._ready_number += 1
        ready = Ready(
            number=self._ready_number,
            soft_state=soft_state,
            hard_state=hard_state,
            read_states=tuple(raft.reads.take_read_states()),
            entries=entries,
            snapshot=snapshot,
            committed_entries=tuple(raft.log.next_committed_entries()),
            messages=tuple(coalesce(raft.messages)),
            persisted_messages=tuple(coalesce(persisted)),
            must_sync=must_sync,
        )
        raft.messages = []
        raft.messages_after_append = []
        if soft_state is not None:
            self._previous_soft_state = soft_state
        if hard_state is not None:
            self._previous_hard_state = hard_state
        self._outstanding = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """The caller persisted, sent and applied `ready` as its contract says."""
        if self._outstanding is None or ready.number != self._outstanding.number:
            expected = "none" if self._outstanding is None else self._outstanding.number
            raise InvalidArgument(f"advance of Ready {ready.number}, outstanding: {expected}")
        raft = self.raft
        self._outstanding = None
        if ready.entries:
            last = ready.entries[-1]
            raft.log.stable_to(last.index, last.term)
        if ready.snapshot is not None:
            raft.log.stable_snapshot_to(ready.snapshot.metadata.index)
        applied = 0
        if ready.snapshot is not None:
            applied = ready.snapshot.metadata.index
        if ready.committed_entries:
            applied = ready.committed_entries[-1].index
            raft.reduce_uncommitted_size(sum(e.payload_size for e in ready.committed_entries))
        if applied > 0:
            raft.applied_to(applied)
        # What this Ready made durable now takes effect locally: our own vote, our own
        # acknowledgement of appended entries.
        self_messages, self._self_messages = self._self_messages, []
        for message in self_messages:
            raft.step(message)

    # -- read-only views -------------------------------------------------------------------
    # What the application's loop needs to know between Readies, each one cheap (the loop
    # asks some of them for every message or proposal). None changes any state; `status()`
    # gathers them all, with the leader's view of every peer, at a higher cost.

    def soft_state(self) -> SoftState:
        """The leader this node knows (NO_NODE if none) and its own role, as of now: a
        Ready reports a change of it only when that Ready is taken."""
        return self.raft.soft_state()

    def term(self) -> int:
        """The current term, as of now (a Ready's hard state reports it once durable)."""
        return self.raft.term

    def lead_transferee(self) -> NodeId:
        """On the leader, the voter it is handing leadership to; NO_NODE otherwise.
        While it is set the leader refuses proposals (thesis §3.10)."""
        return self.raft.lead_transferee

    def last_index(self) -> int:
        """The index of the last entry in the log, durable or not."""
        return self.raft.log.last_index()

    def committed_index(self) -> int:
        return self.raft.log.committed

    def applied_index(self) -> int:
        """The highest index the application has applied, as told by `advance`."""
        return self.raft.log.applied

    def conf_state(self) -> ConfState:
        """The configuration in force: the last membership change the application applied
        (`apply_conf_change`), or the snapshot's."""
        return self.raft.conf_state()

    def is_member(self, node_id: NodeId) -> bool:
        """Whether `node_id` belongs to the configuration in force (voter, learner, or
        either half of a joint configuration): the nodes whose progress the core tracks."""
        return node_id in self.raft.tracker.progress

    def voters(self) -> frozenset[NodeId]:
        """Every voter of the configuration in force (both halves of a joint one)."""
        return self.raft.tracker.voter_ids()

    def match_index(self, node_id: NodeId) -> int | None:
        """The highest index known to be in `node_id`'s log (None for a non-member).
        Kept up to date on the leader only: a follower's view is stale by design."""
        progress = self.raft.tracker.progress.get(node_id)
        return None if progress is None else progress.match

    def status(self) -> Status:
        raft = self.raft
        progress: dict[NodeId, ProgressStatus] = {}
        if raft.role is StateRole.LEADER:
            for node_id, item in sorted(raft.tracker.progress.items()):
                progress[node_id] = ProgressStatus(
                    match=item.match,
                    next=item.next,
                    state=item.state.value,
                    recent_active=item.recent_active,
                    is_learner=item.is_learner,
                    pending_snapshot=item.pending_snapshot,
                    inflight_count=item.inflights.count(),
                )
        return Status(
            id=raft.id,
            hard_state=raft.hard_state(),
            soft_state=raft.soft_state(),
            applied=raft.log.applied,
            committed=raft.log.committed,
            first_index=raft.log.first_index(),
            last_index=raft.log.last_index(),
            conf_state=raft.conf_state(),
            lead_transferee=raft.lead_transferee,
            progress=progress,
        )
