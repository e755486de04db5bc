"""The public namespace is explicit: `__all__` is pinned (trio's test_exports)."""

from __future__ import annotations

from raftkv.raft import core


def test_core_all_is_pinned() -> None:
    assert sorted(core.__all__) == sorted(
        [
            "EMPTY_HARD_STATE",
            "EMPTY_SNAPSHOT",
            "NO_LIMIT",
            "NO_NODE",
            "ConfChange",
            "ConfChangeInvalid",
            "ConfChangeSingle",
            "ConfChangeTransition",
            "ConfChangeType",
            "ConfState",
            "Config",
            "ConfigInvalid",
            "Entry",
            "EntryKind",
            "HardState",
            "InvalidArgument",
            "InvariantViolation",
            "LogCompacted",
            "LogUnavailable",
            "MalformedMessage",
            "Message",
            "MessageType",
            "NodeId",
            "NotLeader",
            "PeerNotFound",
            "ProgressStatus",
            "ProposalDropped",
            "RaftError",
            "RawNode",
            "ReadOnlyOption",
            "ReadState",
            "Ready",
            "Snapshot",
            "SnapshotMetadata",
            "SnapshotOutOfDate",
            "SnapshotTemporarilyUnavailable",
            "SoftState",
            "StateRole",
            "Status",
            "Storage",
        ]
    )


def test_every_exported_name_exists() -> None:
    for name in core.__all__:
        assert hasattr(core, name), name
