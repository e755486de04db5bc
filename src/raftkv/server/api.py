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
    header: Header
    kvs: list[KeyValueAnswer]
    # Keys in the range, regardless of limit; whether limit left some out.
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


class HealthAnswer(msgspec.Struct, frozen=True):
    status: str


class ReadyAnswer(msgspec.Struct, frozen=True):
    """`GET /ready`: 200 with ready=true when this node can serve linearizable requests
    (it is a member, knows a leader and has applied what it had committed when it
    started); 503 with ready=false and the reason otherwise."""

    ready: bool
    reason: str = ""


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
    # on members that applied the same log.
    hash: str = ""


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


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str


class ErrorAnswer(msgspec.Struct, frozen=True):
    error: ErrorDetail
