"""The client's public namespace is pinned, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import raftkv.client
from raftkv.client import txn


def test_client_all_is_pinned() -> None:
    assert sorted(raftkv.client.__all__) == sorted(
        [
            "Alarm",
            "User",
            "Unauthenticated",
            "Role",
            "PermissionDenied",
            "Permission",
            "AuthStatus",
            "Client",
            "ClientError",
            "ClientSettings",
            "Cluster",
            "CompactResult",
            "Defragmented",
            "Compacted",
            "Compare",
            "DeleteOp",
            "DeleteResult",
            "Election",
            "InvalidRequest",
            "KeptLease",
            "KeyValue",
            "LeaseExists",
            "LeaseGrantResult",
            "LeaseInfo",
            "LeaseKeepAliveResult",
            "LeaseNotFound",
            "LeaseRevokeResult",
            "LeaseStatus",
            "LimitExceeded",
            "NoSpace",
            "Lock",
            "LockLost",
            "Member",
            "NotCaughtUp",
            "NotUtf8",
            "Op",
            "OutcomeUnknown",
            "PutOp",
            "PutResult",
            "RangeOp",
            "RangeResult",
            "Refused",
            "ServerError",
            "SessionExpired",
            "StaleSequence",
            "Status",
            "SyncClient",
            "SyncElection",
            "SyncKeptLease",
            "SyncLock",
            "SyncWatcher",
            "TxnResult",
            "Unavailable",
            "WatchBatch",
            "WatchEvent",
            "Watcher",
            "recipes",
            "txn",
        ]
    )
    for name in raftkv.client.__all__:
        assert getattr(raftkv.client, name) is not None, name


def test_txn_builder_all_is_pinned() -> None:
    assert sorted(txn.__all__) == sorted(
        [
            "Compare",
            "CompareOp",
            "CompareTarget",
            "Data",
            "DeleteOp",
            "Op",
            "PutOp",
            "RangeOp",
            "create_revision",
            "delete",
            "get",
            "lease",
            "mod_revision",
            "put",
            "range",
            "to_bytes",
            "value",
            "version",
        ]
    )


def test_importing_the_client_does_not_load_the_server() -> None:
    """Nor does building the `raftkv` command's parser (every verb's flags, the server's
    settings included): each client verb's run pays only for the HTTP client."""
    code = (
        "import sys, raftkv.client, raftkv.cli, raftkv.cli.kv_commands; "
        "raftkv.cli.build_parser(); "
        "print(sorted(m for m in ('aiohttp', 'grpc', 'rocksdict', 'raftkv.server.app', "
        "'raftkv.kv', 'raftkv.raft') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
