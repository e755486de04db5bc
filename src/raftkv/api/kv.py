"""The HTTP/JSON API's shapes: every request body and every answer, as msgspec structs.

One source for three users: the server decodes requests and encodes answers with them,
`raftkv.server.openapi` derives `/openapi.json` from them (so the document cannot drift from
the server), and `raftkv.client` decodes answers with them. This module imports msgspec
only, so a client does not load the server's dependencies.

Keys and values are `str`: UTF-8 text, or base64 with the query parameter `encoding=base64`.
Request structs forbid unknown fields; answer structs accept them (a newer server may add
fields without breaking an older client).
"""

from __future__ import annotations

from typing import Literal

import msgspec

CompareTarget = Literal["value", "version", "create", "mod", "lease"]
CompareOp = Literal["=", "!=", "<", ">"]

# -- request bodies --------------------------------------------------------------------------


class PutBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`PUT /v1/kv/{key}`. With `client_id` and `sequence` (>= 1, increasing per client) a
    retry after an unknown outcome returns the first result instead of applying twice."""

    value: str
    lease: int = 0
    prev_kv: bool = False
    client_id: str = ""
    sequence: int = 0


class SetBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /set`: the seed's spelling of a put."""

    key: str
    value: str


class CompactBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    revision: int


class CompareBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`target` of `key` compared with `value`: a string for "value", an integer for the
    others ("create"/"mod" are create_revision/mod_revision)."""

    key: str
    target: CompareTarget
    op: CompareOp
    value: str | int


class RangeOpBody(msgspec.Struct, tag="range", tag_field="op", forbid_unknown_fields=True):
    key: str
    range_end: str = ""
    prefix: bool = False
    limit: int = 0
    revision: int = 0
    keys_only: bool = False
    count_only: bool = False


class PutOpBody(msgspec.Struct, tag="put", tag_field="op", forbid_unknown_fields=True):
    key: str
    value: str
    lease: int = 0
    prev_kv: bool = False


class DeleteOpBody(msgspec.Struct, tag="delete", tag_field="op", forbid_unknown_fields=True):
    key: str
    range_end: str = ""
    prefix: bool = False
    prev_kv: bool = False


OpBody = RangeOpBody | PutOpBody | DeleteOpBody


class TxnBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/txn`: if every compare holds run `success`, else `failure`."""

    compares: list[CompareBody] = msgspec.field(default_factory=list)
    success: list[OpBody] = msgspec.field(default_factory=list)
    failure: list[OpBody] = msgspec.field(default_factory=list)
    client_id: str = ""
    sequence: int = 0


class AddMemberBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/members`: add node `id`, reachable by peers at `peer_url` (host:port), as a
    learner (it receives the log but does not vote until promoted)."""

    id: int
    peer_url: str


class TransferBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/leader/transfer`: hand leadership to voter `to` (0: the most caught-up)."""

    to: int = 0


class LeaseGrantBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/lease`: a lease that expires `ttl` seconds after its grant or its last
    keep-alive, unless kept alive again. `id` 0: the server picks one. A `ttl` below the
    server's `lease_min_ttl_s` is raised to it (the answer says which TTL was granted)."""

    ttl: int
    id: int = 0


# -- answers ---------------------------------------------------------------------------------


class Header(msgspec.Struct, frozen=True):
    # The store's revision once the request took effect, and the leader this node knows
    # (0: none).
    revision: int
    leader: int


class KeyValueAnswer(msgspec.Struct, frozen=True):
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class PutAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    header: Header
    # The key's previous value, when asked with prev_kv and the key existed.
    prev_kv: KeyValueAnswer | None = None


class GetAnswer(msgspec.Struct, frozen=True):
    header: Header
    kv: KeyValueAnswer


class DeleteAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    header: Header
    deleted: int
    prev_kvs: list[KeyValueAnswer] = msgspec.field(default_factory=list)


class RangeAnswer(msgspec.Struct, frozen=True):
    """`kvs` in key order; `count`: the keys in the range, whatever was answered; `more`:
    keys were left out, by `limit` or by the server's `max_response_bytes` (it answers at
    most that many bytes of key-values, the first one always): read on from after the
    last key answered."""

    header: Header
    kvs: list[KeyValueAnswer]
    # Keys in the range, regardless of limit; whether limit (or max_response_bytes) left
    # some out.
    count: int
    more: bool


# A txn's responses: the same answers, tagged with the op that made them ("op").


class RangeOpAnswer(RangeAnswer, frozen=True, tag="range", tag_field="op"):
    pass


class PutOpAnswer(PutAnswer, frozen=True, tag="put", tag_field="op", omit_defaults=True):
    pass


class DeleteOpAnswer(DeleteAnswer, frozen=True, tag="delete", tag_field="op", omit_defaults=True):
    pass


OpAnswer = RangeOpAnswer | PutOpAnswer | DeleteOpAnswer


