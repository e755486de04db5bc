"""The HTTP/JSON API as requests and answers, without I/O (h11's sans-I/O split).

Each builder returns a `Request`: the method, path, query and body to send, how the call
may be retried (`Kind`), whether it should go to the leader, and how to read a 200 answer
into a result. Both clients (`Client`, `SyncClient`) send these; nothing here touches a
socket, a clock or a lock.

Every key, value, range end and compare value travels base64 (`encoding=base64`), so any
bytes round-trip; a key in the URL path is base64 then percent-encoded (base64 has '/' and
'+'). Bodies and answers are the msgspec structs of the wire schema (`raftkv.api`), the
server's own definitions.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, assert_never
from urllib.parse import quote

import msgspec

from raftkv.api.cluster import (
    AddMemberBody,
    AlarmAnswer,
    AlarmsAnswer,
    ClusterAnswer,
    DefragmentAnswer,
    DisarmBody,
    HealthAnswer,
    StatusAnswer,
    TransferAnswer,
    TransferBody,
    UpdateMemberBody,
)
from raftkv.api.errors import ErrorAnswer, ErrorDetail
from raftkv.api.keys import KeyValueAnswer
from raftkv.api.kv import (
    CompactAnswer,
    CompactBody,
    CompareBody,
    DeleteOpAnswer,
    DeleteOpBody,
    GetAnswer,
    OpAnswer,
    OpBody,
    PutAnswer,
    PutBody,
    PutOpAnswer,
    PutOpBody,
    RangeAnswer,
    RangeOpAnswer,
    RangeOpBody,
    TxnAnswer,
    TxnBody,
)
from raftkv.api.leases import (
    LeaseAnswer,
    LeaseGrantAnswer,
    LeaseGrantBody,
    LeaseKeepAliveAnswer,
    LeaseRevokeAnswer,
    LeasesAnswer,
)
from raftkv.client.results import (
    Alarm,
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
    PutResult,
    RangeResult,
    Status,
    TxnResult,
)
from raftkv.client.txn import Compare, DeleteOp, Op, PutOp, RangeOp

T = TypeVar("T")

_BASE64 = ("encoding", "base64")


class Kind(enum.Enum):
    """How a request may be retried after an attempt whose outcome is not known."""

    # Changes nothing: retried after any failure.
    READ = enum.auto()
    # Carries an exactly-once session: retried, with the same session, after any failure;
    # the server answers a repeat of the session's last sequence with the first result.
    WRITE = enum.auto()
    # A write without a session (compact): retried only when nothing was applied.
    UNGUARDED_WRITE = enum.auto()


@dataclass(frozen=True, slots=True)
class Session:
    """An exactly-once write's identity: the server applies (client_id, sequence) once."""

    client_id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    value: T
    # The leader the answering node knows (0: none; None: the answer does not say).
    leader: int | None
    # Client URLs by member id, from a /v1/cluster answer ("" entries left out).
    client_urls: dict[int, str] | None = None
    # The answering node says it was removed from the cluster (its status does).
    removed: bool = False


class BadAnswer(Exception):
    """A 200 answer that does not read as the API says it should."""


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    body: bytes | None
    kind: Kind
    # Writes and linearizable reads go to the leader when the client knows where it is
    # (any node would forward or confirm with it: this saves a hop).
    to_leader: bool
    # Reads a 200 answer's body from the endpoint named.
    decode: Callable[[bytes, str], Decoded[T]]
    # What a call to it is, for error messages: "put 'key'".
    description: str
    # The result of a 404 `not_found` (a get of a missing key); None: a 404 is a refusal.
    absent: Callable[[], T] | None = None
    # Only the leader can serve it (a leadership transfer): a 503 from a node when the
    # leader's URL is unknown makes the client ask /v1/cluster where the leader is.
    leader_only: bool = False
    # A refusal that means an earlier attempt of this call was applied, once an attempt's
    # outcome was unknown: (error code, the call's result). A revoke retried after its
    # first attempt applied finds no lease; a grant of a client-chosen id finds it taken.
    applied_if_refused: tuple[str, Callable[[], T]] | None = None


