"""What the client's calls return: frozen values with keys and values as `bytes`.

Every write result and range result carries `revision` (the store's revision once the
request took effect; for a read, the revision it read at) and `leader` (the leader the
answering node knew, 0 if none), the HTTP answer's header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Cluster",
    "CompactResult",
    "DeleteResult",
    "KeyValue",
    "LeaseGrantResult",
    "LeaseInfo",
    "LeaseKeepAliveResult",
    "LeaseRevokeResult",
    "LeaseStatus",
    "Member",
    "PutResult",
    "RangeResult",
    "Status",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    # The revision of the key's creation (since its last delete), of its last change, and
    # the number of changes since its creation (1 after the first put).
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    leader: int
    # The key's previous value, when asked with prev_kv and the key existed.
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    leader: int
    deleted: int
    # The deleted keys' last values, when asked with prev_kv.
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class RangeResult:
    revision: int
    leader: int
    kvs: tuple[KeyValue, ...]
    # Keys in the range regardless of limit, and whether limit left some out.
    count: int
    more: bool


@dataclass(frozen=True, slots=True)
class TxnResult:
    revision: int
    leader: int
    # Whether every compare held (the success branch ran) or not (the failure branch ran).
    succeeded: bool
    # One per op of the branch that ran, in order.
    responses: tuple[PutResult | RangeResult | DeleteResult, ...]


@dataclass(frozen=True, slots=True)
class CompactResult:
    revision: int
    leader: int


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm of the cluster. "CORRUPT": a hash check found `member`'s state different
    from the majority's (`reason` "minority"), or the members' states differing with none
    held by a majority ("no_majority"), at log index `check_index`. That member refuses
    client requests (503 `corrupt`: the client moves on to another endpoint); remove it and
    join it again with a new id and an empty data dir. "NOSPACE": `member` ran out of space
    (`reason` "quota" or "disk_free"; raised by the entry at `check_index`): the cluster
    refuses writes that add data (`NoSpace`) until the alarm is disarmed
    (`disarm_alarms`)."""

    alarm: str
    member: int
    check_index: int
    reason: str


@dataclass(frozen=True, slots=True)
class Defragmented:
    """One node's storage files compacted whole (`defragment`): its storage bytes before
    and after (0 and 0: not on disk), and how long it took."""

    endpoint: str
    storage_bytes_before: int
    storage_bytes_after: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Status:
    """One node's `/v1/status`, and the endpoint that answered."""

    endpoint: str
    id: int
    leader: int
    term: int
    # "leader", "follower", "candidate", ... (the node's Raft role).
    role: str
    commit_index: int
    applied_index: int
    revision: int
    compacted_revision: int
    # The cluster's alarms (the same on every member: they are replicated).
    alarms: tuple[Alarm, ...] = ()
    # The node was removed from the cluster: it serves nothing but its status, health and
    # the member list (`role` and `leader` are what it knew then).
    removed: bool = False
    # With `status(hash=True)`: the SHA-256 (hex) of the node's whole committed KV state,
    # equal on members that applied the same log ("" when not asked for).
    hash: str = ""
    # With `status(hash=True)`: the SHA-256 (hex) of the user's data only (keys, their
    # history, leases, the revision), leaving out what each cluster writes for itself:
    # equal on a cluster restored from a backup and on the source at the backup.
    data_hash: str = ""
    # What the node exposes to the network unprotected (its client port off loopback
    # without TLS or client certificates), one line each.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    # Where peers reach it (the Raft transport) and where clients do (http://host:port,
    # "" until the member has published it).
    peer_url: str
    client_url: str
    role: Literal["leader", "voter", "learner"]
    # The leader's view of the member's log; None when the answering node is not the leader.
    match_index: int | None
    # Leader's view too: entries it lacks, and whether it was heard from lately.
    lag: int | None = None
    active: bool | None = None
    # Seconds since the answering node last heard from it (None: itself, or never).
    last_contact_s: float | None = None
    # Where etcd's clients reach its gRPC API ("" when it serves none).
    etcd_url: str = ""


@dataclass(frozen=True, slots=True)
class Cluster:
    """`/v1/cluster` as one node sees it (`id`, at `endpoint`)."""

    endpoint: str
    id: int
    leader: int
    term: int
    commit_index: int
    members: tuple[Member, ...]


# -- leases ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseGrantResult:
    id: int
    # The TTL granted, in seconds (the one asked for, or the server's minimum if higher).
    ttl: int
    revision: int
    leader: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResult:
    id: int
    # The lease now expires `ttl` seconds after the keep-alive was sent.
    ttl: int
    revision: int
    leader: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResult:
    # The revision that deleted the lease's keys (one revision for all of them); 0 when a
    # retry found the lease gone after an attempt whose outcome was unknown.
    revision: int
    leader: int


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    id: int
    # Seconds left (rounded down; the answering node's estimate, the leader decides) and
    # the TTL it was granted with.
    ttl: int
    granted_ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: int
    granted_ttl: int
    # The attached keys (when asked for with keys=True), in key order.
    keys: tuple[bytes, ...]
    revision: int
    leader: int


# -- watches ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    # After a put: the key's new value and metadata. After a delete: the key, with
    # mod_revision the delete's revision and an empty value.
    kv: KeyValue
    # The key before the event (when watched with prev_kv=True and the key existed).
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """What one watch message brought: the events of whole revisions, in revision order
    (none for a progress notification), and `revision`, the watermark: every matching
    event at or below it has been delivered."""

    revision: int
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True, slots=True)
class AuthStatus:
    """Whether the cluster has auth enabled, and its auth revision (every change of users,
    roles or auth raises it)."""

    enabled: bool
    auth_revision: int


@dataclass(frozen=True, slots=True)
class User:
    """A user and its roles; `has_password` False: only a client certificate names it."""

    name: str
    roles: tuple[str, ...]
    has_password: bool


@dataclass(frozen=True, slots=True)
class Permission:
    """`kind` ("read", "write", "readwrite") on `key` alone (`range_end` b""), the keys
    [key, range_end), or every key from `key` on (range_end b"\\0")."""

    kind: str
    key: bytes
    range_end: bytes


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    permissions: tuple[Permission, ...]
