"""`NodeSettings`: the runtime's knobs, validated once. Units are in the names."""

from __future__ import annotations

import random
from dataclasses import dataclass

from raftkv.raft.core.config import Config
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.raft.core.types import NodeId, ReadOnlyOption


@dataclass(frozen=True, slots=True)
class NodeSettings:
    # Length of one core tick. Elections time out after election_ticks..2×election_ticks
    # ticks; heartbeats go out every heartbeat_ticks.
    tick_interval_s: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    # Lease-based reads skip the quorum round of ReadIndex; they rely on bounded clock
    # drift between nodes (thesis §6.4.1). Off by default.
    lease_reads: bool = False
    # Followers forward proposals to the leader; if off, they raise NotLeader(hint).
    forward_proposals: bool = True

    # Group commit: proposals stepped into the core between two persists form one batch
    # (one fsync). A batch stops growing at either limit; the rest waits for the next.
    max_batch_entries: int = 4096
    max_batch_bytes: int = 8 << 20
    # Batchable commands (Node.propose) drained together share one log entry (a batch:
    # envelope.encode_batch), so that every member appends, fsyncs and applies them as
    # one; only while every member has declared it reads batch entries (a raftkv before
    # this format skips them: log_formats.py). False: never batch.
    batch_proposals: bool = True
    # Bounded queues: messages from peers beyond this are dropped (Raft retransmits);
    # requests beyond max_pending_requests fail with Overloaded.
    max_inbox_messages: int = 20_000
    max_pending_requests: int = 100_000
    # The largest command `propose` accepts. An entry must fit in one transport message
    # (PeerTransportSettings.max_receive_message_bytes, 64 MiB by default) or no follower
    # could ever receive it.
    max_command_bytes: int = 8 << 20
    # Core limits (see raftkv.raft.core.Config).
    max_size_per_message: int = 1 << 20
    max_inflight_messages: int = 256
    max_uncommitted_bytes: int = 64 << 20

    # Default deadlines for requests that do not give their own.
    proposal_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    membership_timeout_s: float = 10.0
    # A read or proposal waiting for a leader is retried this often (in ticks).
    retry_ticks: int = 5

    # Snapshot the state machine after this many applied entries, keeping this many
    # entries before the snapshot for followers that lag a little (no snapshot needed).
    snapshot_every_entries: int = 10_000
    snapshot_keep_entries: int = 5_000
    # ... or once the entries applied since the last snapshot hold this many bytes of
    # commands, whichever comes first (0: by count only). Bounds the log's size on disk
    # when entries are large.
    snapshot_every_bytes: int = 64 << 20

    # A learner is promoted only if the leader heard from it within an election timeout,
    # its log is within this many entries of the leader's, AND it holds at least this
    # fraction of the leader's log (etcd's 90 %). The fraction is what protects a young
    # cluster, whose whole log is shorter than the lag allowed: promoting a learner that
    # never answered (a typo in its address, a machine not started yet) would add a voter
    # that cannot vote — with one voter before, the cluster could no longer commit.
    promote_max_lag_entries: int = 100
    promote_min_log_fraction: float = 0.9

    # stop(): a leader first hands leadership to a caught-up voter, waiting this long.
    stop_transfer_timeout_s: float = 3.0
    # Persist in a writer thread (production) or inline on the loop (deterministic
    # simulation with MemoryStorage). Inline, a BackgroundSnapshots state machine's
    # snapshot is also encoded on the loop (after a number of loop turns drawn from the
    # node's rng), not on a worker thread whose timing no seed decides.
    persist_in_thread: bool = True

    def __post_init__(self) -> None:
        positive = {
            "tick_interval_s": self.tick_interval_s,
            "heartbeat_ticks": self.heartbeat_ticks,
            "max_batch_entries": self.max_batch_entries,
            "max_batch_bytes": self.max_batch_bytes,
            "max_command_bytes": self.max_command_bytes,
            "max_inbox_messages": self.max_inbox_messages,
            "max_pending_requests": self.max_pending_requests,
            "max_size_per_message": self.max_size_per_message,
            "max_inflight_messages": self.max_inflight_messages,
            "max_uncommitted_bytes": self.max_uncommitted_bytes,
            "proposal_timeout_s": self.proposal_timeout_s,
            "read_timeout_s": self.read_timeout_s,
            "membership_timeout_s": self.membership_timeout_s,
            "retry_ticks": self.retry_ticks,
            "snapshot_every_entries": self.snapshot_every_entries,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigInvalid(f"{name} must be greater than 0 (got {value})")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigInvalid("election_ticks must be greater than heartbeat_ticks")
        for name, value in {
            "snapshot_keep_entries": self.snapshot_keep_entries,
            "snapshot_every_bytes": self.snapshot_every_bytes,
            "promote_max_lag_entries": self.promote_max_lag_entries,
            "stop_transfer_timeout_s": self.stop_transfer_timeout_s,
        }.items():
            if value < 0:
                raise ConfigInvalid(f"{name} must not be negative (got {value})")
        fraction = self.promote_min_log_fraction
        if not 0.0 <= fraction <= 1.0:
            raise ConfigInvalid(f"promote_min_log_fraction must be within 0..1 (got {fraction})")
        if self.lease_reads and not self.check_quorum:
            raise ConfigInvalid("lease_reads requires check_quorum")

    @property
    def election_timeout_s(self) -> float:
        """The shortest election timeout, in seconds (election_ticks ticks)."""
        return self.election_ticks * self.tick_interval_s

    def core_config(self, node_id: NodeId, *, applied: int, rng: random.Random) -> Config:
        """The core's Config for node `node_id` run with these settings, starting from its
        stored snapshot at index `applied`; `rng` draws its randomized election timeouts."""
        return Config(
            id=node_id,
            election_tick=self.election_ticks,
            heartbeat_tick=self.heartbeat_ticks,
            applied=applied,
            max_size_per_message=self.max_size_per_message,
            max_inflight_messages=self.max_inflight_messages,
            max_uncommitted_entries_size=self.max_uncommitted_bytes,
            check_quorum=self.check_quorum,
            pre_vote=self.pre_vote,
            read_only_option=(
                ReadOnlyOption.LEASE_BASED if self.lease_reads else ReadOnlyOption.SAFE
            ),
            disable_proposal_forwarding=not self.forward_proposals,
            rng=rng,
        )