# -- encoding --------------------------------------------------------------------------------


def to_base64(data: bytes) -> str:
    """Bytes as they travel (every key, value and range end: `encoding=base64`)."""
    return base64.b64encode(data).decode("ascii")


def _key_path(key: bytes) -> str:
    return "/v1/kv/" + quote(to_base64(key), safe="")


def describe_key(key: bytes) -> str:
    """A key for a message: text if it is UTF-8, else its bytes' repr; cut at 64 bytes."""
    shown = key[:64]
    try:
        text = repr(shown.decode())
    except UnicodeDecodeError:
        text = repr(shown)
    return text + ("..." if len(key) > 64 else "")


def _params(**values: str | int | bool) -> tuple[tuple[str, str], ...]:
    """Query parameters, leaving out those at their default (0, False, "")."""
    params = [_BASE64]
    for name, given in values.items():
        if not given:
            continue
        params.append((name, "true" if given is True else str(given)))
    return tuple(params)


_encoder = msgspec.json.Encoder()


# -- decoding --------------------------------------------------------------------------------

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def read_answer(kind: type[T], content: bytes) -> T:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        answer: T = decoder.decode(content)
    except msgspec.DecodeError as error:  # ValidationError included
        raise BadAnswer(f"not a {kind.__name__}: {error}") from error
    return answer


