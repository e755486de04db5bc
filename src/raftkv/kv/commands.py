"""The KV API's requests and responses, and their msgpack encoding for the Raft log.

Modelled on etcd's KV service (Range, Put, DeleteRange, Txn, Compact); field names follow
etcd's protobuf. Keys and values are bytes. Key ranges follow etcd's convention:
`range_end` empty means the single key `key`; `range_end == b"\\0"` means every key >= `key`
(so `key=b"\\0", range_end=b"\\0"` is every key); otherwise the half-open range
[key, range_end), empty when range_end <= key.

A `KvCommand` wraps one write request for the log, with an optional client id and sequence
for exactly-once application (Raft thesis §6.3). Reads (`Range`, and a `Txn` without
writes: `is_read_only`) are not proposed: they are served from committed state at a
linearizable point; inside a `Txn` that writes they read the txn's own view.

Every struct forbids unknown fields, and unions are tagged, so a command that decodes is
exactly one of the shapes below; the value rules (non-empty keys, limits, no duplicate
keys in a txn branch) are checked by `raftkv.kv.validation.check_request`.

Names: each request `X` is answered by an `XResponse` (etcd's names), made of
`ResponseHeader`s and `MvccKeyValue`s (etcd's mvccpb.KeyValue); a txn's conditions are
`TxnCompare`s. The HTTP client's values (`raftkv.client.PutResult`, `KeyValue`, `Compare`,
...) are other classes with names of their own, so that no public name has two owners.
The msgpack tags (`put_result`, ...) are part of the stored format (an exactly-once session
keeps its last write's response) and keep their spelling.
"""

from __future__ import annotations

from typing import Literal, assert_never

import msgspec

from raftkv.kv.auth_commands import AuthRequest
from raftkv.kv.errors import InvalidRequest

# -- requests -------------------------------------------------------------------------------


class Range(msgspec.Struct, tag="range", frozen=True, forbid_unknown_fields=True):
    """Read keys in a range, at the current revision (`revision` 0) or a past one."""

    key: bytes
    range_end: bytes = b""
    # At most this many key-values in the result (0: no limit); `count` still counts all.
    # A node may answer fewer (its response byte budget), with `more` set.
    limit: int = 0
    revision: int = 0
    keys_only: bool = False
    count_only: bool = False


class Put(msgspec.Struct, tag="put", frozen=True, forbid_unknown_fields=True):
    key: bytes
    value: bytes
    # The lease the key is attached to (0: none); it must exist. When the lease is
    # revoked or expires, the key is deleted.
    lease: int = 0
    prev_kv: bool = False


class DeleteRange(msgspec.Struct, tag="delete_range", frozen=True, forbid_unknown_fields=True):
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


CompareTarget = Literal["value", "version", "create", "mod", "lease"]
CompareOp = Literal["=", "!=", "<", ">"]


