"""The Raft protocol state machine of one node (modelled on etcd-io/raft's `raft.go`).

Theory of operation
-------------------
`Raft` is pure: messages and ticks go in, state changes and outgoing messages come out. It
never does I/O; `RawNode` turns its state into `Ready` batches for the caller.

Rules this module keeps:
1. Term handling happens once, in `step`, before any per-role logic: a message from a newer
   term makes us a follower of that term first (except PreVote traffic, which never changes
   a term); a message from an older term is answered or ignored.
2. Anything that promises durable state — a vote, an acknowledged append — is sent through
   `messages_after_append`, which the caller sends only after persisting. The leader's own
   acknowledgement of its appended entries and a candidate's vote for itself take the same
   path (addressed to itself), so the leader only counts durable copies when committing and
   a candidate only counts a durable self-vote.
3. A leader commits only entries of its own term by counting (§5.4.2); earlier entries are
   committed with them. Each new leader appends an empty entry to get there (§8 / thesis
   §6.4).
4. Only one membership change may be pending (appended and not yet applied) at a time.
5. A rejected call raises and changes nothing.
6. What a peer says is believed only if it can be true: a follower ignores a commit index
   beyond its own log, a leader counts no acknowledgement of entries it does not have,
   and only the leader a follower follows in this term can speak for that term (a second
   "leader" of one term is a forgery or a bug; it is ignored).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable

import msgspec

from raftkv.raft.core import confchange
from raftkv.raft.core.config import NO_LIMIT, Config
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    ConfChangePending,
    InvariantViolation,
    LogCompacted,
    LogUnavailable,
    NotLeader,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
)
from raftkv.raft.core.log import RaftLog
from raftkv.raft.core.quorum import VoteResult
from raftkv.raft.core.read_index import LinearizableReads
from raftkv.raft.core.storage import Storage
from raftkv.raft.core.tracker import Progress, ProgressTracker, ReplicationState
from raftkv.raft.core.types import (
    MAX_TERM,
    NO_NODE,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadOnlyOption,
    Snapshot,
    SoftState,
    StateRole,
    vote_response_type,
)

# The context of a vote request sent because the leader asked us to take over (TimeoutNow):
# it lets the vote through a follower's leader lease (thesis §3.10).
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class CampaignKind(enum.Enum):
    PRE_ELECTION = "pre_election"
    ELECTION = "election"
    TRANSFER = "transfer"


_VOTE_RESPONSE_TYPES = frozenset({MessageType.VOTE_RESPONSE, MessageType.PRE_VOTE_RESPONSE})

_VOTE_TYPES = frozenset(
    {
        MessageType.VOTE,
        MessageType.VOTE_RESPONSE,
        MessageType.PRE_VOTE,
        MessageType.PRE_VOTE_RESPONSE,
    }
)
_AFTER_APPEND_TYPES = frozenset(
    {MessageType.APPEND_RESPONSE, MessageType.VOTE_RESPONSE, MessageType.PRE_VOTE_RESPONSE}
)


class Raft:
    def __init__(self, config: Config, storage: Storage) -> None:
        self.id = config.id
        self.config = config
        self.rng = config.random_source()
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        # Durable: the latest term seen and whom we voted for in it (NO_NODE if nobody).
        self.term = 0
        self.vote = NO_NODE
        self.role = StateRole.FOLLOWER
        self.leader_id = NO_NODE
        self.is_learner = False
        self.tracker = ProgressTracker(config.max_inflight_messages, config.max_inflight_bytes)
        # ReadIndex and lease reads: their requests and answers (read_index.py).
        self.reads = LinearizableReads(self, self._send, self._broadcast_heartbeat)
        # Messages to send now, and messages to send only once the caller persisted.
        self.messages: list[Message] = []
        self.messages_after_append: list[Message] = []
        # Leader: index of the latest membership change it appended; none may be proposed
        # until the applied index reaches it.
        self.pending_conf_index = 0
        # Leader: bytes of entries appended in this term and not yet applied.
        self.uncommitted_size = 0
        # Leader: the node leadership is being handed to, or NO_NODE.
        self.lead_transferee = NO_NODE
        # Leader removed (or demoted) by a change committed at or below this index: it hands
        # over once a quorum of the new configuration knows that much is committed.
        self.step_down_after_commit: int | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        # Ticks since this node started: the local clock leader leases are measured on.
        self.ticks = 0
        # With leases, a node that just started may have acknowledged a leader's heartbeat
        # before it crashed, promising not to vote for an election timeout. It has forgotten
        # that promise, so it keeps it by refusing votes for one election timeout at start.
        self._startup_quiet_ticks = (
            config.election_tick if config.read_only_option is ReadOnlyOption.LEASE_BASED else 0
        )
        self._tick: Callable[[], None] = self._tick_election
        self._step_role: Callable[[Message], None] = self._step_follower

        hard_state, conf_state = storage.initial_state()
        membership = confchange.restore(conf_state, self._progress_factory())
        restored = self._switch_to_config(membership)
        if restored != _normalized(conf_state):
            raise InvariantViolation(f"restored {restored} differs from stored {conf_state}")
        if not hard_state.is_empty():
            self._load_hard_state(hard_state)
        if config.applied > 0:
            self.log.applied_to(config.applied)
        self.become_follower(self.term, NO_NODE)

    # -- observable state ------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(leader_id=self.leader_id, role=self.role)

    def conf_state(self) -> ConfState:
        return self.tracker.conf_state()

    def promotable(self) -> bool:
        """Whether this node may campaign: a voter with no snapshot still to install."""
        progress = self.tracker.progress.get(self.id)
        return (
            progress is not None and not progress.is_learner and not self.log.has_pending_snapshot()
        )

    # -- inputs ----------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        self._tick()

    def step(self, message: Message) -> None:
        """Process one message (local or from a peer). Raises on rejected proposals."""
        if message.term == 0:
            pass  # local message, or a forwarded proposal / read (they carry no term)
        elif message.term > self.term:
            if message.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                force = message.context == CAMPAIGN_TRANSFER
                in_lease = self.config.check_quorum and (
                    (
                        self.leader_id != NO_NODE
                        and self.election_elapsed < self.config.election_tick
                    )
                    or self.ticks < self._startup_quiet_ticks
                )
                if not force and in_lease:
                    # We heard from a leader within the minimum election timeout: a node
                    # asking for votes is partitioned or removed; ignore it (thesis §4.2.3).
                    return
            if message.type is MessageType.PRE_VOTE:
                pass  # never change our term in response to a PreVote
            elif message.type is MessageType.PRE_VOTE_RESPONSE and not message.reject:
                pass  # the term in the answer is the one we will campaign in
            elif message.type in (
                MessageType.APPEND,
                MessageType.HEARTBEAT,
                MessageType.SNAPSHOT,
            ):
                self.become_follower(message.term, message.sender)
            else:
                self.become_follower(message.term, NO_NODE)
        elif message.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and message.type in (
                MessageType.HEARTBEAT,
                MessageType.APPEND,
            ):
                # A leader cut off long enough for our term to pass its own must learn our
                # term, or it would never step down (with PreVote nobody else raises the
                # term for it). An empty append response carries it.
                self._send(Message(type=MessageType.APPEND_RESPONSE, to=message.sender))
            elif message.type is MessageType.PRE_VOTE:
                self._send(
                    Message(
                        type=MessageType.PRE_VOTE_RESPONSE,
                        to=message.sender,
                        term=self.term,
                        reject=True,
                    )
                )
            return

        match message.type:
            case MessageType.HUP:
                kind = CampaignKind.PRE_ELECTION if self.config.pre_vote else CampaignKind.ELECTION
                self._hup(kind)
            case MessageType.VOTE | MessageType.PRE_VOTE:
                self._handle_vote_request(message)
            case _:
                if message.type in _VOTE_RESPONSE_TYPES and message.reject:
                    self._learn_commit(message)
                self._step_role(message)

    # -- role transitions ------------------------------------------------------------------

    def become_follower(self, term: int, leader_id: NodeId) -> None:
        self._reset(term)
        self._step_role = self._step_follower
        self._tick = self._tick_election
        self.leader_id = leader_id
        self.role = StateRole.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.role is StateRole.LEADER:
            raise InvariantViolation("a leader cannot become a pre-candidate")
        # PreVote changes neither term nor vote: a failed pre-election leaves no trace.
        self._step_role = self._step_candidate
        self.tracker.reset_votes()
        self._tick = self._tick_election
        self.leader_id = NO_NODE
        self.role = StateRole.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.role is StateRole.LEADER:
            raise InvariantViolation("a leader cannot become a candidate")
        self._reset(self.term + 1)
        self._step_role = self._step_candidate
        self._tick = self._tick_election
        self.vote = self.id
        self.role = StateRole.CANDIDATE

    def become_leader(self) -> None:
        if self.role is StateRole.FOLLOWER:
            raise InvariantViolation("a follower cannot become leader without an election")
        self._reset(self.term)
        self._step_role = self._step_leader
        self._tick = self._tick_heartbeat
        self.leader_id = self.id
        self.role = StateRole.LEADER
        own = self.tracker.progress[self.id]
        own.become_replicate()
        own.recent_active = True
        # A conf change may sit uncommitted in our log; assume so until everything we hold
        # is applied (conservative: proposals wait at most until the no-op applies).
        self.pending_conf_index = self.log.last_index()
        if not self._append_entries([Entry(term=0, index=0)]):
            raise InvariantViolation("the empty entry of a new term must be accepted")

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NO_NODE
        self.leader_id = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self._abort_leader_transfer()
        self.tracker.reset_votes()
        last_index = self.log.last_index()
        for node_id, progress in self.tracker.progress.items():
            progress.match = 0
            progress.next = last_index + 1
            progress.reset_state(ReplicationState.PROBE)
            progress.recent_active = False
            progress.lease_ack_tick = 0
            progress.commit_known = 0
            if node_id == self.id:
                # Only what is durable counts toward commitment (rule 2 above).
                progress.match = self.log.persisted_index()
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.step_down_after_commit = None
        self.reads.reset()

    def _reset_randomized_election_timeout(self) -> None:
        timeout = self.config.election_tick
        self.randomized_election_timeout = timeout + self.rng.randrange(timeout)

    # -- ticks -----------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(type=MessageType.HUP, sender=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(type=MessageType.CHECK_QUORUM, sender=self.id))
            # A transfer that did not finish within an election timeout is abandoned, so
            # proposals are accepted again (thesis §3.10).
            if self.role is StateRole.LEADER and self.lead_transferee != NO_NODE:
                self._abort_leader_transfer()
        if self.role is not StateRole.LEADER:
            return
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(type=MessageType.BEAT, sender=self.id))

    # -- elections -------------------------------------------------------------------------

    def _hup(self, kind: CampaignKind) -> None:
        if self.role is StateRole.LEADER:
            return
        if not self.promotable():
            return
        if self.term >= MAX_TERM:
            # There is no next term to campaign in (see MAX_TERM): only a recovery that
            # resets the term gets this cluster electing again.
            return
        if self._has_unapplied_conf_changes():
            # The configuration we would campaign in is not final yet.
            return
        self._campaign(kind)

    def _has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        low = max(self.log.applied + 1, self.log.first_index())
        entries = self.log.slice(low, self.log.committed + 1, NO_LIMIT)
        return any(entry.kind is EntryKind.CONF_CHANGE for entry in entries)

    def _campaign(self, kind: CampaignKind) -> None:
        if kind is CampaignKind.PRE_ELECTION:
            self.become_pre_candidate()
            request_type = MessageType.PRE_VOTE
            # A pre-vote asks about the term we would move to, without moving.
            term = self.term + 1
        else:
            self.become_candidate()
            request_type = MessageType.VOTE
            term = self.term
        context = CAMPAIGN_TRANSFER if kind is CampaignKind.TRANSFER else b""
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for voter in sorted(self.tracker.voter_ids()):
            if voter == self.id:
                # Our own vote counts once it is durable (it arrives after persistence).
                self._send(Message(type=vote_response_type(request_type), to=self.id, term=term))
                continue
            self._send(
                Message(
                    type=request_type,
                    to=voter,
                    term=term,
                    index=last_index,
                    log_term=last_term,
                    context=context,
                )
            )

    def _handle_vote_request(self, message: Message) -> None:
        # We may vote if we already voted for this candidate (a retransmission), or have
        # not voted and know no leader in this term, or for a PreVote of a future term.
        can_vote = (
            self.vote == message.sender
            or (self.vote == NO_NODE and self.leader_id == NO_NODE)
            or (message.type is MessageType.PRE_VOTE and message.term > self.term)
        )
        response_type = vote_response_type(message.type)
        if can_vote and self.log.is_up_to_date(message.index, message.log_term):
            # Answer with the request's term: for a PreVote that is a future term, which
            # tells the pre-candidate the answer is for this election.
            self._send(Message(type=response_type, to=message.sender, term=message.term))
            if message.type is MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = message.sender
        else:
            # The refusal tells the candidate how far we know the log is committed (see
            # _learn_commit): the entry at our commit index and its term.
            self._send(
                Message(
                    type=response_type,
                    to=message.sender,
                    term=self.term,
                    reject=True,
                    commit=self.log.committed,
                    log_term=self.log.term_or_zero(self.log.committed),
                )
            )

    def _learn_commit(self, refusal: Message) -> None:
        """Advance our commit index from a voter's refusal, when provably safe.

        The voter's entry at `refusal.commit` (term `refusal.log_term`) is committed. If our
        entry there has the same term, Log Matching (§5.3) says our logs are identical up to
        it, so all of it is committed for us too. This breaks a deadlock: a leader that
        demoted or removed itself may step down holding more log than the remaining voters,
        which do not know the change committed and still count its vote in their old
        configuration. It refuses them (its log is more up to date) and may not campaign
        itself; learning the commit lets them apply the change and elect a leader without it.
        """
        if (
            refusal.commit > self.log.committed
            and refusal.log_term > 0
            and self.log.match_term(refusal.commit, refusal.log_term)
        ):
            self.log.commit_to(refusal.commit)

    def _poll(self, sender: NodeId, granted: bool) -> VoteResult:
        self.tracker.record_vote(sender, granted)
        _, _, result = self.tracker.tally_votes()
        return result

    # -- per-role message handling ---------------------------------------------------------

    def _step_follower(self, message: Message) -> None:
        match message.type:
            case MessageType.PROPOSE:
                if self.leader_id == NO_NODE:
                    raise ProposalDropped("no leader")
                if self.config.disable_proposal_forwarding:
                    raise NotLeader(self.leader_id)
                self._send(msgspec.structs.replace(message, to=self.leader_id))
            case MessageType.APPEND | MessageType.HEARTBEAT | MessageType.SNAPSHOT:
                if self.leader_id not in (NO_NODE, message.sender):
                    # A second leader in one term cannot exist (§5.2, Election Safety):
                    # a forged or buggy message; our leader keeps its follower.
                    return
                self.election_elapsed = 0
                self.leader_id = message.sender
                if message.type is MessageType.APPEND:
                    self._handle_append_entries(message)
                elif message.type is MessageType.HEARTBEAT:
                    self._handle_heartbeat(message)
                else:
                    self._handle_snapshot(message)
            case MessageType.TRANSFER_LEADER:
                if self.leader_id == NO_NODE:
                    raise ProposalDropped("no leader to transfer leadership from")
                self._send(msgspec.structs.replace(message, to=self.leader_id))
            case MessageType.TIMEOUT_NOW:
                # The leader asks us to take over now; skip PreVote and the lease check.
                # Only the leader we follow in this term may ask: it sends TimeoutNow only
                # to a follower that acknowledged its log in this term (§3.10), so that
                # follower knows it. From anyone else it would let one message depose a
                # healthy leader.
                if message.sender == self.leader_id:
                    self._hup(CampaignKind.TRANSFER)
            case MessageType.READ_INDEX:
                if self.leader_id == NO_NODE:
                    raise ProposalDropped("no leader to serve a read index")
                self._send(msgspec.structs.replace(message, to=self.leader_id))
            case MessageType.READ_INDEX_RESPONSE:
                self.reads.step_follower_response(message)
            case _:
                pass

    def _step_candidate(self, message: Message) -> None:
        own_response = (
            MessageType.PRE_VOTE_RESPONSE
            if self.role is StateRole.PRE_CANDIDATE
            else MessageType.VOTE_RESPONSE
        )
        match message.type:
            case MessageType.PROPOSE:
                raise ProposalDropped("no leader (election in progress)")
            case MessageType.READ_INDEX | MessageType.TRANSFER_LEADER:
                raise ProposalDropped("no leader (election in progress)")
            case MessageType.APPEND:
                self.become_follower(message.term, message.sender)
                self._handle_append_entries(message)
            case MessageType.HEARTBEAT:
                self.become_follower(message.term, message.sender)
                self._handle_heartbeat(message)
            case MessageType.SNAPSHOT:
                self.become_follower(message.term, message.sender)
                self._handle_snapshot(message)
            case _ if message.type is own_response:
                result = self._poll(message.sender, not message.reject)
                if result is VoteResult.WON:
                    if self.role is StateRole.PRE_CANDIDATE:
                        self._campaign(CampaignKind.ELECTION)
                    else:
                        self.become_leader()
                        self._broadcast_append()
                elif result is VoteResult.LOST:
                    # A PreVoteResp carries a future term; stay in ours.
                    self.become_follower(self.term, NO_NODE)
            case _:
                pass

    def _step_leader(self, message: Message) -> None:
        match message.type:
            case MessageType.BEAT:
                self._broadcast_heartbeat()
                return
            case MessageType.CHECK_QUORUM:
                if not self.tracker.quorum_active():
                    # We cannot reach a quorum: another leader may exist; stop serving.
                    self.become_follower(self.term, NO_NODE)
                for node_id, peer in self.tracker.progress.items():
                    if node_id != self.id:
                        peer.recent_active = False
                return
            case MessageType.PROPOSE:
                self._leader_propose(message)
                return
            case MessageType.READ_INDEX:
                self.reads.step_leader(message)
                return
            case _:
                pass

        progress = self.tracker.progress.get(message.sender)
        if progress is None:
            return
        match message.type:
            case MessageType.APPEND_RESPONSE:
                self._handle_append_response(message)
            case MessageType.HEARTBEAT_RESPONSE:
                progress.recent_active = True
                progress.flow_paused = False
                self.reads.record_heartbeat_ack(progress, message.index)
                # A follower knows no more committed than we told it; a larger claim
                # could end a removed leader's hand-over early.
                progress.commit_known = max(
                    progress.commit_known, min(message.commit, self.log.committed)
                )
                self._maybe_finish_step_down()
                if self.role is not StateRole.LEADER:
                    return
                if (
                    progress.match < self.log.last_index()
                    or progress.state is ReplicationState.PROBE
                ):
                    self._send_append(message.sender)
                self.reads.confirm(message)
            case MessageType.SNAPSHOT_STATUS:
                if progress.state is not ReplicationState.SNAPSHOT:
                    return
                if message.reject:
                    progress.pending_snapshot = 0
                progress.become_probe()
                # Wait for a heartbeat response before probing: the follower may still be
                # installing the snapshot.
                progress.flow_paused = True
            case MessageType.UNREACHABLE:
                # Appends to an unreachable follower were probably lost.
                if progress.state is ReplicationState.REPLICATE:
                    progress.become_probe()
            case MessageType.TRANSFER_LEADER:
                self._leader_transfer(message.sender)
            case _:
                pass

    # -- leader: proposals -----------------------------------------------------------------

    def _leader_propose(self, message: Message) -> None:
        if not message.entries:
            raise InvariantViolation("a proposal must carry entries")
        if self.id not in self.tracker.progress or self.is_learner:
            # Removed or demoted; it leads only until it has handed over.
            raise ProposalDropped("this leader is no longer a voter")
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        pending_conf_index = self.pending_conf_index
        for offset, entry in enumerate(message.entries):
            if entry.kind is EntryKind.CONF_CHANGE:
                try:
                    change = ConfChange.decode(entry.data)
                except ValueError as error:
                    raise ConfChangeInvalid(str(error)) from error
                self.check_conf_change_allowed(change)
                pending_conf_index = self.log.last_index() + offset + 1
        if not self._append_entries(list(message.entries)):
            raise ProposalDropped("too many uncommitted bytes")
        self.pending_conf_index = pending_conf_index
        self._broadcast_append()

    def check_conf_change_allowed(self, change: ConfChange) -> None:
        """Raise ConfChangeInvalid unless `change` may be proposed now."""
        if self.pending_conf_index > self.log.applied:
            raise ConfChangePending(
                f"a membership change at index {self.pending_conf_index} is not applied yet "
                f"(applied {self.log.applied})"
            )
        joint = self.tracker.voters.is_joint()
        if joint and not change.leave_joint():
            raise ConfChangeInvalid("must leave the joint configuration first")
        if not joint and change.leave_joint():
            raise ConfChangeInvalid("not in a joint configuration; nothing to leave")
        # Validate against the configuration it would apply to (state is not changed).
        confchange.apply(self._membership(), change, self._progress_factory())

    # -- leader: replication ---------------------------------------------------------------

    def _append_entries(self, entries: list[Entry]) -> bool:
        """Append entries of the current term; False (nothing changed) if over the
        uncommitted-bytes limit."""
        last_index = self.log.last_index()
        stamped = [
            Entry(self.term, last_index + 1 + offset, entry.kind, entry.data)
            for offset, entry in enumerate(entries)
        ]
        size = sum(entry.payload_size for entry in stamped)
        if (
            self.uncommitted_size > 0
            and size > 0
            and self.uncommitted_size + size > self.config.max_uncommitted_entries_size
        ):
            return False
        self.uncommitted_size += size
        new_last = self.log.append(stamped)
        # Our own copy counts once durable: this acknowledgement is stepped after persist.
        self._send(Message(type=MessageType.APPEND_RESPONSE, to=self.id, index=new_last))
        return True

    def reduce_uncommitted_size(self, size: int) -> None:
        if self.role is not StateRole.LEADER:
            return
        self.uncommitted_size = max(0, self.uncommitted_size - size)

    def _handle_append_response(self, message: Message) -> None:
        progress = self.tracker.progress[message.sender]
        progress.recent_active = True
        if message.reject:
            # Fast backtracking (etcd's extension of §5.3): jump to the follower's hint,
            # then past every entry of a term the follower's log cannot share.
            next_probe = message.reject_hint
            if message.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(
                    message.reject_hint, message.log_term
                )
            if progress.maybe_decrement_to(message.index, next_probe):
                if progress.state is ReplicationState.REPLICATE:
                    progress.become_probe()
                self._send_append(message.sender)
            return
        if message.index > self.log.last_index():
            # An acknowledgement of entries we never had (in this term our log only grows,
            # so a correct follower never sends one): ignore it rather than track a match
            # beyond our log.
            return
        was_paused = progress.is_paused()
        updated = progress.maybe_update(message.index)
        if not updated and not (
            progress.match == message.index and progress.state is ReplicationState.PROBE
        ):
            return
        match progress.state:
            case ReplicationState.PROBE:
                progress.become_replicate()
            case ReplicationState.SNAPSHOT:
                if progress.match + 1 >= self.log.first_index():
                    # The follower caught up past the snapshot; resume streaming.
                    progress.become_probe()
                    progress.become_replicate()
            case ReplicationState.REPLICATE:
                progress.inflights.free_to(message.index)
        if self._maybe_commit():
            self.reads.release_waiting()
            self._broadcast_append()
        elif message.sender != self.id and was_paused:
            self._send_append(message.sender)
        if message.sender != self.id:
            # Stream as much as the flow-control window allows.
            while self._maybe_send_append(message.sender, send_if_empty=False):
                pass
        if message.sender == self.lead_transferee and progress.match == self.log.last_index():
            self._send_timeout_now(message.sender)

    def _maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.tracker.committed(), self.term)

    def _broadcast_append(self) -> None:
        for node_id in sorted(self.tracker.progress):
            if node_id != self.id:
                self._send_append(node_id)

    def _send_append(self, to: NodeId) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: NodeId, send_if_empty: bool) -> bool:
        """Send `to` the entries it lacks (or a snapshot if they are compacted). Returns
        whether a message was sent."""
        progress = self.tracker.progress[to]
        if progress.is_paused():
            return False
        previous_index = progress.next - 1
        try:
            previous_term = self.log.term(previous_index)
            entries = []
            # With a full window only an empty APPEND goes out: if every inflight message
            # was lost, its answer (ack or rejection) is what frees the window again.
            if progress.state is not ReplicationState.REPLICATE or not progress.inflights.full():
                entries = self.log.entries(
                    progress.next,
                    self.config.max_size_per_message,
                    self._entries_room(progress),
                )
        except (LogCompacted, LogUnavailable):
            # The entries it needs are compacted away: only a snapshot can help.
            return self._maybe_send_snapshot(to)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                type=MessageType.APPEND,
                to=to,
                index=previous_index,
                log_term=previous_term,
                entries=tuple(entries),
                commit=self.log.committed,
            )
        )
        progress.sent_entries(len(entries), sum(entry.payload_size for entry in entries))
        return True

    def _entries_room(self, progress: Progress) -> int:
        """The most entries one APPEND to this follower may carry: what is left of its
        max_inflight_entries window (a probe carries no more than a whole window)."""
        limit = self.config.max_inflight_entries
        if limit <= 0:
            return NO_LIMIT
        if progress.state is ReplicationState.REPLICATE:
            return limit - progress.inflights.entries
        return limit

    def _maybe_send_snapshot(self, to: NodeId) -> bool:
        progress = self.tracker.progress[to]
        if not progress.recent_active:
            # Do not spend a snapshot on a follower that may be down.
            return False
        snapshot = self._storage_snapshot()
        if snapshot is None:
            return False
        if snapshot.is_empty():
            raise InvariantViolation("the log is compacted but storage has no snapshot")
        progress.become_snapshot(snapshot.metadata.index)
        self._send(Message(type=MessageType.SNAPSHOT, to=to, snapshot=snapshot))
        return True

    def _storage_snapshot(self) -> Snapshot | None:
        try:
            return self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return None

    def _broadcast_heartbeat(self, context: bytes | None = None) -> None:
        if context is None:
            context = self.reads.heartbeat_context()
        lease = self.reads.lease_based
        for node_id in sorted(self.tracker.progress):
            if node_id == self.id:
                continue
            # Never tell a follower to commit beyond what it is known to hold.
            commit = min(self.tracker.progress[node_id].match, self.log.committed)
            # With leases, the heartbeat carries our clock so the answer can extend the lease
            # from the moment it was sent.
            sent_tick = self.ticks if lease else 0
            self._send(
                Message(
                    type=MessageType.HEARTBEAT,
                    to=node_id,
                    index=sent_tick,
                    commit=commit,
                    context=context,
                )
            )

    # -- leader: transfer ------------------------------------------------------------------

    def _leader_transfer(self, transferee: NodeId) -> None:
        progress = self.tracker.progress[transferee]
        if progress.is_learner:
            return  # a learner cannot lead
        if self.lead_transferee != NO_NODE:
            if self.lead_transferee == transferee:
                return  # already in progress
            self._abort_leader_transfer()
        if transferee == self.id:
            return  # already the leader
        # The transfer must finish within an election timeout (see _tick_heartbeat).
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if progress.match == self.log.last_index():
            self._send_timeout_now(transferee)
        else:
            self._send_append(transferee)

    def _send_timeout_now(self, to: NodeId) -> None:
        self._send(Message(type=MessageType.TIMEOUT_NOW, to=to))

    def _abort_leader_transfer(self) -> None:
        self.lead_transferee = NO_NODE

    # -- follower: replication -------------------------------------------------------------

    def _handle_append_entries(self, message: Message) -> None:
        if message.index < self.log.committed:
            # Everything up to our commit index matches the leader's log already.
            self._send(
                Message(
                    type=MessageType.APPEND_RESPONSE, to=message.sender, index=self.log.committed
                )
            )
            return
        last_new = self.log.maybe_append(
            message.index, message.log_term, message.commit, message.entries
        )
        if last_new is not None:
            self._send(Message(type=MessageType.APPEND_RESPONSE, to=message.sender, index=last_new))
            return
        # Reject, with a hint: the last index at or below the probe whose term is at most
        # the probe's term, so the leader can skip a whole conflicting term per round trip.
        hint_index = min(message.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, message.log_term)
        self._send(
            Message(
                type=MessageType.APPEND_RESPONSE,
                to=message.sender,
                index=message.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, message: Message) -> None:
        # A correct leader sends min(its commit, our match): never beyond our last index.
        # A larger value comes from a buggy or forged heartbeat (or our log lost its
        # tail): it must not stop the node, and is not believed in part either. Clamped to
        # our last index it could commit entries of ours the leader never matched (a tail
        # left by an earlier leader); the leader's appends bring the commit index instead.
        if message.commit <= self.log.last_index():
            self.log.commit_to(message.commit)
        self._send(
            Message(
                type=MessageType.HEARTBEAT_RESPONSE,
                to=message.sender,
                index=message.index,
                commit=self.log.committed,
                context=message.context,
            )
        )

    def _handle_snapshot(self, message: Message) -> None:
        snapshot = message.snapshot
        if snapshot is None:
            return  # malformed; ignore
        if self._restore(snapshot):
            index = self.log.last_index()
        else:
            index = self.log.committed
        self._send(Message(type=MessageType.APPEND_RESPONSE, to=message.sender, index=index))

    def _restore(self, snapshot: Snapshot) -> bool:
        """Install `snapshot` if it is news to us. Never moves commit (or applied) back."""
        metadata = snapshot.metadata
        if metadata.index <= self.log.committed:
            return False
        if self.role is not StateRole.FOLLOWER:
            raise InvariantViolation("only a follower installs a snapshot")
        conf_state = metadata.conf_state
        if self.id not in conf_state.voters | conf_state.learners | conf_state.voters_outgoing:
            # A snapshot from a configuration we are not in; ignore it rather than install
            # a state in which we cannot take part.
            return False
        if self.log.match_term(metadata.index, metadata.term):
            # We already hold the snapshot's entries: just move the commit index.
            self.log.commit_to(metadata.index)
            return False
        self.log.restore(snapshot)
        self.tracker = ProgressTracker(
            self.config.max_inflight_messages, self.config.max_inflight_bytes
        )
        membership = confchange.restore(conf_state, self._progress_factory())
        restored = self._switch_to_config(membership)
        if restored != _normalized(conf_state):
            raise InvariantViolation(f"restored {restored} differs from snapshot {conf_state}")
        return True

    # -- membership ------------------------------------------------------------------------

    def _membership(self) -> confchange.Membership:
        return confchange.Membership(
            voters=self.tracker.voters,
            learners=self.tracker.learners,
            learners_next=self.tracker.learners_next,
            auto_leave=self.tracker.auto_leave,
            progress=self.tracker.progress,
        )

    def _progress_factory(self) -> confchange.ProgressFactory:
        # Starting at the last index (not after it) means a new member is probed at once
        # with the last entry, instead of waiting for the next proposal or heartbeat.
        return confchange.ProgressFactory(
            next_index=self.log.last_index(),
            max_inflight_messages=self.config.max_inflight_messages,
            max_inflight_bytes=self.config.max_inflight_bytes,
            max_inflight_entries=self.config.max_inflight_entries,
        )

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        """Install a committed membership change. Raises ConfChangeInvalid (no change) if it
        does not apply to the current configuration; every node rejects it alike."""
        membership = confchange.apply(self._membership(), change, self._progress_factory())
        return self._switch_to_config(membership)

    def _switch_to_config(self, membership: confchange.Membership) -> ConfState:
        self.tracker.voters = membership.voters
        self.tracker.learners = membership.learners
        self.tracker.learners_next = membership.learners_next
        self.tracker.auto_leave = membership.auto_leave
        self.tracker.progress = membership.progress
        conf_state = self.tracker.conf_state()
        own = self.tracker.progress.get(self.id)
        self.is_learner = own is not None and own.is_learner
        if (
            (own is None or self.is_learner)
            and self.role is StateRole.LEADER
            and self.config.step_down_on_removal
        ):
            # Removed or demoted: hand over, but not yet. The other voters may not know the
            # change committed; until they apply it their configuration still needs our
            # vote, and if we stopped now nobody could win an election. We keep leading
            # (without counting ourselves, accepting no proposals) until a quorum of the new
            # configuration reports a commit index covering the change.
            self.step_down_after_commit = self.log.committed
        if self.role is not StateRole.LEADER or not conf_state.voters:
            return conf_state
        # The quorum may have shrunk, committing more; new members need the log.
        if self._maybe_commit():
            self._broadcast_append()
        else:
            for node_id in sorted(self.tracker.progress):
                if node_id != self.id:
                    self._maybe_send_append(node_id, send_if_empty=False)
        if self.lead_transferee != NO_NODE and self.lead_transferee not in self.tracker.voter_ids():
            self._abort_leader_transfer()
        self._maybe_finish_step_down()
        return conf_state

    def _maybe_finish_step_down(self) -> None:
        if self.step_down_after_commit is None or self.role is not StateRole.LEADER:
            return
        known = self.tracker.quorum_index(lambda progress: progress.commit_known)
        if known >= self.step_down_after_commit:
            self.become_follower(self.term, NO_NODE)

    def applied_to(self, index: int) -> None:
        """The application applied everything up to `index`."""
        self.log.applied_to(max(index, self.log.applied))
        if (
            self.tracker.auto_leave
            and self.role is StateRole.LEADER
            and self.log.applied >= self.pending_conf_index
        ):
            # The joint configuration is in force and committed: propose leaving it.
            # If dropped (e.g. a transfer is in progress), the next apply retries it.
            leave = ConfChange()
            with contextlib.suppress(ProposalDropped):
                self.step(
                    Message(
                        type=MessageType.PROPOSE,
                        sender=self.id,
                        entries=(Entry(0, 0, EntryKind.CONF_CHANGE, leave.encode()),),
                    )
                )

    # -- plumbing --------------------------------------------------------------------------

    def _load_hard_state(self, hard_state: HardState) -> None:
        if hard_state.term > MAX_TERM:
            raise InvariantViolation(
                f"stored term {hard_state.term} is beyond the largest term {MAX_TERM}: "
                "recover this member with `raftkv recover --force-new-cluster`"
            )
        if not self.log.committed <= hard_state.commit <= self.log.last_index():
            raise InvariantViolation(
                f"stored commit {hard_state.commit} outside [{self.log.committed}, "
                f"{self.log.last_index()}]"
            )
        self.log.committed = hard_state.commit
        self.term = hard_state.term
        self.vote = hard_state.vote

    def _send(self, message: Message) -> None:
        sender = message.sender if message.sender != NO_NODE else self.id
        term = message.term
        if message.type in _VOTE_TYPES:
            if term == 0:
                raise InvariantViolation(f"{message.type.value} must carry a term")
        elif term != 0:
            raise InvariantViolation(f"{message.type.value} must not set its term")
        elif message.type not in (MessageType.PROPOSE, MessageType.READ_INDEX):
            # Forwarded proposals and reads keep term 0: they are local to the leader.
            term = self.term
        if sender != message.sender or term != message.term:
            message = msgspec.structs.replace(message, sender=sender, term=term)
        if message.type in _AFTER_APPEND_TYPES:
            self.messages_after_append.append(message)
        else:
            if message.to == self.id:
                raise InvariantViolation(f"{message.type.value} addressed to ourselves")
            self.messages.append(message)


def _normalized(conf_state: ConfState) -> ConfState:
    # auto_leave is meaningless outside a joint configuration.
    if not conf_state.voters_outgoing and conf_state.auto_leave:
        return msgspec.structs.replace(conf_state, auto_leave=False)
    return conf_state