def from_base64(text: str, what: str) -> bytes:
    """A base64 field of an answer; BadAnswer naming `what` if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadAnswer(f"{what} is not base64: {error}") from error


def _kv(answer: KeyValueAnswer) -> KeyValue:
    return KeyValue(
        key=from_base64(answer.key, "key"),
        value=from_base64(answer.value, "value"),
        create_revision=answer.create_revision,
        mod_revision=answer.mod_revision,
        version=answer.version,
        lease=answer.lease,
    )


def kv_of(answer: KeyValueAnswer) -> KeyValue:
    """A key-value of an answer (base64 fields decoded); BadAnswer if unreadable."""
    return _kv(answer)


def range_params(
    key: bytes, range_end: bytes, *, prefix: bool, start: int
) -> tuple[tuple[str, str], ...]:
    """The query of a watch of [key, range_end) (or the prefix) from revision `start`."""
    return _params(
        key=to_base64(key), range_end=to_base64(range_end), prefix=prefix, start_revision=start
    )


def _put_result(answer: PutAnswer | PutOpAnswer) -> PutResult:
    prev_kv = None if answer.prev_kv is None else _kv(answer.prev_kv)
    return PutResult(answer.header.revision, answer.header.leader, prev_kv)


def _range_result(answer: RangeAnswer | RangeOpAnswer) -> RangeResult:
    return RangeResult(
        revision=answer.header.revision,
        leader=answer.header.leader,
        kvs=tuple(_kv(kv) for kv in answer.kvs),
        count=answer.count,
        more=answer.more,
    )


def _delete_result(answer: DeleteOpAnswer) -> DeleteResult:
    return DeleteResult(
        revision=answer.header.revision,
        leader=answer.header.leader,
        deleted=answer.deleted,
        prev_kvs=tuple(_kv(kv) for kv in answer.prev_kvs),
    )


def _op_result(answer: OpAnswer) -> PutResult | RangeResult | DeleteResult:
    match answer:
        case PutOpAnswer():
            return _put_result(answer)
        case RangeOpAnswer():
            return _range_result(answer)
        case DeleteOpAnswer():
            return _delete_result(answer)
        case _:
            assert_never(answer)


def error_of(content: bytes) -> ErrorDetail | None:
    """The error of an error answer (code, message, ...), or None if it is not one."""
    try:
        answer = read_answer(ErrorAnswer, content)
    except BadAnswer:
        return None
    return answer.error


# -- requests --------------------------------------------------------------------------------


def put(
    key: bytes, value: bytes, lease: int, prev_kv: bool, session: Session
) -> Request[PutResult]:
    body = PutBody(
        value=to_base64(value),
        lease=lease,
        prev_kv=prev_kv,
        client_id=session.client_id,
        sequence=session.sequence,
    )

    def decode(content: bytes, endpoint: str) -> Decoded[PutResult]:
        answer = read_answer(PutAnswer, content)
        return Decoded(_put_result(answer), answer.header.leader)

    return Request(
        "PUT",
        _key_path(key),
        _params(),
        _encoder.encode(body),
        Kind.WRITE,
        to_leader=True,
        decode=decode,
        description=f"put {describe_key(key)}",
    )


def get(key: bytes, revision: int, serializable: bool) -> Request[KeyValue | None]:
    def decode(content: bytes, endpoint: str) -> Decoded[KeyValue | None]:
        answer = read_answer(GetAnswer, content)
        return Decoded(_kv(answer.kv), answer.header.leader)

    return Request(
        "GET",
        _key_path(key),
        _params(revision=revision, consistency="serializable" if serializable else ""),
        None,
        Kind.READ,
        to_leader=not serializable,
        decode=decode,
        description=f"get {describe_key(key)}",
        absent=lambda: None,
    )


def range_(
    key: bytes,
    range_end: bytes,
    *,
    prefix: bool,
    limit: int,
    revision: int,
    keys_only: bool,
    count_only: bool,
    serializable: bool,
) -> Request[RangeResult]:
    def decode(content: bytes, endpoint: str) -> Decoded[RangeResult]:
        answer = read_answer(RangeAnswer, content)
        return Decoded(_range_result(answer), answer.header.leader)

    params = _params(
        key=to_base64(key),
        range_end=to_base64(range_end),
        prefix=prefix,
        limit=limit,
        revision=revision,
        keys_only=keys_only,
        count_only=count_only,
        consistency="serializable" if serializable else "",
    )
    return Request(
        "GET",
        "/v1/kv",
        params,
        None,
        Kind.READ,
        to_leader=not serializable,
        decode=decode,
        description=f"range {describe_key(key)}..{describe_key(range_end)}",
    )


def _compare_body(compare: Compare) -> CompareBody:
    operand = compare.operand
    return CompareBody(
        key=to_base64(compare.key),
        target=compare.target,
        op=compare.op,
        value=to_base64(operand) if isinstance(operand, bytes) else operand,
        range_end=to_base64(compare.range_end),
        prefix=compare.prefix,
    )


def _op_body(op: Op) -> OpBody:
    match op:
        case PutOp():
            return PutOpBody(to_base64(op.key), to_base64(op.value), op.lease, op.prev_kv)
        case RangeOp():
            return RangeOpBody(
                key=to_base64(op.key),
                range_end=to_base64(op.range_end),
                prefix=op.prefix,
                limit=op.limit,
                revision=op.revision,
                keys_only=op.keys_only,
                count_only=op.count_only,
            )
        case DeleteOp():
            return DeleteOpBody(to_base64(op.key), to_base64(op.range_end), op.prefix, op.prev_kv)
        case _:
            assert_never(op)


def _txn_request(
    compares: Sequence[Compare],
    success: Sequence[Op],
    failure: Sequence[Op],
    session: Session | None,
    *,
    decode: Callable[[bytes, str], Decoded[T]],
    description: str,
) -> Request[T]:
    """A txn; with no session (a read-only txn, which the server serves as a read and
    never records in a session), a READ retried after any failure."""
    body = TxnBody(
        compares=[_compare_body(compare) for compare in compares],
        success=[_op_body(op) for op in success],
        failure=[_op_body(op) for op in failure],
        client_id=session.client_id if session is not None else "",
        sequence=session.sequence if session is not None else 0,
    )
    return Request(
        "POST",
        "/v1/txn",
        _params(),
        _encoder.encode(body),
        Kind.WRITE if session is not None else Kind.READ,
        to_leader=True,
        decode=decode,
        description=description,
    )


def is_read_only(success: Sequence[Op], failure: Sequence[Op]) -> bool:
    """A txn of range ops only: the server serves it as a read (no log entry, no session)."""
    return all(isinstance(op, RangeOp) for op in (*success, *failure))


def txn(
    compares: Sequence[Compare],
    success: Sequence[Op],
    failure: Sequence[Op],
    session: Session | None,
) -> Request[TxnResult]:
    def decode(content: bytes, endpoint: str) -> Decoded[TxnResult]:
        answer = read_answer(TxnAnswer, content)
        result = TxnResult(
            revision=answer.header.revision,
            leader=answer.header.leader,
            succeeded=answer.succeeded,
            responses=tuple(_op_result(response) for response in answer.responses),
        )
        return Decoded(result, answer.header.leader)

    count = len(success) + len(failure)
    what = f"txn of {len(compares)} compares and {count} ops"
    return _txn_request(compares, success, failure, session, decode=decode, description=what)


def delete(key: bytes, prefix: bool, prev_kv: bool, session: Session) -> Request[DeleteResult]:
    """A delete, sent as a txn of that one delete: `DELETE /v1/kv/{key}` takes no session,
    and a delete retried without one after an unknown outcome could delete a key written
    again in between. The answer is the same as the route's."""

    def decode(content: bytes, endpoint: str) -> Decoded[DeleteResult]:
        answer = read_answer(TxnAnswer, content)
        match answer.responses:
            case [DeleteOpAnswer() as deleted]:
                header = answer.header
                result = DeleteResult(
                    header.revision,
                    header.leader,
                    deleted.deleted,
                    tuple(_kv(kv) for kv in deleted.prev_kvs),
                )
                return Decoded(result, header.leader)
            case _:
                raise BadAnswer(f"a txn of one delete answered with {answer.responses!r}")

    op = DeleteOp(key, prefix=prefix, prev_kv=prev_kv)
    what = f"delete {describe_key(key)}{' (prefix)' if prefix else ''}"
    return _txn_request([], [op], [], session, decode=decode, description=what)


