"""What the leader knows about each follower: `Progress`, `Inflights`, `ProgressTracker`.

Replication states of a follower (etcd-io/raft's `tracker/progress.go`):
- PROBE: the leader does not know the follower's last matching index. It sends one APPEND
  per heartbeat interval and waits for the answer, moving `next` back on rejection.
- REPLICATE: the follower is known to match up to `match`; the leader streams APPENDs
  optimistically (advancing `next` as it sends), bounded by `Inflights`.
- SNAPSHOT: the follower needs a snapshot (its next entry is compacted); nothing else is sent
  until the snapshot is reported applied or failed.

Invariants: `match < next`; in REPLICATE, `match <= next - 1` and every index in
(`match`, `next`) has been sent; in SNAPSHOT, `pending_snapshot` is the snapshot's index.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.raft.core.errors import InvariantViolation
from raftkv.raft.core.quorum import JointConfig, VoteResult
from raftkv.raft.core.types import ConfState, NodeId


class ReplicationState(enum.Enum):
    PROBE = "StateProbe"
    REPLICATE = "StateReplicate"
    SNAPSHOT = "StateSnapshot"


class Inflights:
    """APPEND messages sent but not yet acknowledged, each with its last index, size and
    number of entries.

    Bounded by a message count, (if `max_bytes` > 0) by total bytes and (if `max_entries`
    > 0) by total entries. Freed in order as acknowledgements arrive. Invariant: `bytes`
    and `entries` are the sums over the queue.
    """

    __slots__ = ("_queue", "bytes", "entries", "max_bytes", "max_count", "max_entries")

    def __init__(self, max_count: int, max_bytes: int, max_entries: int = 0) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._queue: deque[tuple[int, int, int]] = deque()
        self.bytes = 0
        self.entries = 0

    def add(self, index: int, size: int, entries: int = 1) -> None:
        if self.full():
            raise InvariantViolation("cannot add to full inflights")
        if self._queue and index <= self._queue[-1][0]:
            raise InvariantViolation(f"inflight index {index} is not increasing")
        self._queue.append((index, size, entries))
        self.bytes += size
        self.entries += entries

    def free_to(self, index: int) -> None:
        """Free every inflight message whose last index is at most `index`."""
        while self._queue and self._queue[0][0] <= index:
            _, size, entries = self._queue.popleft()
            self.bytes -= size
            self.entries -= entries

    def full(self) -> bool:
        if len(self._queue) >= self.max_count:
            return True
        if self.max_entries > 0 and self.entries >= self.max_entries:
            return True
        return self.max_bytes > 0 and self.bytes >= self.max_bytes

    def count(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self.bytes = 0
        self.entries = 0


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    inflights: Inflights
    state: ReplicationState = ReplicationState.PROBE
    # In SNAPSHOT: the index of the snapshot being sent.
    pending_snapshot: int = 0
    # Heard from within the current election timeout (CheckQuorum). Reset by the leader.
    recent_active: bool = False
    # Whether APPENDs to this follower are paused: in PROBE, a probe carrying entries is
    # unanswered; in REPLICATE, the inflight window is full. Any sign of life from the
    # follower (an append or heartbeat response) clears it, so that a window whose
    # messages were all lost is probed again instead of stalling forever.
    flow_paused: bool = False
    is_learner: bool = False
    # Leader, LEASE_BASED reads: our tick count when we sent the latest heartbeat this
    # follower acknowledged, 0 if none (heartbeats sent at tick 0 never count). The
    # acknowledgement promised to vote for nobody else until an election timeout after
    # that moment (see LinearizableReads.lease_holds in read_index.py).
    lease_ack_tick: int = 0
    # The follower's commit index as of its latest heartbeat response: how a removed
    # leader knows the new configuration learned that its removal committed.
    commit_known: int = 0

    def reset_state(self, state: ReplicationState) -> None:
        self.flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        # Coming back from SNAPSHOT, the follower has at least the snapshot's index.
        if self.state is ReplicationState.SNAPSHOT:
            pending = self.pending_snapshot
            self.reset_state(ReplicationState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ReplicationState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self.reset_state(ReplicationState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self.reset_state(ReplicationState.SNAPSHOT)
        self.pending_snapshot = snapshot_index
        # What the follower will hold once the snapshot is installed.
        self.next = snapshot_index + 1

    def sent_entries(self, count: int, size: int) -> None:
        """Record that an APPEND with `count` entries (`size` bytes) starting at `next` was
        sent. An empty APPEND (count 0) only probes or carries the commit index."""
        match self.state:
            case ReplicationState.REPLICATE:
                if count > 0:
                    self.next += count
                    self.inflights.add(self.next - 1, size, count)
                self.flow_paused = self.inflights.full()
            case ReplicationState.PROBE:
                if count > 0:
                    self.flow_paused = True
            case ReplicationState.SNAPSHOT:
                raise InvariantViolation("sending entries to a follower awaiting a snapshot")

    def maybe_update(self, index: int) -> bool:
        """An APPEND up to `index` was accepted. Returns whether `match` moved."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.flow_paused = False
        return True

    def maybe_decrement_to(self, rejected: int, match_hint: int) -> bool:
        """An APPEND at `rejected` was refused; the follower's hint says it may match up to
        `match_hint`. Returns False if the rejection is stale (already superseded)."""
        if self.state is ReplicationState.REPLICATE:
            # Stale unless it rejects the entry right after our match.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # PROBE (or SNAPSHOT): only the answer to the probe at next - 1 counts.
        if self.next - 1 != rejected:
            return False
        next_index = max(min(rejected, match_hint + 1), self.match + 1)
        if next_index == self.next:
            # It refused the entry at its own acknowledged match: it lost entries it had
            # acknowledged (a disk that lied about an fsync; a correct follower never
            # does). Probing again at once would be refused again, forever, as fast as
            # the two can exchange messages: wait for the next heartbeat's answer instead.
            return False
        self.next = next_index
        self.flow_paused = False
        return True

    def is_paused(self) -> bool:
        """Whether the leader should hold back APPENDs to this follower."""
        match self.state:
            case ReplicationState.PROBE | ReplicationState.REPLICATE:
                return self.flow_paused
            case ReplicationState.SNAPSHOT:
                return True


