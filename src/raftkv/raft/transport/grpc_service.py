"""The `Raft` gRPC service of raft.proto: its name and method paths, the one place where
the senders and the servicer agree on them."""

from __future__ import annotations

from typing import Final

from raftkv.raft.transport import raft_pb2 as wire

__all__ = [
    "LEGACY_SNAPSHOT_METHOD_NAME",
    "MEMBER_METHOD",
    "MEMBER_METHOD_NAME",
    "SEND_METHOD",
    "SEND_METHOD_NAME",
    "SERVICE",
    "SNAPSHOT_TRANSFER_METHOD",
    "SNAPSHOT_TRANSFER_METHOD_NAME",
]

SERVICE: Final = wire.DESCRIPTOR.services_by_name["Raft"].full_name
SEND_METHOD_NAME: Final = "Send"
SNAPSHOT_TRANSFER_METHOD_NAME: Final = "SnapshotTransfer"
MEMBER_METHOD_NAME: Final = "Member"
# Older nodes sent snapshots here; this one refuses them with a status that says why.
LEGACY_SNAPSHOT_METHOD_NAME: Final = "SendSnapshot"

SEND_METHOD: Final = f"/{SERVICE}/{SEND_METHOD_NAME}"
SNAPSHOT_TRANSFER_METHOD: Final = f"/{SERVICE}/{SNAPSHOT_TRANSFER_METHOD_NAME}"
MEMBER_METHOD: Final = f"/{SERVICE}/{MEMBER_METHOD_NAME}"