def compact(revision: int) -> Request[CompactResult]:
    def decode(content: bytes, endpoint: str) -> Decoded[CompactResult]:
        answer = read_answer(CompactAnswer, content)
        return Decoded(
            CompactResult(answer.header.revision, answer.header.leader), answer.header.leader
        )

    return Request(
        "POST",
        "/v1/compact",
        (),
        _encoder.encode(CompactBody(revision=revision)),
        Kind.UNGUARDED_WRITE,
        to_leader=True,
        decode=decode,
        description=f"compact at revision {revision}",
    )


def status(hash: bool = False) -> Request[Status]:
    def decode(content: bytes, endpoint: str) -> Decoded[Status]:
        answer = read_answer(StatusAnswer, content)
        result = Status(
            endpoint=endpoint,
            id=answer.id,
            leader=answer.leader,
            term=answer.term,
            role=answer.role,
            commit_index=answer.commit_index,
            applied_index=answer.applied_index,
            revision=answer.revision,
            compacted_revision=answer.compacted_revision,
            alarms=_alarms(answer.alarms),
            removed=answer.removed,
            hash=answer.hash,
            data_hash=answer.data_hash,
            warnings=tuple(answer.warnings),
        )
        return Decoded(result, answer.leader, removed=answer.removed)

    params = (("hash", "true"),) if hash else ()
    return Request("GET", "/v1/status", params, None, Kind.READ, False, decode, "status")


def _decode_cluster(content: bytes, endpoint: str) -> Decoded[Cluster]:
    answer = read_answer(ClusterAnswer, content)
    members = tuple(
        Member(
            m.id,
            m.peer_url,
            m.client_url,
            m.role,
            m.match_index,
            m.lag,
            m.active,
            m.last_contact_s,
            m.etcd_url,
        )
        for m in answer.members
    )
    result = Cluster(
        endpoint=endpoint,
        id=answer.id,
        leader=answer.leader,
        term=answer.term,
        commit_index=answer.commit_index,
        members=members,
    )
    urls = {member.id: member.client_url for member in members if member.client_url}
    # A node that is not among the members it lists (a removed member, which still answers
    # this route) knows where the members are, not who leads them now.
    leader = answer.leader if any(member.id == answer.id for member in members) else None
    return Decoded(result, leader, urls)


