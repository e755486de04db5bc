"""raftkv's key-value state machine: etcd's MVCC data model replicated with Raft.

- `KvStateMachine` is the `raftkv.raft.StateMachine` a node runs: it applies `KvCommand`s
  (put, delete range, txn, compact; optionally exactly-once) and serves committed reads;
- `MvccStore` is the store underneath, kept in the node's `AppData` (RocksDB);
- the request and result types mirror etcd's KV API; refusals are `KvError`s;
- leases (`LeaseGrant` ... `LeaseCheckpoint`, expiry decided by the leader's `LeaseKeeper`)
  and watches (`WatchHub`, `Watch`: change streams read back from the history);
- hash checks (`HashCheck`, `HashReport`, run by each member's `CorruptChecker`): members
  compare hashes of their state at the same log index and raise CORRUPT alarms.
"""

from __future__ import annotations

from raftkv.kv.commands import (
    ClearCorruptAlarm,
    Compact,
    CompactResult,
    Compare,
    CompareOp,
    CompareTarget,
    DeleteRange,
    DeleteResult,
    HashCheck,
    HashCheckResult,
    HashReport,
    KeyValue,
    KvCommand,
    LeaseCheckpoint,
    LeaseCheckpointResult,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResult,
    LeaseKeepAlive,
    LeaseKeepAliveResult,
    LeaseRemaining,
    LeaseRequest,
    LeaseRevoke,
    LeaseRevokeResult,
    PublishMember,
    PublishMemberResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    Txn,
    TxnResult,
    WriteRequest,
    WriteResult,
    decode_command,
    encode_command,
)
from raftkv.kv.corrupt_checker import CorruptChecker, CorruptCheckerSettings
from raftkv.kv.errors import (
    Compacted,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    InvalidRequest,
    KvError,
    LeaseExists,
    LeaseNotFound,
    LimitExceeded,
    SessionExpired,
    StaleSequence,
)
from raftkv.kv.events import Event
from raftkv.kv.lease_keeper import LeaseKeeper
from raftkv.kv.mvcc import MvccStore
from raftkv.kv.service import KvService
from raftkv.kv.settings import KvSettings
from raftkv.kv.state_machine import KvStateMachine, SnapshotInvalid
from raftkv.kv.validation import check_request
from raftkv.kv.watch import (
    TooManyWatches,
    Watch,
    WatchBatch,
    WatchCanceled,
    WatchHub,
    WatchProgress,
    WatchSettings,
    WatchSpec,
)

__all__ = [
    "ClearCorruptAlarm",
    "Compact",
    "CompactResult",
    "Compacted",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "CorruptChecker",
    "CorruptCheckerSettings",
    "DeleteRange",
    "DeleteResult",
    "DuplicateKey",
    "EmptyKey",
    "Event",
    "FutureRevision",
    "HashCheck",
    "HashCheckResult",
    "HashReport",
    "InvalidRequest",
    "KeyValue",
    "KvCommand",
    "KvError",
    "KvService",
    "KvSettings",
    "KvStateMachine",
    "LeaseCheckpoint",
    "LeaseCheckpointResult",
    "LeaseExists",
    "LeaseExpire",
    "LeaseGrant",
    "LeaseGrantResult",
    "LeaseKeepAlive",
    "LeaseKeepAliveResult",
    "LeaseKeeper",
    "LeaseNotFound",
    "LeaseRemaining",
    "LeaseRequest",
    "LeaseRevoke",
    "LeaseRevokeResult",
    "LimitExceeded",
    "MvccStore",
    "PublishMember",
    "PublishMemberResult",
    "Put",
    "PutResult",
    "Range",
    "RangeResult",
    "RequestOp",
    "ResponseHeader",
    "ResponseOp",
    "SessionExpired",
    "SnapshotInvalid",
    "StaleSequence",
    "TooManyWatches",
    "Txn",
    "TxnResult",
    "Watch",
    "WatchBatch",
    "WatchCanceled",
    "WatchHub",
    "WatchProgress",
    "WatchSettings",
    "WatchSpec",
    "WriteRequest",
    "WriteResult",
    "check_request",
    "decode_command",
    "encode_command",
]
