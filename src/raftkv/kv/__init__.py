"""raftkv's key-value state machine: etcd's MVCC data model replicated with Raft.

- `KvStateMachine` is the `raftkv.raft.StateMachine` a node runs: it applies `KvCommand`s
  (put, delete range, txn, compact; optionally exactly-once) and serves committed reads;
- `MvccStore` is the store underneath, kept in the node's `AppData` (RocksDB);
- the request and result types mirror etcd's KV API; refusals are `KvError`s.
"""

from __future__ import annotations

from raftkv.kv.commands import (
    Compact,
    CompactResult,
    Compare,
    CompareOp,
    CompareTarget,
    DeleteRange,
    DeleteResult,
    KeyValue,
    KvCommand,
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
from raftkv.kv.errors import (
    Compacted,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    InvalidRequest,
    KvError,
    LimitExceeded,
    SessionExpired,
    StaleSequence,
)
from raftkv.kv.mvcc import MvccStore
from raftkv.kv.service import KvService
from raftkv.kv.settings import KvSettings
from raftkv.kv.state_machine import KvStateMachine, SnapshotInvalid
from raftkv.kv.validation import check_request

__all__ = [
    "Compact",
    "CompactResult",
    "Compacted",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "DeleteRange",
    "DeleteResult",
    "DuplicateKey",
    "EmptyKey",
    "FutureRevision",
    "InvalidRequest",
    "KeyValue",
    "KvCommand",
    "KvError",
    "KvService",
    "KvSettings",
    "KvStateMachine",
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
    "Txn",
    "TxnResult",
    "WriteRequest",
    "WriteResult",
    "check_request",
    "decode_command",
    "encode_command",
]
