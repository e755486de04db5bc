"""What a running node reports about itself: `NodeStatus` (a snapshot of its state) and
`NodeStats` (counters since start, read by benchmarks and, later, metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.core.types import NodeId, StateRole


@dataclass(frozen=True, slots=True)
class PeerProgress:
    """The leader's view of one member's replication."""

    match: int
    next: int
    state: str
    recent_active: bool
    is_learner: bool


@dataclass(frozen=True, slots=True)
class NodeStatus:
    id: NodeId
    role: StateRole
    term: int
    leader_id: NodeId
    commit_index: int
    applied_index: int
    first_index: int
    last_index: int
    snapshot_index: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    # Every member's peer address this node knows.
    peers: dict[NodeId, str]
    # Filled on the leader only.
    progress: dict[NodeId, PeerProgress] = field(default_factory=dict)
    pending_proposals: int = 0
    pending_reads: int = 0
    # This node was removed from the cluster by a membership change.
    removed: bool = False
    stopped: bool = False


@dataclass(slots=True)
class NodeStats:
    """Counters since the node started."""

    fsyncs: int = 0
    entries_persisted: int = 0
    commands_applied: int = 0
    snapshots_created: int = 0
    snapshots_installed: int = 0
    leader_changes: int = 0
    messages_dropped: int = 0
    messages_rejected: int = 0
    overloaded: int = 0
