"""Keys and values on the wire, and the header every answer about the store carries.

Keys and values travel as `str`: UTF-8 text, or base64 with the query parameter
`encoding=base64` (so any bytes round-trip). A key range follows etcd's convention:
`range_end` "" is `key` alone, "\\0" every key from `key` on, anything else the half-open
range [key, range_end); every key starting with a prefix is the range
[prefix, prefix_end(prefix)).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = [
    "MAX_INT64",
    "Header",
    "Int64",
    "KeyValueAnswer",
    "MemberId",
    "MemberIdOrZero",
    "PositiveInt64",
    "prefix_end",
]

# The ranges request bodies declare: decoding enforces them, and /openapi.json states
# them (minimum, maximum). Revisions, limits, lease ids and sequences are etcd's int64.
MAX_INT64 = (1 << 63) - 1
Int64 = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
PositiveInt64 = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT64)]
# Member ids are unsigned 64-bit, never 0 (0 names no member). msgspec cannot bound an
# integer beyond int64, so the upper bound is the server's check alone.
MemberId = Annotated[int, msgspec.Meta(ge=1)]
MemberIdOrZero = Annotated[int, msgspec.Meta(ge=0)]


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


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's
    GetPrefixRangeEnd): `prefix` with its last byte below 0xff incremented, and what
    follows it dropped. A prefix of 0xff bytes only (or the empty one) has no such end:
    b"\\0", the end of the key space (by the range convention above)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])
