"""The hash of the MVCC history up to a revision: what etcd's `Maintenance.HashKV(revision)`
answers, and what clients (`etcdctl endpoint hashkv --rev`) compare across members.

What is hashed at revision R, with compacted revision C (C <= R <= current): every history
entry the store holds with revision <= R, in stored key order (by key, then revision), each
as its key, its revision and its record — a tombstone, or the value, create_revision,
version and lease — and, first, R and C. Under the layout's invariants the entries at or
below C are exactly what compaction keeps (each key's newest entry at or below C, unless a
tombstone), so this is etcd's choice too (mvcc/hash.go: every revision <= R in the key
bucket, less what a compaction under way is about to drop): the hash covers every version
a read at a revision in [C, R] can see. It reads no revision log, so the entry of C that
compaction keeps for watches from C (and raftkv versions before it dropped) changes nothing.

Why it holds still and agrees:
- equal on members that applied the same entries: the history is replicated state (writes
  and compactions are log commands), and the hash reads only it, in a fixed order;
- unchanged by later writes: they add entries above R only (an entry's revision is its
  mod_revision: nothing at or below R is rewritten), and they do not move C. A later
  compaction does (it drops history), and changes `compact_revision` with it, as in etcd;
- independent of the storage encoding: records are decoded and hashed field by field
  (fixed-width integers, length-prefixed bytes), so a layout change that keeps the data
  keeps the hash.

Not etcd's hash: a SHA-256, not a crc32 over bbolt's keys and values; compare raftkv's
members with each other, never with an etcd's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from raftkv.kv.layout import HistoryRecord, decode_record, split_history_key, unescape

_HISTORY_DECODER = msgspec.msgpack.Decoder(HistoryRecord)
# Names this hash's format: a different format must never hash alike by accident.
_DOMAIN = b"raftkv.history_hash/1\x00"
# Bytes fed to the digest at once (hashlib releases the GIL for updates over 2 KiB).
_SLICE_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class HistoryHash:
    """The history's SHA-256 at `revision` (see the module docstring), with the compacted
    revision it was taken above and the store's current revision when it was taken."""

    digest: bytes
    revision: int
    compacted_revision: int
    current_revision: int


def hash_history(history: Iterable[tuple[bytes, bytes]], revision: int, compacted: int) -> bytes:
    """SHA-256 of the `history` entries (stored key, record) with revision <= `revision`,
    `history` being the whole history space in stored key order."""
    digest = hashlib.sha256(_DOMAIN)
    pending = bytearray()
    pending += _u64(revision) + _u64(compacted)
    for stored, data in history:
        escaped, entry_revision = split_history_key(stored)
        if entry_revision > revision:
            continue
        record = decode_record(_HISTORY_DECODER, stored, data)
        key = unescape(escaped)
        pending += _u64(len(key)) + key + _u64(entry_revision)
        if record.tombstone:
            pending += b"\x00"
        else:
            pending += b"\x01" + _u64(record.create_revision) + _u64(record.version)
            pending += _u64(record.lease) + _u64(len(record.value)) + record.value
        if len(pending) >= _SLICE_BYTES:
            digest.update(pending)
            pending.clear()
    digest.update(pending)
    return digest.digest()


def _u64(number: int) -> bytes:
    return number.to_bytes(8, "big", signed=True)
