"""Typed errors of the Raft core.

Three kinds of failure (STYLE.md, principle 7):
- expected outcomes a caller handles: `ProposalDropped`, `NotLeader`, `LogCompacted`, ...;
  the call that raised them changed nothing;
- local misuse: `InvalidArgument` (a bug in the caller, e.g. stepping a local message type
  received from the network);
- broken invariants: `InvariantViolation`; the node must stop, never continue.
"""

from __future__ import annotations

from raftkv.raft.core.types import NO_NODE, NodeId


class RaftError(Exception):
    """Base of every error the core raises on purpose."""


class ProposalDropped(RaftError):
    """The proposal was not appended (no leader, leadership transfer, limits, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotLeader(ProposalDropped):
    """This node is not the leader and does not forward. `leader_hint` may be NO_NODE."""

    def __init__(self, leader_hint: NodeId = NO_NODE) -> None:
        hint = f"leader is {leader_hint}" if leader_hint != NO_NODE else "leader unknown"
        super().__init__(f"not the leader ({hint})")
        self.leader_hint = leader_hint


class LogCompacted(RaftError):
    """The requested index is below the first index still in the log."""


class LogUnavailable(RaftError):
    """The requested index is beyond the last index in the log."""


class SnapshotOutOfDate(RaftError):
    """A snapshot older than the one already held was offered."""


class SnapshotTemporarilyUnavailable(RaftError):
    """Storage is still building a snapshot; ask again later."""


class ConfigInvalid(RaftError):
    """A `Config` field is out of range."""


class ConfChangeInvalid(RaftError):
    """A membership change is not allowed (see message)."""


class ConfChangePending(ConfChangeInvalid):
    """Another membership change is not applied yet; this one may be retried after it."""


class InvalidArgument(RaftError):
    """The caller misused the API (a local bug, not a misbehaving peer)."""


class MalformedMessage(RaftError):
    """A peer sent a message that breaks the protocol's shape (a misbehaving peer, not a
    local bug). It was dropped; nothing changed."""


class PeerNotFound(RaftError):
    """A response arrived from a node that is not in the configuration."""


class InvariantViolation(RaftError):
    """An invariant of the Raft state is broken. The node must stop."""
