"""What a running node reports about itself: `NodeStatus` (a snapshot of its state) and
`NodeStats` (counters and latency histograms since start, read by benchmarks and exported
by `raftkv.server.metrics`).

The histograms are plain accumulators (`Histogram`): the Raft library does not depend on a
metrics library; a server reads them when scraped. Durations are wall-clock seconds from
`time.perf_counter`: measurements only, never an input to the node's behaviour (which runs
on its injectable clock), so simulations stay deterministic.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from functools import partial
from typing import Final

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
    # Seconds since a message from each peer last arrived here (peers never heard from
    # are absent).
    last_contact_s: dict[NodeId, float] = field(default_factory=dict)
    pending_proposals: int = 0
    pending_reads: int = 0
    # This node was removed from the cluster by a membership change.
    removed: bool = False
    stopped: bool = False
    # This node writes batch entries now (Node.batching).
    batching: bool = False


# Bucket upper bounds. Latencies: 100µs (a fast fsync) to 10s (a stalled disk).
LATENCY_BOUNDS_S: Final = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
    5.0, 10.0,
)  # fmt: skip
# Snapshots take O(state): 1ms to 10 minutes.
SNAPSHOT_BOUNDS_S: Final = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0)
# 0 (a hard state alone, e.g. a vote) then powers of two up to NodeSettings' default
# max_batch_entries.
ENTRY_COUNT_BOUNDS: Final = (0.0, *(float(2**power) for power in range(13)))


@dataclass(slots=True)
class Histogram:
    """Observations counted into fixed buckets, as a Prometheus histogram does: the bucket
    of bound b counts the values <= b (and above the previous bound).

    Invariants: `bounds` is strictly increasing and not empty; `counts` has one more item
    than `bounds`, the last counting values above every bound; `count == sum(counts)`.
    `observe` costs one bisect (about 0.2µs): cheap enough for every Ready.
    """

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        bounds = self.bounds
        if not bounds or any(low >= high for low, high in itertools.pairwise(bounds)):
            raise ValueError(f"histogram bounds must increase strictly: {bounds}")
        self.counts = [0] * (len(bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(bound, observations <= bound) for every bound, then (inf, count)."""
        buckets: list[tuple[float, int]] = []
        seen = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += count
            buckets.append((bound, seen))
        return buckets


@dataclass(slots=True)
class NodeStats:
    """Counters and histograms since the node started. Only the node's loop writes them."""

    fsyncs: int = 0
    entries_persisted: int = 0
    commands_applied: int = 0
    snapshots_created: int = 0
    snapshots_installed: int = 0
    leader_changes: int = 0
    messages_dropped: int = 0
    messages_rejected: int = 0
    overloaded: int = 0
    # Proposals made on this node (commands and membership changes) by how they ended:
    # committed = applied here, whatever the state machine answered (a refusal such as a
    # failed compare is still a committed proposal); failed = will never apply or the
    # outcome is unknown (dropped, overwritten, timed out, node stopping or removed).
    # A proposal whose caller gave up (cancelled) counts in neither.
    proposals_committed: int = 0
    proposals_failed: int = 0
    # Proposals that shared a log entry with the one before them (batch_proposals): the
    # entries they saved.
    proposals_batched: int = 0
    # The size of the latest snapshot created or installed (its data, in bytes).
    last_snapshot_bytes: int = 0
    # From submitting a Ready's write to the loop finding it durable: the storage write
    # plus any wait for the writer thread (behind a snapshot write) and for the loop.
    append_seconds: Histogram = field(default_factory=partial(Histogram, LATENCY_BOUNDS_S))
    # The storage write itself of a Ready that must be durable (write + fsync), timed on
    # the writer thread.
    fsync_seconds: Histogram = field(default_factory=partial(Histogram, LATENCY_BOUNDS_S))
    # Entries per durable write (group commit: the higher, the more proposals share one).
    entries_per_fsync: Histogram = field(default_factory=partial(Histogram, ENTRY_COUNT_BOUNDS))
    # One state machine `apply` call (a Ready's committed commands, applied together).
    apply_seconds: Histogram = field(default_factory=partial(Histogram, LATENCY_BOUNDS_S))
    # Taking a snapshot of our own: encoding the state machine, then the storage write.
    snapshot_create_seconds: Histogram = field(
        default_factory=partial(Histogram, SNAPSHOT_BOUNDS_S)
    )
    # Installing a leader's snapshot into the state machine.
    snapshot_install_seconds: Histogram = field(
        default_factory=partial(Histogram, SNAPSHOT_BOUNDS_S)
    )
