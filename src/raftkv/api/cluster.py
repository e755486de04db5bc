"""This node and its cluster: health, readiness, status, the members, and membership and
leadership changes."""

from __future__ import annotations

from typing import Literal

import msgspec

from raftkv.api.keys import MemberId, MemberIdOrZero

__all__ = [
    "AddMemberBody",
    "AlarmAnswer",
    "AlarmsAnswer",
    "ClusterAnswer",
    "DefragmentAnswer",
    "DisarmBody",
    "HealthAnswer",
    "MemberAnswer",
    "MemberRole",
    "ReadyAnswer",
    "StatusAnswer",
    "TransferAnswer",
    "TransferBody",
    "UpdateMemberBody",
]


class AddMemberBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/members`: add node `id`, reachable by peers at `peer_url` (host:port), as a
    learner (it receives the log but does not vote until promoted)."""

    id: MemberId
    peer_url: str


class UpdateMemberBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`PUT /v1/members/{id}`: member `id` is reached by peers at `peer_url` (host:port)
    from now on (etcd's member update); start it listening there."""

    peer_url: str


class TransferBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/leader/transfer`: hand leadership to voter `to` (0: the most caught-up)."""

    to: MemberIdOrZero = 0


class HealthAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """`GET /health`: 200 `ok`; 503 `failed` with the reason once the node hit an error it
    cannot continue from (the process is about to exit non-zero)."""

    status: str
    reason: str = ""


class ReadyAnswer(msgspec.Struct, frozen=True):
    """`GET /ready`: 200 with ready=true when this node can serve linearizable requests
    (it is a member, knows a leader and has applied what it had committed when it
    started); 503 with ready=false and the reason otherwise."""

    ready: bool
    reason: str = ""


class AlarmAnswer(msgspec.Struct, frozen=True):
    """An alarm raised in the cluster (the same on every member: it is replicated).
    CORRUPT: a hash check found `member`'s state different from the one a majority of
    members hold ("minority"), or the members' states differ with none held by a majority
    ("no_majority"). The member refuses client requests (503 `corrupt`) until it is
    removed; join it again with a new id and an empty data dir.
    NOSPACE: `member`'s storage passed its quota ("quota") or its disk's free space fell
    under its reserve ("disk_free"). The whole cluster refuses writes that add data (507
    `no_space`) until the alarm is disarmed (`POST /v1/alarms/disarm`)."""

    # "CORRUPT" or "NOSPACE" (a str so that a client reads a newer kind).
    alarm: str
    member: int
    # CORRUPT: the log index of the hash check that found it; NOSPACE: of the entry that
    # raised it.
    check_index: int
    # CORRUPT: "minority" or "no_majority"; NOSPACE: "quota" or "disk_free".
    reason: str


class DefragmentAnswer(msgspec.Struct, frozen=True):
    """`POST /v1/defragment`: this node's storage bytes before and after its files were
    compacted whole (0 and 0: its storage is not on disk)."""

    storage_bytes_before: int
    storage_bytes_after: int
    seconds: float


class AlarmsAnswer(msgspec.Struct, frozen=True):
    """`GET /v1/alarms` and `POST /v1/alarms/disarm`: the cluster's alarms (after the
    disarm), by kind and member."""

    alarms: list[AlarmAnswer]


class DisarmBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/alarms/disarm`: end the NOSPACE alarm of `member` (0: of every member).
    CORRUPT alarms are not disarmed: they end when their member is removed."""

    member: MemberIdOrZero = 0


class StatusAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    id: int
    leader: int
    term: int
    role: str
    commit_index: int
    applied_index: int
    revision: int
    compacted_revision: int
    # The log this node keeps: entries first_index..last_index, after a snapshot at
    # snapshot_index (older entries are purged).
    first_index: int = 0
    last_index: int = 0
    snapshot_index: int = 0
    # Writes and linearizable reads this node is waiting on (left out when 0).
    pending_proposals: int = 0
    pending_reads: int = 0
    # With ?hash=true: sha256 of the whole committed KV state (a full scan, O(data)); equal
    # on members that applied the same log. The hash members compare in hash checks (it
    # leaves out the checks' own record).
    hash: str = ""
    # With ?hash=true: sha256 of the user's data only (keys, their history, leases, the
    # MVCC revision), leaving out what each cluster writes for itself (its members'
    # published client URLs, hash checks, client sessions): equal on a cluster restored
    # from a backup and on the source at the backup, also once the restored members serve.
    data_hash: str = ""
    # The cluster's alarms, by member (left out when there is none).
    alarms: list[AlarmAnswer] = msgspec.field(default_factory=list)
    # What this member exposes to the network unprotected (a client port off loopback
    # without TLS or client certificates), one line each (left out when there is none).
    warnings: list[str] = msgspec.field(default_factory=list)
    # This member was removed from the cluster: it answers only status, health, cluster
    # and metrics (left out while false).
    removed: bool = False
    # Writes proposed together share log entries here (`batch_proposals`, and every member
    # declared it reads them; left out while false).
    batching: bool = False


MemberRole = Literal["leader", "voter", "learner"]


class MemberAnswer(msgspec.Struct, frozen=True):
    id: int
    # The address peers reach it at (host:port of the gRPC Raft transport).
    peer_url: str
    # Where clients reach it (http://host:port), "" until the member has published it.
    client_url: str
    role: MemberRole
    # The leader's view of the member's log: the highest index known replicated there;
    # null when the answering node is not the leader.
    match_index: int | None
    # Leader's view too: entries the member lacks (last index - match_index), and whether
    # it was heard from within the last election timeout. Null elsewhere.
    lag: int | None = None
    active: bool | None = None
    # Seconds since the answering node last heard from the member (null: itself, or never
    # heard from since it started).
    last_contact_s: float | None = None
    # Where etcd's clients reach its gRPC API (http://host:port; "" when it serves none:
    # its listen_client_grpc is not set, or it has not published it yet).
    etcd_url: str = ""


class ClusterAnswer(msgspec.Struct, frozen=True):
    # The node that answered; `members` indexes are known only if it is the leader.
    id: int
    leader: int
    term: int
    commit_index: int
    members: list[MemberAnswer]
    # The cluster's id (peers with another are refused; a node joining takes it). 0: the
    # answering node does not say (an older raftkv).
    cluster_id: int = 0


class TransferAnswer(msgspec.Struct, frozen=True):
    # The new leader.
    leader: int