@dataclass(slots=True)
class ProgressTracker:
    """The configuration in force and every member's progress.

    Invariant: `progress` has exactly one entry per member of `voters` ∪ `learners` ∪
    `learners_next`; voters and learners are disjoint.
    """

    max_inflight_messages: int
    max_inflight_bytes: int
    voters: JointConfig = field(default_factory=JointConfig)
    learners: frozenset[NodeId] = frozenset()
    # Voters of the outgoing configuration that become learners when leaving joint.
    learners_next: frozenset[NodeId] = frozenset()
    auto_leave: bool = False
    progress: dict[NodeId, Progress] = field(default_factory=dict)
    votes: dict[NodeId, bool] = field(default_factory=dict)

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=self.voters.incoming.voters,
            learners=self.learners,
            voters_outgoing=self.voters.outgoing.voters,
            learners_next=self.learners_next,
            auto_leave=self.auto_leave,
        )

    def is_singleton(self) -> bool:
        return len(self.voters.incoming.voters) == 1 and not self.voters.is_joint()

    def quorum_index(self, value: Callable[[Progress], int]) -> int:
        """The largest `value` a quorum of voters has reached (a voter without progress
        counts as 0): commitment over `match`, and the same question over other fields."""

        def reached(node_id: NodeId) -> int | None:
            progress = self.progress.get(node_id)
            return None if progress is None else value(progress)

        return self.voters.committed_index(reached)

    def committed(self) -> int:
        return self.quorum_index(lambda progress: progress.match)

    def voter_ids(self) -> frozenset[NodeId]:
        return self.voters.ids()

    def quorum_active(self) -> bool:
        active = [
            node_id
            for node_id, progress in self.progress.items()
            if progress.recent_active and not progress.is_learner
        ]
        return self.voters.has_quorum(active)

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: NodeId, granted: bool) -> None:
        # The first answer of a node in a term counts; duplicates are ignored.
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for node_id in self.voter_ids() if self.votes.get(node_id) is True)
        rejected = sum(1 for node_id in self.voter_ids() if self.votes.get(node_id) is False)
        return granted, rejected, self.voters.vote_result(self.votes)