def cluster() -> Request[Cluster]:
    # To the leader: only its answer has the members' match indexes.
    return Request("GET", "/v1/cluster", (), None, Kind.READ, True, _decode_cluster, "cluster")


# Membership changes are idempotent on the server (adding a member already there at the same
# address, or promoting a voter, answers with the membership as it is), so a retry after an
# unknown outcome is safe (Kind.WRITE) for add and promote. Removing twice is refused ("not a
# member"), so remove and transfer are retried only when nothing was applied.


def add_member(member_id: int, peer_url: str) -> Request[Cluster]:
    body = _encoder.encode(AddMemberBody(id=member_id, peer_url=peer_url))
    return Request(
        "POST", "/v1/members", (), body, Kind.WRITE, True, _decode_cluster,
        f"add member {member_id} at {peer_url!r}",
    )  # fmt: skip


def update_member(member_id: int, peer_url: str) -> Request[Cluster]:
    # Idempotent (a repeat finds the address set): retried like a session write.
    body = _encoder.encode(UpdateMemberBody(peer_url=peer_url))
    return Request(
        "PUT", f"/v1/members/{member_id}", (), body, Kind.WRITE, True, _decode_cluster,
        f"update member {member_id} to {peer_url!r}",
    )  # fmt: skip


def promote_member(member_id: int) -> Request[Cluster]:
    return Request(
        "POST", f"/v1/members/{member_id}/promote", (), None, Kind.WRITE, True,
        _decode_cluster, f"promote member {member_id}",
    )  # fmt: skip


def remove_member(member_id: int) -> Request[Cluster]:
    return Request(
        "DELETE", f"/v1/members/{member_id}", (), None, Kind.UNGUARDED_WRITE, True,
        _decode_cluster, f"remove member {member_id}",
    )  # fmt: skip


def transfer_leadership(to: int) -> Request[int]:
    def decode(content: bytes, endpoint: str) -> Decoded[int]:
        leader = read_answer(TransferAnswer, content).leader
        return Decoded(leader, leader)

    body = _encoder.encode(TransferBody(to=to))
    return Request(
        "POST", "/v1/leader/transfer", (), body, Kind.UNGUARDED_WRITE, True, decode,
        f"transfer leadership to {to or 'the most caught-up voter'}", leader_only=True,
    )  # fmt: skip


def _decode_alarms(content: bytes, endpoint: str) -> Decoded[tuple[Alarm, ...]]:
    answer = read_answer(AlarmsAnswer, content)
    return Decoded(_alarms(answer.alarms), None)


def _alarms(answers: list[AlarmAnswer]) -> tuple[Alarm, ...]:
    return tuple(
        Alarm(alarm.alarm, alarm.member, alarm.check_index, alarm.reason) for alarm in answers
    )


def defragment() -> Request[Defragmented]:
    def decode(content: bytes, endpoint: str) -> Decoded[Defragmented]:
        answer = read_answer(DefragmentAnswer, content)
        result = Defragmented(
            endpoint, answer.storage_bytes_before, answer.storage_bytes_after, answer.seconds
        )
        return Decoded(result, None)

    # Idempotent (a second compaction finds less to do): retried like a session write.
    return Request(
        "POST", "/v1/defragment", (), None, Kind.WRITE, False, decode, "defragment",
    )  # fmt: skip


def alarms() -> Request[tuple[Alarm, ...]]:
    return Request("GET", "/v1/alarms", (), None, Kind.READ, True, _decode_alarms, "alarms")


def disarm_alarms(member_id: int) -> Request[tuple[Alarm, ...]]:
    # Idempotent (a second disarm finds nothing to end), so retried like a session write.
    body = _encoder.encode(DisarmBody(member=member_id))
    return Request(
        "POST", "/v1/alarms/disarm", (), body, Kind.WRITE, True, _decode_alarms,
        f"disarm the NOSPACE alarm of {f'member {member_id}' if member_id else 'every member'}",
    )  # fmt: skip


def health() -> Request[bool]:
    def decode(content: bytes, endpoint: str) -> Decoded[bool]:
        return Decoded(read_answer(HealthAnswer, content).status == "ok", None)

    return Request("GET", "/health", (), None, Kind.READ, False, decode, "health")


