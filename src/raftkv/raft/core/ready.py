"""`Ready`: what the core asks its caller to do, in order. And `Status`, what it reports.

The contract (modelled on etcd-io/raft's RawNode and raft-rs's persisted messages):

1. `snapshot` (if any): persist it and restore the state machine from it.
2. `entries`: append to durable storage, truncating any conflicting suffix first.
   `hard_state` (if any): persist it. Steps 1–2 form one atomic, synced write when
   `must_sync` is true.
3. `messages` may be sent at any time, even before step 2 (the leader's own append runs in
   parallel with replication; the leader only counts itself once `advance` says it is
   durable).
4. `persisted_messages` are sent only after step 2 is durable: they promise things (a vote,
   an acknowledged append) that must survive a crash.
5. `committed_entries` are applied to the state machine after step 2 (they may include
   entries from this Ready's `entries`).
6. `read_states` are answered once the state machine has applied their index.
7. `advance(ready)` tells the core all of the above is done.

Readies are numbered: `advance` must be called with the latest Ready, once, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.core.types import (
    ConfState,
    Entry,
    HardState,
    Message,
    NodeId,
    ReadState,
    Snapshot,
    SoftState,
)


@dataclass(frozen=True, slots=True)
class Ready:
    # Strictly increasing per RawNode, starting at 1.
    number: int
    # New volatile state (leader, role), or None if unchanged since the last Ready.
    soft_state: SoftState | None = None
    # New term/vote/commit to persist, or None if unchanged since the last Ready.
    hard_state: HardState | None = None
    # Reads that may be served once `applied >= index`.
    read_states: tuple[ReadState, ...] = ()
    # Entries to append to durable storage before sending `persisted_messages`.
    entries: tuple[Entry, ...] = ()
    # A snapshot to persist and install before `entries`, or None.
    snapshot: Snapshot | None = None
    # Committed entries to apply after this Ready's writes are durable.
    committed_entries: tuple[Entry, ...] = ()
    # Messages that may be sent right away.
    messages: tuple[Message, ...] = ()
    # Messages to send only after this Ready's entries, hard state and snapshot are durable.
    persisted_messages: tuple[Message, ...] = ()
    # Whether the write in steps 1–2 must be fsynced (term, vote or entries changed).
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: str
    recent_active: bool
    is_learner: bool
    pending_snapshot: int
    inflight_count: int


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    hard_state: HardState
    soft_state: SoftState
    applied: int
    committed: int
    first_index: int
    last_index: int
    conf_state: ConfState
    lead_transferee: NodeId
    # Per-peer replication progress; filled on the leader only.
    progress: dict[NodeId, ProgressStatus] = field(default_factory=dict)