class TxnAnswer(msgspec.Struct, frozen=True):
    header: Header
    succeeded: bool
    # One per op of the branch that ran, in order.
    responses: list[OpAnswer]


class CompactAnswer(msgspec.Struct, frozen=True):
    header: Header


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
    removed; join it again with a new id and an empty data dir."""

    # "CORRUPT" (the only alarm so far; a str so that a client reads a newer kind).
    alarm: str
    member: int
    # The log index of the hash check that found it.
    check_index: int
    # "minority" or "no_majority".
    reason: str


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
    # The cluster's alarms, by member (left out when there is none).
    alarms: list[AlarmAnswer] = msgspec.field(default_factory=list)
    # This member was removed from the cluster: it answers only status, health, cluster
    # and metrics (left out while false).
    removed: bool = False


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


class ClusterAnswer(msgspec.Struct, frozen=True):
    # The node that answered; `members` indexes are known only if it is the leader.
    id: int
    leader: int
    term: int
    commit_index: int
    members: list[MemberAnswer]


class TransferAnswer(msgspec.Struct, frozen=True):
    # The new leader.
    leader: int


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    # `compacted` only: the revision history was compacted at, and the oldest revision a
    # read or a watch can still start from (compact_revision + 1).
    compact_revision: int | None = None
    oldest_revision: int | None = None


class ErrorAnswer(msgspec.Struct, frozen=True):
    error: ErrorDetail


# -- leases ----------------------------------------------------------------------------------


class LeaseGrantAnswer(msgspec.Struct, frozen=True):
    header: Header
    id: int
    # The TTL granted, in seconds (the one asked for, or lease_min_ttl_s if that was less).
    ttl: int


class LeaseKeepAliveAnswer(msgspec.Struct, frozen=True):
    """`POST /v1/lease/{id}/keepalive`: the lease now expires `ttl` seconds from when the
    keep-alive was sent (it is answered once applied through the log)."""

    header: Header
    id: int
    ttl: int


class LeaseRevokeAnswer(msgspec.Struct, frozen=True):
    """`DELETE /v1/lease/{id}`: the lease is gone and its keys were deleted at
    `header.revision` (one revision for all of them)."""

    header: Header


class LeaseAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """`GET /v1/lease/{id}` (`keys=true` lists the attached keys)."""

    header: Header
    id: int
    # Seconds left before the lease expires, as this node estimates it (rounded down; the
    # leader decides expiry), and the TTL it was granted with.
    ttl: int
    granted_ttl: int
    keys: list[str] = msgspec.field(default_factory=list)


class LeaseStatusAnswer(msgspec.Struct, frozen=True):
    id: int
    ttl: int
    granted_ttl: int


class LeasesAnswer(msgspec.Struct, frozen=True):
    """`GET /v1/leases`: every lease, by id."""

    header: Header
    leases: list[LeaseStatusAnswer]


# -- watches ---------------------------------------------------------------------------------
#
# `GET /v1/watch` answers 200 with a stream of newline-delimited JSON messages (NDJSON,
# `application/x-ndjson`), one `WatchMessage` per line, tagged by "type". Every message
# carries `revision`, a watermark: every matching event at or below it has been sent, so a
# client that resumes with `start_revision = revision + 1` sees no gap and no duplicate.


class WatchEventAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["put", "delete"]
    # For a delete: the key, its mod_revision (the delete's revision) and zeros elsewhere.
    kv: KeyValueAnswer
    # The key before this event (prev_kv=true, and the key existed).
    prev_kv: KeyValueAnswer | None = None


class WatchCreated(msgspec.Struct, frozen=True, tag="created", tag_field="type"):
    """The first message: the watch starts at `start_revision` (`revision` is one less)."""

    revision: int
    start_revision: int
    # The answering node's revision and leader when the watch started.
    header: Header


class WatchEvents(msgspec.Struct, frozen=True, tag="events", tag_field="type"):
    """Events of one or more whole revisions, in revision order (the events of one
    revision are never split between messages); `revision` >= the last event's."""

    revision: int
    events: list[WatchEventAnswer]


class WatchProgress(msgspec.Struct, frozen=True, tag="progress", tag_field="type"):
    """A bookmark (progress_notify=true): nothing matched between the last message and
    `revision`; the watch has seen the store up to it."""

    revision: int


class WatchCanceled(msgspec.Struct, frozen=True, tag="canceled", tag_field="type"):
    """The last message: the server ended the watch. `error.code` says why: `compacted`
    (the watch fell behind the compacted history: start over from a fresh read), `too_slow`
    (the client did not read fast enough, or the node's watches held too many bytes),
    `stopping` (the node is shutting down), `removed` (the node was removed from the
    cluster) or `no_leader` (the node has had no leader for a while): resume on another
    member from `revision + 1`."""

    revision: int
    error: ErrorDetail


WatchMessage = WatchCreated | WatchEvents | WatchProgress | WatchCanceled