class TxnCompare(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """`target` of `key`, compared with `value`: bytes for "value", an integer for the
    others ("create" and "mod" are create_revision and mod_revision). A missing key has
    version, revisions and lease 0, and fails every "value" comparison (as in etcd).

    `range_end` (etcd's Compare.range_end, the module's range convention): the compare
    holds when every key live in [key, range_end) at the txn's view satisfies it. A range
    with no live key is compared as one missing key: "value" fails, the others compare 0
    (as in etcd). Left out of the encoding when empty, so a single-key compare encodes
    exactly as before the field existed (an older member cannot decode one that has it)."""

    key: bytes
    target: CompareTarget
    op: CompareOp
    value: bytes | int
    range_end: bytes = b""


RequestOp = Range | Put | DeleteRange


class Txn(msgspec.Struct, tag="txn", frozen=True, forbid_unknown_fields=True):
    """If every compare holds, run `success`, else `failure`. All writes of the txn share
    one new revision; a txn that changes nothing does not create one."""

    compares: list[TxnCompare] = msgspec.field(default_factory=list)
    success: list[RequestOp] = msgspec.field(default_factory=list)
    failure: list[RequestOp] = msgspec.field(default_factory=list)


def is_read_only(txn: Txn) -> bool:
    """Whether neither branch of `txn` writes (every op a Range): such a txn changes
    nothing and creates no revision, so a node answers it as a read, without the log
    (etcd does the same)."""
    return all(isinstance(op, Range) for op in (*txn.success, *txn.failure))


class Compact(msgspec.Struct, tag="compact", frozen=True, forbid_unknown_fields=True):
    """Discard history that no read at `revision` or later needs."""

    revision: int


class PublishMember(
    msgspec.Struct,
    tag="publish_member",
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    """Record where clients reach member `member_id` (etcd's member attributes). Replicated
    so every member (and a node joining later, through a snapshot) can list every member's
    client URL. Not an MVCC write: it creates no revision and no user key.

    `etcd_url`: where the member serves etcd's gRPC API ("" when it does not). Left out of
    the encoding when empty, so a member without it writes exactly what raftkv wrote before
    the field existed (an older member cannot decode a command that carries it)."""

    member_id: int
    client_url: str
    etcd_url: str = ""


class LeaseGrant(msgspec.Struct, tag="lease_grant", frozen=True, forbid_unknown_fields=True):
    """Create lease `id` (>= 1; the proposer picks it) with a TTL of `ttl` seconds, raised
    to `KvSettings.min_lease_ttl_s` if below. Creates no revision."""

    id: int
    ttl: int


class LeaseKeepAlive(
    msgspec.Struct, tag="lease_keepalive", frozen=True, forbid_unknown_fields=True
):
    """Renew lease `id`: it expires its full TTL after this entry is applied."""

    id: int


class LeaseRevoke(msgspec.Struct, tag="lease_revoke", frozen=True, forbid_unknown_fields=True):
    """End lease `id` and delete every key attached to it, all in one new revision (none
    if it had no keys)."""

    id: int


class LeaseExpire(msgspec.Struct, tag="lease_expire", frozen=True, forbid_unknown_fields=True):
    """The leader's verdict that lease `id` expired: a revoke that applies only if the
    lease was last granted or renewed by the entry at `renewed_index`. A keep-alive or a
    new grant of the same id applied in between (which the leader had not seen when it
    decided) makes it a no-op, so expiry never kills a lease renewed meanwhile."""

    id: int
    renewed_index: int


class LeaseRemaining(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Lease `id` had `remaining_ms` left when the leader read its timer, which then
    counted from the renewal at `renewed_index`."""

    id: int
    remaining_ms: int
    renewed_index: int


class LeaseCheckpoint(
    msgspec.Struct, tag="lease_checkpoint", frozen=True, forbid_unknown_fields=True
):
    """The leader's record of how long each lease has left, so that a node that restarts
    (or a whole cluster) resumes each lease's countdown from here, not from its full TTL.
    Leases no longer present, and leases renewed since the leader read their timers (their
    renewed_index moved on: a keep-alive applied between the read and this entry), are
    skipped: a checkpoint must never shorten a renewal it did not see."""

    leases: list[LeaseRemaining]


LeaseRequest = LeaseGrant | LeaseKeepAlive | LeaseRevoke | LeaseExpire | LeaseCheckpoint


class HashCheck(msgspec.Struct, tag="hash_check", frozen=True, forbid_unknown_fields=True):
    """Open a hash check at this entry's log index (`raftkv.kv.hash_checks`): each member
    hashes its state as of this entry and reports it. `members`: the ids expected to
    report (the voters and learners the proposer knew), whose majority decides. Creates no
    revision."""

    members: list[int]


class HashReport(msgspec.Struct, tag="hash_report", frozen=True, forbid_unknown_fields=True):
    """Member `member_id`'s hash (SHA-256, 32 bytes) of its state at the check opened at
    log index `check_index`."""

    check_index: int
    member_id: int
    hash: bytes


class ClearCorruptAlarm(
    msgspec.Struct, tag="clear_corrupt_alarm", frozen=True, forbid_unknown_fields=True
):
    """End the CORRUPT alarm naming `member_id` (the leader proposes it once that member
    has left the cluster)."""

    member_id: int


HashCheckRequest = HashCheck | HashReport | ClearCorruptAlarm


class RaiseNoSpaceAlarm(
    msgspec.Struct, tag="raise_nospace_alarm", frozen=True, forbid_unknown_fields=True
):
    """Member `member_id` is out of space (`raftkv.kv.space_alarms`): its storage passed
    its quota ("quota") or its disk's free space fell below its reserve ("disk_free").
    From the entry on, the cluster refuses every write that adds data. A repeat for a
    member already named changes nothing."""

    member_id: int
    reason: Literal["quota", "disk_free"]


class DisarmNoSpaceAlarm(
    msgspec.Struct, tag="disarm_nospace_alarm", frozen=True, forbid_unknown_fields=True
):
    """End the NOSPACE alarm of member `member_id` (0: of every member); an operator's
    call once space is freed (a member still out of space raises it again)."""

    member_id: int


NoSpaceAlarmRequest = RaiseNoSpaceAlarm | DisarmNoSpaceAlarm

WriteRequest = (
    Put
    | DeleteRange
    | Txn
    | Compact
    | PublishMember
    | LeaseRequest
    | HashCheckRequest
    | NoSpaceAlarmRequest
    | AuthRequest
)


class KvCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One entry of the Raft log. With a `client_id`, `sequence` (>= 1) numbers the
    client's writes: a retry of its last sequence returns the first result unapplied.

    `auth_revision`: the stamp (`raftkv.kv.auth_state.AuthState.stamp`: the auth
    revision) of the users, roles and permissions the proposing node checked the request
    against; the apply refuses it with `AuthRevisionChanged` if they changed in between
    (the node checks again against the newer state and proposes again: etcd's rule), so
    a member that had not yet applied a revoked permission cannot let a write through. 0
    while auth was never used (so the command encodes as before auth existed), and on
    what the node's components propose directly (hash checks, alarms).

    Fields at their default are left out of the encoding.

    Named KvCommand, not Command: `raftkv.raft.Command` is the log entry that carries it.
    """

    request: WriteRequest
    client_id: str = ""
    sequence: int = 0
    auth_revision: int = 0


def compare_meets(compare: TxnCompare, actual: bytes | int) -> bool:
    """Whether `actual` (the compared key's value of the compare's target; bytes for
    "value") satisfies `compare` (the MVCC apply and the etcd API's nested txns both ask)."""
    expected = compare.value
    if isinstance(actual, bytes):
        assert isinstance(expected, bytes)  # check_request
        ordering = (actual > expected) - (actual < expected)
    else:
        assert isinstance(expected, int)  # check_request
        ordering = (actual > expected) - (actual < expected)
    match compare.op:
        case "=":
            return ordering == 0
        case "!=":
            return ordering != 0
        case "<":
            return ordering < 0
        case ">":
            return ordering > 0
        case _:
            assert_never(compare.op)


# -- responses ------------------------------------------------------------------------------


class ResponseHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The store's revision once the request took effect (etcd's header revision).
    revision: int


class MvccKeyValue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class RangeResponse(msgspec.Struct, tag="range_result", frozen=True, forbid_unknown_fields=True):
    header: ResponseHeader
    kvs: list[MvccKeyValue]
    # Keys in the range at that revision, regardless of `limit`.
    count: int
    # Whether keys were left out (by `limit`, or by the node's response byte budget).
    more: bool = False


class PutResponse(msgspec.Struct, tag="put_result", frozen=True, forbid_unknown_fields=True):
    header: ResponseHeader
    prev_kv: MvccKeyValue | None = None


class DeleteRangeResponse(
    msgspec.Struct, tag="delete_result", frozen=True, forbid_unknown_fields=True
):
    header: ResponseHeader
    deleted: int
    prev_kvs: list[MvccKeyValue] = msgspec.field(default_factory=list)


ResponseOp = RangeResponse | PutResponse | DeleteRangeResponse


class TxnResponse(msgspec.Struct, tag="txn_result", frozen=True, forbid_unknown_fields=True):
    header: ResponseHeader
    succeeded: bool
    # One per op of the branch that ran, in order.
    responses: list[ResponseOp]


class CompactResponse(
    msgspec.Struct, tag="compact_result", frozen=True, forbid_unknown_fields=True
):
    header: ResponseHeader


class PublishMemberResponse(
    msgspec.Struct, tag="publish_member_result", frozen=True, forbid_unknown_fields=True
):
    header: ResponseHeader


class LeaseGrantResponse(
    msgspec.Struct, tag="lease_grant_result", frozen=True, forbid_unknown_fields=True
):
    header: ResponseHeader
    id: int
    # The TTL granted (the one asked for, or min_lease_ttl_s).
    ttl: int


class LeaseKeepAliveResponse(
    msgspec.Struct, tag="lease_keepalive_result", frozen=True, forbid_unknown_fields=True
):
    header: ResponseHeader
    id: int
    ttl: int


class LeaseRevokeResponse(
    msgspec.Struct, tag="lease_revoke_result", frozen=True, forbid_unknown_fields=True
):
    """For a LeaseRevoke, and for a LeaseExpire (`revoked` false when it was a no-op)."""

    header: ResponseHeader
    revoked: bool = True
    # Keys deleted with it (at header.revision when > 0).
    deleted: int = 0


class LeaseCheckpointResponse(
    msgspec.Struct, tag="lease_checkpoint_result", frozen=True, forbid_unknown_fields=True
):
    header: ResponseHeader


class HashCheckResponse(
    msgspec.Struct, tag="hash_check_result", frozen=True, forbid_unknown_fields=True
):
    """For a HashCheck, a HashReport (also when ignored: a late or repeated report) and a
    ClearCorruptAlarm."""

    header: ResponseHeader


class NoSpaceAlarmResponse(
    msgspec.Struct, tag="nospace_alarm_result", frozen=True, forbid_unknown_fields=True
):
    """For a RaiseNoSpaceAlarm and a DisarmNoSpaceAlarm: the members whose NOSPACE alarm
    is raised once the entry applied (by member id, increasing)."""

    header: ResponseHeader
    members: list[int]


class AuthChangeResponse(
    msgspec.Struct, tag="auth_change_result", frozen=True, forbid_unknown_fields=True
):
    """For every auth request (`raftkv.kv.auth_commands`): the auth revision after it
    (auth changes create no store revision)."""

    header: ResponseHeader
    auth_revision: int


WriteResponse = (
    PutResponse
    | DeleteRangeResponse
    | TxnResponse
    | CompactResponse
    | PublishMemberResponse
    | LeaseGrantResponse
    | LeaseKeepAliveResponse
    | LeaseRevokeResponse
    | LeaseCheckpointResponse
    | HashCheckResponse
    | NoSpaceAlarmResponse
    | AuthChangeResponse
)


def in_range(candidate: bytes, key: bytes, range_end: bytes) -> bool:
    """Whether `candidate` is in the range (`key`, `range_end`), by the convention above."""
    if range_end == b"":
        return candidate == key
    return key <= candidate and (range_end == b"\0" or candidate < range_end)


# -- encoding -------------------------------------------------------------------------------

_ENCODER = msgspec.msgpack.Encoder()
_COMMAND_DECODER = msgspec.msgpack.Decoder(KvCommand)
_RESULT_DECODER: msgspec.msgpack.Decoder[WriteResponse] = msgspec.msgpack.Decoder(WriteResponse)


def encode_command(command: KvCommand) -> bytes:
    return _ENCODER.encode(command)


def decode_command(data: bytes) -> KvCommand:
    """The command in `data`; InvalidRequest if it does not decode to one (malformed
    msgpack, unknown fields or tags, wrong types)."""
    try:
        return _COMMAND_DECODER.decode(data)
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"command does not decode: {error}") from error


def encode_result(result: WriteResponse) -> bytes:
    return _ENCODER.encode(result)


def decode_result(data: bytes) -> WriteResponse:
    """A result stored by `encode_result` (a failure here is a damaged store: it raises
    msgspec.DecodeError for the caller to report)."""
    return _RESULT_DECODER.decode(data)