# -- leases ----------------------------------------------------------------------------------
#
# Every lease request is a write retried after an unknown outcome (Kind.WRITE) without an
# exactly-once session, because each is safe to repeat: a grant carries an id the client
# chose, so a repeat is refused `lease_exists` (the first attempt granted it); a keep-alive
# repeated only renews again; a repeated revoke finds no lease (`lease_not_found`).


def lease_grant(ttl: int, lease_id: int) -> Request[LeaseGrantResult]:
    def decode(content: bytes, endpoint: str) -> Decoded[LeaseGrantResult]:
        answer = read_answer(LeaseGrantAnswer, content)
        header = answer.header
        return Decoded(LeaseGrantResult(answer.id, answer.ttl, header.revision, header.leader),
                       header.leader)  # fmt: skip

    return Request(
        "POST",
        "/v1/lease",
        (),
        _encoder.encode(LeaseGrantBody(ttl=ttl, id=lease_id)),
        Kind.WRITE,
        to_leader=True,
        decode=decode,
        description=f"grant lease {lease_id} of {ttl}s",
        # Granted by an earlier attempt: revision 0 says the answer was not seen (the
        # client reads the granted TTL back).
        applied_if_refused=("lease_exists", lambda: LeaseGrantResult(lease_id, ttl, 0, 0)),
    )


def lease_keep_alive(lease_id: int) -> Request[LeaseKeepAliveResult]:
    def decode(content: bytes, endpoint: str) -> Decoded[LeaseKeepAliveResult]:
        answer = read_answer(LeaseKeepAliveAnswer, content)
        header = answer.header
        result = LeaseKeepAliveResult(answer.id, answer.ttl, header.revision, header.leader)
        return Decoded(result, header.leader)

    return Request(
        "POST", f"/v1/lease/{lease_id}/keepalive", (), None, Kind.WRITE, True, decode,
        f"keep lease {lease_id} alive",
    )  # fmt: skip


def lease_revoke(lease_id: int) -> Request[LeaseRevokeResult]:
    def decode(content: bytes, endpoint: str) -> Decoded[LeaseRevokeResult]:
        header = read_answer(LeaseRevokeAnswer, content).header
        return Decoded(LeaseRevokeResult(header.revision, header.leader), header.leader)

    return Request(
        "DELETE", f"/v1/lease/{lease_id}", (), None, Kind.WRITE, True, decode,
        f"revoke lease {lease_id}",
        applied_if_refused=("lease_not_found", lambda: LeaseRevokeResult(0, 0)),
    )  # fmt: skip


def lease_info(lease_id: int, keys: bool, serializable: bool) -> Request[LeaseInfo]:
    def decode(content: bytes, endpoint: str) -> Decoded[LeaseInfo]:
        answer = read_answer(LeaseAnswer, content)
        header = answer.header
        result = LeaseInfo(
            id=answer.id,
            ttl=answer.ttl,
            granted_ttl=answer.granted_ttl,
            keys=tuple(from_base64(key, "key") for key in answer.keys),
            revision=header.revision,
            leader=header.leader,
        )
        return Decoded(result, header.leader)

    params = _params(keys=keys, consistency="serializable" if serializable else "")
    return Request(
        "GET", f"/v1/lease/{lease_id}", params, None, Kind.READ, not serializable, decode,
        f"time to live of lease {lease_id}",
    )  # fmt: skip


def leases(serializable: bool) -> Request[tuple[LeaseStatus, ...]]:
    def decode(content: bytes, endpoint: str) -> Decoded[tuple[LeaseStatus, ...]]:
        answer = read_answer(LeasesAnswer, content)
        found = tuple(LeaseStatus(item.id, item.ttl, item.granted_ttl) for item in answer.leases)
        return Decoded(found, answer.header.leader)

    params = _params(consistency="serializable" if serializable else "")
    return Request(
        "GET", "/v1/leases", params, None, Kind.READ, not serializable, decode, "list leases"
    )
