"""The raftkv client: the HTTP/JSON API (`raftkv.server`) with retries, leader routing
and exactly-once writes, for asyncio (`Client`) and for threads (`SyncClient`), and the lock
and election recipes for each (`Lock`/`Election`, `SyncLock`/`SyncElection`).

    from raftkv.client import Client, txn

    async with Client(["http://127.0.0.1:8080", "http://127.0.0.1:8081"]) as client:
        await client.put("greeting", "hello")
        kv = await client.get("greeting")           # KeyValue(key=b"greeting", ...) or None
        await client.txn([txn.version("lock", "=", 0)], [txn.put("lock", "me")])

Keys and values are given as `bytes` or `str` (UTF-8) and come back as `bytes`; they travel
base64-encoded, so any bytes round-trip.

Theory of operation
-------------------
A call is a `protocol.Request` (what to send; sans-I/O) driven by a `call.Call` (which
endpoint, whether to retry, how long to back off), over one shared `routing.Router` (what
the client knows of the cluster) and, for writes, a session lane (`sessions`).

- Routing: every answer's header names the leader; `/v1/cluster` says where each member
  serves clients, fetched once per new leader. Writes and linearizable reads go to the
  leader when its URL is known (any node would do: followers forward writes and confirm
  reads with the leader, at the cost of a hop); everything else goes to the current
  endpoint of a rotation through the configured endpoints. A refused connection marks
  an endpoint down and the call moves to the next one.
- Retries: a 503 or a refused connection applied nothing, so any request is retried at
  another endpoint after a backoff (exponential, full jitter), within `max_attempts` and
  the call's `deadline_s`. A 504 or a connection lost after sending leaves a write's
  outcome unknown: a write is retried only with the same exactly-once session, and
  `compact`, which has none, fails with OutcomeUnknown instead. A 4xx is final.

Credentials: with `ClientSettings(user=..., password=...)` the client logs in when a
cluster with auth enabled asks (`credentials`), and again when its token runs out;
`Unauthenticated` (401) and `PermissionDenied` (403) are the refusals auth adds. Users and
roles are managed with `add_user`, `grant_role`, `grant_permission`, `auth_enable` ...

Guarantees
----------
- put, delete and txn apply at most once, however often they are retried, and a call that
  returns applied exactly once. A call that raises OutcomeUnknown may have applied once.
  (A delete is sent as a one-op txn: `DELETE /v1/kv/{key}` carries no session.)
- Reads are linearizable unless `serializable=True` (then any node answers from its own,
  possibly stale, state). A read is never answered by a node that lost its leader: the
  server confirms the read point with a quorum first.
- A call raises only `ClientError`s (see `errors`), or TypeError/ValueError for misuse.

Session lanes (exactly-once under concurrency)
----------------------------------------------
The server remembers only the last sequence per client id, so concurrent writes cannot
share one: each write takes a lane, a client id of its own ("<client_id>-<n>") with its own
sequence, for its whole call, retries included (see `sessions`). At most
`max_concurrent_writes` lanes exist; more concurrent writes wait for one. The server keeps
`max_exactly_once_clients` sessions and forgets the least recently written; it refuses a
write whose session it forgot (409 `session_expired`, nothing applied) unless it is the
session's first (sequence 1). So a lane forgotten between two calls is started afresh
(a new id, sequence 1) and the write sent again; one forgotten during a call, after an
attempt whose outcome was unknown, ends in OutcomeUnknown instead of applying twice. What
remains: a first write (sequence 1) retried after its session was forgotten applies again;
that needs `max_exactly_once_clients` other sessions to write within one call's deadline.
`client_id` must never be shared by two clients (each numbers from 1; the second one's
writes would be refused as stale).

Names
-----
The client owns the names its users write (`KeyValue`, `PutResult`, `Compare`,
`WatchBatch`, `LeaseNotFound`, `NotCaughtUp`, ...): the server's store (`raftkv.kv`) and
the Raft library (`raftkv.raft`) name their own classes apart (`MvccKeyValue`,
`PutResponse`, `TxnCompare`, `LearnerNotCaughtUp`, ...) or do not export them, so an
import or an `except` cannot pick the wrong one. Two names remain shared, as different
classes: `OutcomeUnknown` (also the Raft library's) and `Status` (also `raftkv.raft.core`'s).
The client imports nothing of the server: the wire schema both speak is `raftkv.api`.
"""

from __future__ import annotations

from raftkv.client import recipes, txn
from raftkv.client.async_client import Client
from raftkv.client.async_watch import Watcher
from raftkv.client.errors import (
    ClientError,
    Compacted,
    InvalidRequest,
    LeaseExists,
    LeaseNotFound,
    LimitExceeded,
    NoSpace,
    NotCaughtUp,
    NotUtf8,
    OutcomeUnknown,
    PermissionDenied,
    Refused,
    ServerError,
    SessionExpired,
    StaleSequence,
    Unauthenticated,
    Unavailable,
)
from raftkv.client.leases import KeptLease, SyncKeptLease
from raftkv.client.recipes import Election, Lock, LockLost, SyncElection, SyncLock
from raftkv.client.results import (
    Alarm,
    AuthStatus,
    Cluster,
    CompactResult,
    Defragmented,
    DeleteResult,
    KeyValue,
    LeaseGrantResult,
    LeaseInfo,
    LeaseKeepAliveResult,
    LeaseRevokeResult,
    LeaseStatus,
    Member,
    Permission,
    PutResult,
    RangeResult,
    Role,
    Status,
    TxnResult,
    User,
    WatchBatch,
    WatchEvent,
)
from raftkv.client.settings import ClientSettings
from raftkv.client.sync_client import SyncClient
from raftkv.client.sync_watch import SyncWatcher
from raftkv.client.txn import Compare, DeleteOp, Op, PutOp, RangeOp

__all__ = [
    "Alarm",
    "AuthStatus",
    "Client",
    "ClientError",
    "ClientSettings",
    "Cluster",
    "CompactResult",
    "Compacted",
    "Compare",
    "Defragmented",
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
    "Lock",
    "LockLost",
    "Member",
    "NoSpace",
    "NotCaughtUp",
    "NotUtf8",
    "Op",
    "OutcomeUnknown",
    "Permission",
    "PermissionDenied",
    "PutOp",
    "PutResult",
    "RangeOp",
    "RangeResult",
    "Refused",
    "Role",
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
    "Unauthenticated",
    "Unavailable",
    "User",
    "WatchBatch",
    "WatchEvent",
    "Watcher",
    "recipes",
    "txn",
]
