"""Configuration of one Raft node, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from raftkv.raft.core.errors import ConfigInvalid
from raftkv.raft.core.types import NO_NODE, NodeId, ReadOnlyOption

NO_LIMIT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of the pure core. Time is in ticks; the driver decides how long a tick is.

    Each field says its default and trade-off.
    """

    # This node's id; never NO_NODE.
    id: NodeId
    # Ticks without hearing from a leader before a follower campaigns. The actual timeout
    # is drawn uniformly from [election_tick, 2 * election_tick) each time (§5.2), so
    # split votes resolve. Must exceed heartbeat_tick; 10× is the usual ratio.
    election_tick: int = 10
    # Ticks between leader heartbeats.
    heartbeat_tick: int = 1
    # The index the state machine has applied at start (restart). Entries at or below it
    # are never returned in committed_entries again.
    applied: int = 0
    # Maximum bytes of entries in one APPEND message (at least one entry is always sent).
    # Smaller means faster probing, larger means higher throughput.
    max_size_per_message: int = 1 << 20
    # Maximum bytes of committed entries returned in one Ready (at least one).
    max_committed_size_per_ready: int = 4 << 20
    # Maximum bytes of uncommitted entries in the leader's log; proposals beyond it are
    # dropped so a stalled cluster cannot grow the log without bound. The no-op is exempt.
    max_uncommitted_entries_size: int = 64 << 20
    # Maximum APPEND messages in flight to one follower in the replicate state.
    max_inflight_messages: int = 256
    # Maximum bytes of entries in flight to one follower (0 disables the byte limit).
    max_inflight_bytes: int = 32 << 20
    # Maximum entries in flight to one follower in the replicate state, and in any one
    # APPEND (0 disables the limit). Bounds the work one step can cause: a follower far
    # behind (back from a partition or a restart) is sent this many entries, and more as
    # its acknowledgements come back, instead of a whole window of max_inflight_messages
    # messages of max_size_per_message bytes at once. Reading, decoding and encoding an
    # entry costs microseconds in Python: that window, full of small entries, stalled a
    # leader for seconds, while 1024 entries cost it about 5 ms. More streams faster over
    # long round trips (1024 per round trip is still 20 k entries/s at 50 ms, and a full
    # group-commit batch of the driver, 4096 entries, goes in four); fewer keeps each step,
    # and each of the follower's appends, shorter.
    max_inflight_entries: int = 1024
    # A leader steps down if it has not heard from a quorum within an election timeout,
    # and followers ignore votes while they hear from a leader (§6 of the thesis, 4.2.3).
    check_quorum: bool = True
    # Before raising its term, a candidate asks whether it could win (thesis §9.6), so a
    # partitioned node cannot disrupt a healthy cluster when it comes back.
    pre_vote: bool = True
    # How ReadIndex confirms leadership; LEASE_BASED requires check_quorum.
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    # If set, proposals on a follower raise NotLeader instead of being forwarded.
    disable_proposal_forwarding: bool = False
    # If set, a leader removed from the configuration steps down once the change applies.
    step_down_on_removal: bool = True
    # Source of randomness for election timeouts. Injected so runs are reproducible; the
    # driver passes an OS-seeded Random in production. If None, Random(id): deterministic
    # yet different per node, so nodes do not share one timeout sequence.
    rng: Random | None = None

    def random_source(self) -> Random:
        return self.rng if self.rng is not None else Random(self.id)

    def __post_init__(self) -> None:
        if self.id == NO_NODE or self.id < 0:
            raise ConfigInvalid("id must be a positive node id")
        if self.heartbeat_tick <= 0:
            raise ConfigInvalid("heartbeat_tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigInvalid("election_tick must be greater than heartbeat_tick")
        if self.applied < 0:
            raise ConfigInvalid("applied must not be negative")
        if self.max_size_per_message <= 0:
            raise ConfigInvalid("max_size_per_message must be greater than 0")
        if self.max_committed_size_per_ready <= 0:
            raise ConfigInvalid("max_committed_size_per_ready must be greater than 0")
        if self.max_uncommitted_entries_size <= 0:
            raise ConfigInvalid("max_uncommitted_entries_size must be greater than 0")
        if self.max_inflight_messages <= 0:
            raise ConfigInvalid("max_inflight_messages must be greater than 0")
        if self.max_inflight_bytes < 0:
            raise ConfigInvalid("max_inflight_bytes must not be negative")
        if self.max_inflight_entries < 0:
            raise ConfigInvalid("max_inflight_entries must not be negative")
        if 0 < self.max_inflight_bytes < self.max_size_per_message:
            raise ConfigInvalid("max_inflight_bytes must be at least max_size_per_message")
        if self.read_only_option is ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ConfigInvalid("LEASE_BASED reads require check_quorum")
