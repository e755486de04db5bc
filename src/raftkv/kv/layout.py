"""How the KV state machine lays its data out in the `AppData` key space.

Every key starts with one byte naming its space; integers are big-endian u64 so that byte
order is numeric order; values are msgpack records (array-like structs, so field names are
not repeated in every record).

| space          | key                                   | value                                   |
| -------------- | ------------------------------------- | --------------------------------------- |
| meta           | b"meta:mvcc"                          | MvccMeta: format, revision, compacted   |
|                | b"meta:sessions"                      | SessionsMeta: number of sessions        |
| history        | b"h" escape(key) revision             | HistoryRecord: value, create_revision,  |
|                |                                       | version, lease, tombstone               |
| latest index   | b"k" escape(key)                      | IndexRecord: mod_revision,              |
|                |                                       | create_revision, version, lease         |
| revision log   | b"r" revision                         | the user keys changed at that revision  |
| members        | b"meta:member:" member id             | MemberRecord: client_url                |
| hash checks    | b"meta:hash_check"                    | HashCheckRecord: the last check, its    |
|                |                                       | reports, the CORRUPT alarms             |
| space alarms   | b"meta:nospace_alarms"                | NoSpaceAlarmsRecord: the NOSPACE alarms |
| auth           | b"meta:auth"                          | AuthRecord: users, roles, whether auth  |
|                |                                       | is on, its revision, the signing key    |
| sessions       | b"s" client id (UTF-8)                | SessionRecord: sequence, index, result  |
| session age    | b"a" log index, client id (UTF-8)     | empty                                   |
| leases         | b"l" lease id                         | LeaseRecord: ttl, remaining_ms,         |
|                |                                       | renewed_index                           |
| lease keys     | b"L" lease id, escape(key)            | empty                                   |

Invariants:
- the latest index holds exactly the live keys (a deleted key has a tombstone in history and
  no index entry); its record matches the key's newest history entry, whose revision is its
  mod_revision;
- a history entry's revision is its mod_revision; each key changes at most once per
  revision, so (key, revision) is unique;
- the revision log holds an entry for every revision above the compacted revision C that
  changed something, and one at C itself, written by the compaction: the keys whose entry
  at C it kept (the puts at C, in the order they were made; empty if C only deleted), what
  a watch from C reads, as etcd serves a watch from its compaction revision. The next
  compaction drops it. A store last compacted by a raftkv before this entry was kept has
  none at C: a watch there starts above C (`MvccStore.oldest_watch_revision`). Nothing is
  read below C; an older raftkv that installed a snapshot of this one's leaves the entry it
  got there (it drops its own from C + 1 on), which is why the hashes members compare leave
  out the revision log at or below C (`hash_checks`);
- after compaction at C, a key keeps its history above C plus its newest entry at or below
  C unless that entry is a tombstone;
- a live key with lease L != 0 in its index record has a lease-keys entry under L, and
  every lease-keys entry is such a key; L has a lease record (a put refuses an unknown
  lease, and a revoke deletes the lease's keys with it);
- "meta:mvcc" is absent until the first write changes the revision (revision 1, compacted 0,
  as a fresh etcd), so the data depends only on the commands applied, never on how they
  were grouped into `apply` calls.

Escaping: a user key is stored as escape(key) = key with every 0x00 byte replaced by
0x00 0xFF, followed by the terminator 0x00 0x01. For user keys a < b (bytewise),
escape(a) < escape(b), and no escaped key is a prefix of another: inside an escaped key a
0x00 is always followed by 0xFF, so the terminator marks the end. Hence a key's history
entries are exactly the keys starting with b"h" escape(key), and the user range [a, b)
maps to the stored range [escape(a), escape(b)) in both the history and the index.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from raftkv.raft.storage.base import StorageCorrupt

# The version of this layout, in MvccMeta; a newer one is refused rather than misread.
# Keeping the compacted revision's log entry did not change it: every key and record is
# as before, so raftkv versions on either side of that change read each other's stores.
FORMAT_VERSION = 1

MVCC_META_KEY = b"meta:mvcc"
SESSIONS_META_KEY = b"meta:sessions"
MEMBER_PREFIX = b"meta:member:"
HASH_CHECK_KEY = b"meta:hash_check"
NOSPACE_ALARMS_KEY = b"meta:nospace_alarms"
AUTH_KEY = b"meta:auth"
HISTORY_PREFIX = b"h"
INDEX_PREFIX = b"k"
REVISION_PREFIX = b"r"
SESSION_PREFIX = b"s"
SESSION_AGE_PREFIX = b"a"
LEASE_PREFIX = b"l"
LEASE_KEYS_PREFIX = b"L"

_ESCAPED_ZERO = b"\x00\xff"
# What ends every escaped key (see Escaping above).
ESCAPE_TERMINATOR = b"\x00\x01"
_TERMINATOR = ESCAPE_TERMINATOR
_INTEGER_BYTES = 8


class MvccMeta(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    format_version: int
    revision: int
    compacted_revision: int


class HistoryRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A key's state as of one revision; a tombstone records a delete (empty fields)."""

    value: bytes
    create_revision: int
    version: int
    lease: int
    tombstone: bool


class IndexRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A live key's newest history entry, without its value."""

    mod_revision: int
    create_revision: int
    version: int
    lease: int


class MemberRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """What a member published about itself (PublishMember). Stored by
    `encode_member_record`: without an etcd URL, as the one-element array every version
    wrote before `etcd_url` existed (members of both versions then hold the same bytes, and
    hash alike)."""

    client_url: str
    etcd_url: str = ""


class CorruptAlarm(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Member `member_id` was found CORRUPT by the hash check opened at `check_index`:
    its hash differed from the majority's ("minority"), or the members disagreed with no
    hash held by a majority ("no_majority")."""

    member_id: int
    check_index: int
    reason: Literal["minority", "no_majority"]


class HashCheckRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The last hash check (raftkv.kv.hash_checks) and the alarms so far. `check_index` 0:
    no check yet. `reports` are (member id, hash) in the order they applied; `majority`
    is the hash a majority of `members` reported, b"" until there is one."""

    check_index: int
    members: list[int]
    reports: list[tuple[int, bytes]]
    majority: bytes
    # By member id, increasing; at most one per member.
    alarms: list[CorruptAlarm]


class NoSpaceAlarm(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Member `member_id` ran out of space ("quota": its storage passed its quota;
    "disk_free": its disk's free space fell below its reserve), raised by the entry at
    `raised_index`."""

    member_id: int
    reason: Literal["quota", "disk_free"]
    raised_index: int


class NoSpaceAlarmsRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    # By member id, increasing; at most one per member. Absent from the store when empty.
    alarms: list[NoSpaceAlarm]


class PermissionRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A role's access to a key range (raftkv.kv.auth_commands.Permission's fields)."""

    kind: Literal["read", "write", "readwrite"]
    key: bytes
    range_end: bytes


class RoleRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    name: str
    # By (key, range_end), increasing; at most one per range.
    permissions: list[PermissionRecord]


class UserRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A user: its password hash (raftkv.kv.passwords; "" none: a certificate names it),
    its roles (sorted), and the auth revision that last set its password, which every token
    issued to it carries (a token naming an older one is void)."""

    name: str
    password_hash: str
    roles: list[str]
    password_revision: int


class AuthRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Users and roles (raftkv.kv.auth_state), each sorted by name. `revision` counts the
    auth changes applied (absent record: revision 1, nothing else). `signing_key`: the
    tokens' key while auth is enabled, b"" otherwise."""

    enabled: bool
    revision: int
    signing_key: bytes
    users: list[UserRecord]
    roles: list[RoleRecord]


class SessionsMeta(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    count: int


class SessionRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A client's last applied write: its sequence, log index and encoded result."""

    sequence: int
    index: int
    result: bytes


class LeaseRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A live lease: its TTL (seconds), the time it had left (ms) as of the entry at
    `renewed_index` or a later checkpoint, and the log index of its grant or last
    keep-alive (which a LeaseExpire must name)."""

    ttl: int
    remaining_ms: int
    renewed_index: int


_ENCODER = msgspec.msgpack.Encoder()
_Record = TypeVar("_Record")


def encode_record(record: object) -> bytes:
    return _ENCODER.encode(record)


def encode_member_record(record: MemberRecord) -> bytes:
    if not record.etcd_url:
        return _ENCODER.encode([record.client_url])
    return _ENCODER.encode(record)


def decode_record(decoder: msgspec.msgpack.Decoder[_Record], key: bytes, data: bytes) -> _Record:
    """Decode a stored record; a failure means a damaged store, which must stop the node."""
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as error:
        raise StorageCorrupt(f"app_data key {key[:64]!r}: {error}") from error


def encode_integer(value: int) -> bytes:
    return value.to_bytes(_INTEGER_BYTES, "big")


def decode_integer(data: bytes) -> int:
    return int.from_bytes(data, "big")


def escape(key: bytes) -> bytes:
    return key.replace(b"\x00", _ESCAPED_ZERO) + _TERMINATOR


def unescape(escaped: bytes) -> bytes:
    if not escaped.endswith(_TERMINATOR):
        raise StorageCorrupt(f"escaped key {escaped[:64]!r} has no terminator")
    return escaped[: -len(_TERMINATOR)].replace(_ESCAPED_ZERO, b"\x00")


def history_key(escaped_key: bytes, revision: int) -> bytes:
    return HISTORY_PREFIX + escaped_key + encode_integer(revision)


def split_history_key(stored: bytes) -> tuple[bytes, int]:
    """(escaped user key, revision) of a history key."""
    return stored[1:-_INTEGER_BYTES], decode_integer(stored[-_INTEGER_BYTES:])


def index_key(escaped_key: bytes) -> bytes:
    return INDEX_PREFIX + escaped_key


def revision_key(revision: int) -> bytes:
    return REVISION_PREFIX + encode_integer(revision)


def member_key(member_id: int) -> bytes:
    return MEMBER_PREFIX + encode_integer(member_id)


def session_key(client_id: str) -> bytes:
    return SESSION_PREFIX + client_id.encode()


def session_age_key(index: int, client_id: str) -> bytes:
    return SESSION_AGE_PREFIX + encode_integer(index) + client_id.encode()


def client_of_session_age_key(stored: bytes) -> str:
    return stored[1 + _INTEGER_BYTES :].decode()


def lease_key(lease_id: int) -> bytes:
    return LEASE_PREFIX + encode_integer(lease_id)


def lease_id_of(stored: bytes) -> int:
    return decode_integer(stored[1 : 1 + _INTEGER_BYTES])


def lease_keys_prefix(lease_id: int) -> bytes:
    return LEASE_KEYS_PREFIX + encode_integer(lease_id)


def lease_attachment_key(lease_id: int, escaped_key: bytes) -> bytes:
    return lease_keys_prefix(lease_id) + escaped_key


def escaped_key_of_attachment(stored: bytes) -> bytes:
    return stored[1 + _INTEGER_BYTES :]


def prefix_successor(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix`: trailing 0xff bytes
    dropped and the last other byte incremented. Every prefix here starts with a space byte
    below 0xff, so there is always one; a prefix of 0xff bytes only raises ValueError.

    Not the API's `raftkv.api.keys.prefix_end`, which answers b"\\0" for such a prefix:
    there b"\\0" is a sentinel of the user's key ranges ("to the end of the key space"),
    while here it would be a real stored key, the first of all, and a scan up to it would
    silently read nothing."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError(f"no key follows every key starting with {prefix!r}")
    return stripped[:-1] + bytes([stripped[-1] + 1])
