"""The Raft node's Prometheus families, read from the node at scrape time: its state
(`NodeStatus`) and its counters and histograms (`NodeStats`). Each metric is described in
raftkv.server.metrics' docstring."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from raftkv.raft.core.types import StateRole
from raftkv.raft.driver.errors import Stopped
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.status import Histogram, NodeStatus
from raftkv.server.histograms import add_histogram

__all__ = ["gauge", "raft_families"]


def raft_families(node: Node) -> Iterator[Metric]:
    """Every family of the node's; those of its state without samples before it starts."""
    yield from _raft_state(_status_or_none(node))
    yield from _raft_stats(node)


def gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge without labels: `value`, or no sample when None."""
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


def _status_or_none(node: Node) -> NodeStatus | None:
    try:
        return node.status()
    except Stopped:
        return None  # not started yet


# Gauges read from NodeStatus: name, help, value.
_STATUS_GAUGES: tuple[tuple[str, str, Callable[[NodeStatus], int]], ...] = (
    ("raftkv_term", "The current Raft term.", lambda status: status.term),
    ("raftkv_leader_id", "The leader this node knows, 0 if none.", lambda status: status.leader_id),
    ("raftkv_commit_index", "The log's commit index.", lambda status: status.commit_index),
    (
        "raftkv_applied_index",
        "The index the state machine has applied.",
        lambda status: status.applied_index,
    ),
    (
        "raftkv_log_first_index",
        "The first log index held after the snapshot.",
        lambda status: status.first_index,
    ),
    ("raftkv_log_last_index", "The last log index.", lambda status: status.last_index),
    (
        "raftkv_snapshot_index",
        "The index of the latest snapshot.",
        lambda status: status.snapshot_index,
    ),
    ("raftkv_voters", "Voters in the configuration.", lambda status: len(status.voters)),
    ("raftkv_learners", "Learners in the configuration.", lambda status: len(status.learners)),
    (
        "raftkv_batching",
        "1 while writes proposed together share log entries here (batch_proposals).",
        lambda status: int(status.batching),
    ),
    (
        "raftkv_proposals_pending",
        "Proposals on this node waiting for their outcome.",
        lambda status: status.pending_proposals,
    ),
    (
        "raftkv_reads_pending",
        "Linearizable reads on this node waiting for their read index.",
        lambda status: status.pending_reads,
    ),
)


def _raft_state(status: NodeStatus | None) -> Iterator[Metric]:
    """The node's state; families without samples before it has started."""
    for name, documentation, read in _STATUS_GAUGES:
        yield gauge(name, documentation, read(status) if status is not None else None)
    role = GaugeMetricFamily(
        "raftkv_role", "1 for this node's Raft role, 0 for the others.", labels=["role"]
    )
    match_index = GaugeMetricFamily(
        "raftkv_peer_match_index",
        "On the leader, the highest log index known replicated on each member.",
        labels=["peer"],
    )
    if status is not None:
        for candidate in StateRole:
            role.add_metric([candidate.name.lower()], 1 if candidate is status.role else 0)
        for peer, progress in status.progress.items():
            match_index.add_metric([str(peer)], progress.match)
    yield role
    yield match_index


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[])
    add_histogram(family, [], histogram)
    return family


def _raft_stats(node: Node) -> Iterator[Metric]:
    stats = node.stats
    counters = (
        (
            "raftkv_leader_changes",
            "Times the leader this node knows changed.",
            stats.leader_changes,
        ),
        (
            "raftkv_proposals_committed",
            "Proposals made on this node that committed and were applied here.",
            stats.proposals_committed,
        ),
        (
            "raftkv_proposals_failed",
            "Proposals made on this node that will never apply or whose outcome is unknown.",
            stats.proposals_failed,
        ),
        (
            "raftkv_proposals_batched",
            "Proposals that shared the log entry of the one before them.",
            stats.proposals_batched,
        ),
        ("raftkv_fsyncs", "Durable (fsynced) writes of the Raft log.", stats.fsyncs),
        ("raftkv_entries_persisted", "Log entries written.", stats.entries_persisted),
        (
            "raftkv_commands_applied",
            "Commands applied to the state machine.",
            stats.commands_applied,
        ),
        (
            "raftkv_messages_rejected",
            "Peer messages dropped as malformed, misaddressed, or from an unknown or removed id.",
            stats.messages_rejected,
        ),
    )
    for name, documentation, value in counters:
        yield CounterMetricFamily(name, documentation, value=value)
    yield _histogram(
        "raftkv_append_duration_seconds",
        "From submitting a Ready's write to the loop finding it durable.",
        stats.append_seconds,
    )
    yield _histogram(
        "raftkv_fsync_duration_seconds",
        "The storage write (with fsync) of a Ready that must be durable.",
        stats.fsync_seconds,
    )
    yield _histogram(
        "raftkv_entries_per_fsync", "Log entries per durable write.", stats.entries_per_fsync
    )
    yield _histogram(
        "raftkv_apply_duration_seconds",
        "One state machine apply call (the committed commands of one Ready).",
        stats.apply_seconds,
    )
    snapshots = CounterMetricFamily(
        "raftkv_snapshots",
        "Snapshots created of our own state and installed from the leader.",
        labels=["operation"],
    )
    snapshots.add_metric(["create"], stats.snapshots_created)
    snapshots.add_metric(["install"], stats.snapshots_installed)
    yield snapshots
    durations = HistogramMetricFamily(
        "raftkv_snapshot_duration_seconds",
        "Creating a snapshot (encode and write) or installing the leader's.",
        labels=["operation"],
    )
    add_histogram(durations, ["create"], stats.snapshot_create_seconds)
    add_histogram(durations, ["install"], stats.snapshot_install_seconds)
    yield durations
    yield gauge(
        "raftkv_snapshot_last_size_bytes",
        "The data size of the latest snapshot created or installed.",
        stats.last_snapshot_bytes,
    )
