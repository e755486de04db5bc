"""Building a transaction: compares and ops, as values.

    from raftkv.client import txn

    result = await client.txn(
        compares=[txn.value("lock", "=", "free")],
        success=[txn.put("lock", "mine", prev_kv=True), txn.get("lock")],
        failure=[txn.get("lock")],
    )

A compare is `target of key  op  operand`: `value` compares bytes, `version`,
`create_revision`, `mod_revision` and `lease` compare integers (a missing key has version,
create_revision and mod_revision 0, so `txn.version(key, "=", 0)` means "absent"). Each
takes `range_end=` or `prefix=True` to compare every key of a range instead: it holds when
every live key there satisfies it (`txn.version("jobs/", "=", 0, prefix=True)`: no job
exists). Keys,
values and range ends accept `str` (taken as UTF-8) or `bytes`; the values hold bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Data",
    "DeleteOp",
    "Op",
    "PutOp",
    "RangeOp",
    "create_revision",
    "delete",
    "get",
    "lease",
    "mod_revision",
    "put",
    "range",
    "to_bytes",
    "value",
    "version",
]

# A key, value or range end as the caller gives it: bytes, or text taken as UTF-8.
Data = str | bytes

CompareTarget = Literal["value", "version", "create", "mod", "lease"]
CompareOp = Literal["=", "!=", "<", ">"]
_COMPARE_OPS = ("=", "!=", "<", ">")


def to_bytes(data: Data, what: str) -> bytes:
    """`data` as bytes: `str` is encoded as UTF-8; anything else is a caller's mistake."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes):
        return data
    raise TypeError(f"{what} must be str or bytes, got {type(data).__name__}")


@dataclass(frozen=True, slots=True)
class Compare:
    key: bytes
    # As in the API: "create"/"mod" are the key's create_revision/mod_revision.
    target: CompareTarget
    op: CompareOp
    # bytes for the "value" target, an integer for the others.
    operand: bytes | int
    # Compare every key up to range_end (excluded) instead: it holds when each live key
    # there satisfies it (a range with none compares as a missing key). prefix=True
    # compares every key starting with `key` (every key if `key` is empty).
    range_end: bytes = b""
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class PutOp:
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class RangeOp:
    key: bytes
    # Up to range_end (excluded); b"" reads `key` alone. prefix=True reads every key
    # starting with `key` instead (every key if `key` is empty).
    range_end: bytes = b""
    prefix: bool = False
    limit: int = 0
    revision: int = 0
    keys_only: bool = False
    count_only: bool = False


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: bytes
    range_end: bytes = b""
    prefix: bool = False
    prev_kv: bool = False


Op = PutOp | RangeOp | DeleteOp


def _compare(
    key: Data,
    target: CompareTarget,
    op: CompareOp,
    operand: bytes | int,
    *,
    range_end: Data,
    prefix: bool,
) -> Compare:
    if op not in _COMPARE_OPS:
        raise ValueError(f"a compare's op is one of {', '.join(_COMPARE_OPS)}, got {op!r}")
    if target != "value" and (not isinstance(operand, int) or isinstance(operand, bool)):
        raise TypeError(f"a {target} compare takes an integer, got {type(operand).__name__}")
    return Compare(
        to_bytes(key, "compare key"),
        target,
        op,
        operand,
        to_bytes(range_end, "compare range_end"),
        prefix,
    )


def value(
    key: Data, op: CompareOp, operand: Data, *, range_end: Data = b"", prefix: bool = False
) -> Compare:
    """The key's value compared with `operand` (bytewise)."""
    return _compare(
        key, "value", op, to_bytes(operand, "compare value"), range_end=range_end, prefix=prefix
    )


def version(
    key: Data, op: CompareOp, operand: int, *, range_end: Data = b"", prefix: bool = False
) -> Compare:
    """The key's version (0: the key does not exist)."""
    return _compare(key, "version", op, operand, range_end=range_end, prefix=prefix)


def create_revision(
    key: Data, op: CompareOp, operand: int, *, range_end: Data = b"", prefix: bool = False
) -> Compare:
    return _compare(key, "create", op, operand, range_end=range_end, prefix=prefix)


def mod_revision(
    key: Data, op: CompareOp, operand: int, *, range_end: Data = b"", prefix: bool = False
) -> Compare:
    return _compare(key, "mod", op, operand, range_end=range_end, prefix=prefix)


def lease(
    key: Data, op: CompareOp, operand: int, *, range_end: Data = b"", prefix: bool = False
) -> Compare:
    return _compare(key, "lease", op, operand, range_end=range_end, prefix=prefix)


def put(key: Data, value: Data, *, lease: int = 0, prev_kv: bool = False) -> PutOp:
    return PutOp(to_bytes(key, "key"), to_bytes(value, "value"), lease, prev_kv)


def get(key: Data, *, revision: int = 0) -> RangeOp:
    """Read one key (a range op of that key alone)."""
    return RangeOp(to_bytes(key, "key"), revision=revision)


def range(
    key: Data,
    range_end: Data = b"",
    *,
    prefix: bool = False,
    limit: int = 0,
    revision: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
) -> RangeOp:
    return RangeOp(
        to_bytes(key, "key"),
        to_bytes(range_end, "range_end"),
        prefix=prefix,
        limit=limit,
        revision=revision,
        keys_only=keys_only,
        count_only=count_only,
    )


def delete(
    key: Data, range_end: Data = b"", *, prefix: bool = False, prev_kv: bool = False
) -> DeleteOp:
    return DeleteOp(
        to_bytes(key, "key"), to_bytes(range_end, "range_end"), prefix=prefix, prev_kv=prev_kv
    )
