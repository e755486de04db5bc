"""raftkv's key-value state machine: etcd's MVCC data model replicated with Raft.

- `KvStateMachine` is the `raftkv.raft.StateMachine` a node runs: it applies `KvCommand`s
  (put, delete range, txn, compact; optionally exactly-once) and serves committed reads;
- `MvccStore` is the store underneath, kept in the node's `AppData` (RocksDB);
- `KvService` is the store's API on a running node, and the HTTP server's one door to it;
- the requests and responses mirror etcd's KV API (`Put` -> `PutResponse`, `MvccKeyValue`,
  `TxnCompare`); refusals are `KvError`s, each with a `code`;
- leases (`LeaseGrant` ... `LeaseCheckpoint`, expiry decided by the leader's `LeaseKeeper`)
  and watches (`WatchHub`, `Watch`: change streams read back from the history, handed out
  as `EventBatch`, `WatchProgress`, `WatchCanceled`);
- hash checks (`HashCheck`, `HashReport`, run by each member's `CorruptChecker`): members
  compare hashes of their state at the same log index and raise CORRUPT alarms;
- NOSPACE alarms (`RaiseNoSpaceAlarm`, `DisarmNoSpaceAlarm`, raised by each member's
  `SpaceMonitor`): a member out of space makes the cluster refuse writes that add data
  (`raftkv.kv.errors.NoSpace`) until an operator disarms it.

One owner per public name: the HTTP client (`raftkv.client`) owns the user-facing names
`KeyValue`, `PutResult` ..., `Compare`, `WatchBatch` and the refusals `Compacted`,
`InvalidRequest`, `LeaseExists`, `LeaseNotFound`, `LimitExceeded`, `NoSpace`, `SessionExpired`,
`StaleSequence`. This package's own classes are named apart (`MvccKeyValue`,
`PutResponse`, `TxnCompare`, `EventBatch`), and its refusals of those names are not
exported here: catch `KvError` (its `code` says which), or import them from
`raftkv.kv.errors` (their class names are part of the KV simulator's traces, which a
refactoring must not change, so they keep them). A snapshot that cannot be restored is the
Raft library's `raftkv.raft.SnapshotInvalid`.
"""

from __future__ import annotations

from raftkv.kv.commands import (
    ClearCorruptAlarm,
    Compact,
    CompactResponse,
    CompareOp,
    CompareTarget,
    DeleteRange,
    DeleteRangeResponse,
    DisarmNoSpaceAlarm,
    HashCheck,
    HashCheckResponse,
    HashReport,
    KvCommand,
    LeaseCheckpoint,
    LeaseCheckpointResponse,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResponse,
    LeaseKeepAlive,
    LeaseKeepAliveResponse,
    LeaseRemaining,
    LeaseRequest,
    LeaseRevoke,
    LeaseRevokeResponse,
    MvccKeyValue,
    NoSpaceAlarmResponse,
    PublishMember,
    PublishMemberResponse,
    Put,
    PutResponse,
    RaiseNoSpaceAlarm,
    Range,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    Txn,
    TxnCompare,
    TxnResponse,
    WriteRequest,
    WriteResponse,
    decode_command,
    encode_command,
)
from raftkv.kv.corrupt_checker import CorruptChecker, CorruptCheckerSettings
from raftkv.kv.errors import (
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    KvError,
    ScanTooLarge,
)
from raftkv.kv.events import Event
from raftkv.kv.lease_keeper import LeaseKeeper
from raftkv.kv.mvcc import MvccStore
from raftkv.kv.service import KvService, ReadLimits
from raftkv.kv.settings import KvSettings
from raftkv.kv.space_monitor import SpaceMonitor, SpaceSettings
from raftkv.kv.state_machine import KvStateMachine
from raftkv.kv.validation import check_request
from raftkv.kv.watch import (
    EventBatch,
    TooManyWatches,
    Watch,
    WatchCanceled,
    WatchHub,
    WatchProgress,
    WatchSettings,
    WatchSpec,
)

__all__ = [
    "ClearCorruptAlarm",
    "Compact",
    "CompactResponse",
    "CompareOp",
    "CompareTarget",
    "CorruptChecker",
    "CorruptCheckerSettings",
    "DeleteRange",
    "DeleteRangeResponse",
    "DisarmNoSpaceAlarm",
    "DuplicateKey",
    "EmptyKey",
    "Event",
    "EventBatch",
    "FutureRevision",
    "HashCheck",
    "HashCheckResponse",
    "HashReport",
    "KvCommand",
    "KvError",
    "KvService",
    "KvSettings",
    "KvStateMachine",
    "LeaseCheckpoint",
    "LeaseCheckpointResponse",
    "LeaseExpire",
    "LeaseGrant",
    "LeaseGrantResponse",
    "LeaseKeepAlive",
    "LeaseKeepAliveResponse",
    "LeaseKeeper",
    "LeaseRemaining",
    "LeaseRequest",
    "LeaseRevoke",
    "LeaseRevokeResponse",
    "MvccKeyValue",
    "MvccStore",
    "NoSpaceAlarmResponse",
    "PublishMember",
    "PublishMemberResponse",
    "Put",
    "PutResponse",
    "RaiseNoSpaceAlarm",
    "Range",
    "RangeResponse",
    "ReadLimits",
    "RequestOp",
    "ResponseHeader",
    "ResponseOp",
    "ScanTooLarge",
    "SpaceMonitor",
    "SpaceSettings",
    "TooManyWatches",
    "Txn",
    "TxnCompare",
    "TxnResponse",
    "Watch",
    "WatchCanceled",
    "WatchHub",
    "WatchProgress",
    "WatchSettings",
    "WatchSpec",
    "WriteRequest",
    "WriteResponse",
    "check_request",
    "decode_command",
    "encode_command",
]
