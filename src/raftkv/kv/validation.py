"""`check_request`: the value rules of the KV API, checked before a request changes anything.

Decoding (`decode_command`) guarantees the shapes and types; this module checks the values:
- keys are non-empty (as in etcd) and within `max_key_bytes`, range ends too (a compare's
  included);
- values are within `max_value_bytes`;
- integers (revisions, limits, leases, sequences) are in 0 .. 2**63 - 1, etcd's int64 range,
  so every revision fits the store's 8-byte keys;
- a txn has at most `max_txn_ops` compares and at most that many ops in each branch;
- a compare's value is bytes for target "value" and an integer for the others;
- neither branch of a txn writes a key twice (two puts, or a put inside one of the branch's
  delete ranges): etcd's "duplicate key given in txn request". Both branches are checked,
  whichever would run, so the answer never depends on the data.
The store applies these rules itself on every request; the HTTP layer can call
`check_request` before proposing to refuse a bad request without a round through the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from raftkv.kv.auth_commands import AuthRequest
from raftkv.kv.auth_state import check_auth_request
from raftkv.kv.commands import (
    ClearCorruptAlarm,
    Compact,
    DeleteRange,
    DisarmNoSpaceAlarm,
    HashCheck,
    HashReport,
    KvCommand,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    PublishMember,
    Put,
    RaiseNoSpaceAlarm,
    Range,
    RequestOp,
    Txn,
    TxnCompare,
    WriteRequest,
    in_range,
)
from raftkv.kv.errors import DuplicateKey, EmptyKey, InvalidRequest, LimitExceeded
from raftkv.kv.hash_checks import check_hash_request
from raftkv.kv.settings import KvSettings
from raftkv.kv.space_alarms import check_space_alarm_request

MAX_INTEGER = (1 << 63) - 1
# A member's published client URL (scheme, host, port: far below this).
MAX_CLIENT_URL_BYTES = 1024
# Leases in one checkpoint command (the leader splits larger sets), as etcd batches them.
MAX_CHECKPOINT_LEASES = 1000


def check_request(request: WriteRequest | Range, settings: KvSettings) -> None:
    """Raise an InvalidRequest subclass naming the first rule `request` breaks."""
    if isinstance(request, AuthRequest):
        check_auth_request(request)
        return
    match request:
        case Range():
            _check_range(request, settings, "range")
        case Put():
            _check_put(request, settings, "put")
        case DeleteRange():
            _check_delete(request, settings, "delete")
        case Txn():
            _check_txn(request, settings)
        case Compact():
            _check_integer("compact revision", request.revision)
        case PublishMember():
            _check_integer("member_id", request.member_id)
            if request.member_id == 0:
                raise InvalidRequest("member_id must be >= 1")
            for name, url in (("client_url", request.client_url), ("etcd_url", request.etcd_url)):
                size = len(url.encode())
                if size > MAX_CLIENT_URL_BYTES:
                    raise LimitExceeded(
                        f"{name} length", size, "MAX_CLIENT_URL_BYTES", MAX_CLIENT_URL_BYTES
                    )
        case LeaseGrant():
            _check_lease_id(request.id)
            if not 1 <= request.ttl <= settings.max_lease_ttl_s:
                raise InvalidRequest(
                    f"lease ttl must be in 1..{settings.max_lease_ttl_s} seconds "
                    f"(max_lease_ttl_s), got {request.ttl}"
                )
        case LeaseKeepAlive() | LeaseRevoke():
            _check_lease_id(request.id)
        case LeaseExpire():
            _check_lease_id(request.id)
            _check_integer("renewed_index", request.renewed_index)
        case LeaseCheckpoint():
            if len(request.leases) > MAX_CHECKPOINT_LEASES:
                raise LimitExceeded(
                    "checkpoint leases",
                    len(request.leases),
                    "MAX_CHECKPOINT_LEASES",
                    MAX_CHECKPOINT_LEASES,
                )
            for lease in request.leases:
                _check_lease_id(lease.id)
                _check_integer("remaining_ms", lease.remaining_ms)
                _check_integer("renewed_index", lease.renewed_index)
        case HashCheck() | HashReport() | ClearCorruptAlarm():
            check_hash_request(request)
        case RaiseNoSpaceAlarm() | DisarmNoSpaceAlarm():
            check_space_alarm_request(request)
        case _:
            assert_never(request)


def _check_lease_id(lease_id: int) -> None:
    _check_integer("lease id", lease_id)
    if lease_id == 0:
        raise InvalidRequest("a lease id is >= 1 (0 means no lease)")


def check_session(command: KvCommand, settings: KvSettings) -> None:
    """The exactly-once fields: both set (sequence >= 1) or both left out."""
    if command.client_id == "":
        if command.sequence != 0:
            raise InvalidRequest("a sequence needs a client_id")
        return
    size = len(command.client_id.encode())
    if size > settings.max_client_id_bytes:
        raise LimitExceeded(
            "client_id length", size, "max_client_id_bytes", settings.max_client_id_bytes
        )
    _check_integer("sequence", command.sequence)
    if command.sequence == 0:
        raise InvalidRequest("a client_id needs a sequence >= 1")


def _check_integer(what: str, value: int) -> None:
    if not 0 <= value <= MAX_INTEGER:
        raise InvalidRequest(f"{what} must be in 0..{MAX_INTEGER}, got {value}")


def _check_key(key: bytes, settings: KvSettings, where: str) -> None:
    if not key:
        raise EmptyKey(where)
    if len(key) > settings.max_key_bytes:
        raise LimitExceeded(
            f"{where} key length", len(key), "max_key_bytes", settings.max_key_bytes
        )


def _check_range_end(range_end: bytes, settings: KvSettings, where: str) -> None:
    if len(range_end) > settings.max_key_bytes:
        raise LimitExceeded(
            f"{where} range_end length", len(range_end), "max_key_bytes", settings.max_key_bytes
        )


def _check_value(value: bytes, settings: KvSettings, where: str) -> None:
    if len(value) > settings.max_value_bytes:
        raise LimitExceeded(
            f"{where} value length", len(value), "max_value_bytes", settings.max_value_bytes
        )


def _check_range(request: Range, settings: KvSettings, where: str) -> None:
    _check_key(request.key, settings, where)
    _check_range_end(request.range_end, settings, where)
    _check_integer(f"{where} limit", request.limit)
    _check_integer(f"{where} revision", request.revision)


def _check_put(request: Put, settings: KvSettings, where: str) -> None:
    _check_key(request.key, settings, where)
    _check_value(request.value, settings, where)
    _check_integer(f"{where} lease", request.lease)


def _check_delete(request: DeleteRange, settings: KvSettings, where: str) -> None:
    _check_key(request.key, settings, where)
    _check_range_end(request.range_end, settings, where)


def _check_compare(compare: TxnCompare, settings: KvSettings, where: str) -> None:
    _check_key(compare.key, settings, where)
    _check_range_end(compare.range_end, settings, where)
    if compare.target == "value":
        if not isinstance(compare.value, bytes):
            raise InvalidRequest(f"{where}: target 'value' compares bytes, got an integer")
        _check_value(compare.value, settings, where)
    else:
        if not isinstance(compare.value, int):
            raise InvalidRequest(f"{where}: target {compare.target!r} compares an integer")
        _check_integer(f"{where} value", compare.value)


def _check_txn(request: Txn, settings: KvSettings) -> None:
    ops = max(len(request.compares), len(request.success), len(request.failure))
    if ops > settings.max_txn_ops:
        raise LimitExceeded("txn ops", ops, "max_txn_ops", settings.max_txn_ops)
    for position, compare in enumerate(request.compares):
        _check_compare(compare, settings, f"txn compare {position}")
    for branch, ops_of_branch in (("success", request.success), ("failure", request.failure)):
        for position, op in enumerate(ops_of_branch):
            where = f"txn {branch} op {position}"
            match op:
                case Range():
                    _check_range(op, settings, where)
                case Put():
                    _check_put(op, settings, where)
                case DeleteRange():
                    _check_delete(op, settings, where)
                case _:
                    assert_never(op)
        _check_writes_once(ops_of_branch)


def _check_writes_once(ops: Sequence[RequestOp]) -> None:
    deletes = [(op.key, op.range_end) for op in ops if isinstance(op, DeleteRange)]
    written: set[bytes] = set()
    for op in ops:
        if not isinstance(op, Put):
            continue
        if op.key in written or any(in_range(op.key, key, end) for key, end in deletes):
            raise DuplicateKey(op.key)
        written.add(op.key)
