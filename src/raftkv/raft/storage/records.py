"""The record codec of `RocksStorage`: keys, and checksummed, versioned values.

Every value RocksStorage stores is a record:

    version: u8 | crc32: u32, big-endian | payload

- `version` is RECORD_VERSION. A record of any other version is refused, never guessed at.
- `crc32` is zlib's CRC-32 of the version byte followed by the payload, so a damaged version
  byte fails the checksum as well as the version check.
- `payload` is, for structured records, MessagePack (msgspec) of a fixed-shape array: its
  shape and ranges are validated on decode. For blobs (snapshot chunks, application
  values) it is the bytes themselves: the value is opaque, so there is no shape to check,
  and MessagePack would only add a length that RocksDB already keeps.

Decoders raise `RecordInvalid` with the reason; the storage, which knows the database path,
column family and key, turns it into `StorageCorrupt`. Decoding is the hot path of log
reads, so it avoids copies and intermediate objects where it can.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import msgspec

from raftkv.raft.core.types import ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMetadata

__all__ = [
    "EMPTY_STORED_SNAPSHOT",
    "RECORD_VERSION",
    "RecordInvalid",
    "StoredSnapshot",
    "decode_blob",
    "decode_entry",
    "decode_format_version",
    "decode_hard_state",
    "decode_index_key",
    "decode_index_term",
    "decode_stored_snapshot",
    "encode_blob",
    "encode_chunk_key",
    "encode_entry",
    "encode_format_version",
    "encode_hard_state",
    "encode_index_key",
    "encode_index_term",
    "encode_stored_snapshot",
]

RECORD_VERSION = 1


class RecordInvalid(ValueError):
    """A stored value is not a valid record; the message says why."""


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """The snapshot metadata as stored: what Raft needs, plus what verifies the data."""

    metadata: SnapshotMetadata
    data_length: int
    data_sha256: bytes


EMPTY_STORED_SNAPSHOT = StoredSnapshot(SnapshotMetadata(), 0, hashlib.sha256(b"").digest())

# -- keys ------------------------------------------------------------------------------------
# Fixed-width big-endian integers, so that RocksDB's bytewise key order is numeric order.

_INDEX_KEY = struct.Struct(">Q")
_CHUNK_KEY = struct.Struct(">I")


def encode_index_key(index: int) -> bytes:
    return _INDEX_KEY.pack(index)


def encode_chunk_key(chunk_number: int) -> bytes:
    return _CHUNK_KEY.pack(chunk_number)


def decode_index_key(key: bytes) -> int:
    if len(key) != _INDEX_KEY.size:
        raise RecordInvalid(f"log key {key.hex()} is not a big-endian u64")
    return int.from_bytes(key, "big")


# -- the record envelope ---------------------------------------------------------------------

_HEADER = struct.Struct(">BI")
_HEADER_SIZE = _HEADER.size
# The checksum covers the version byte; this is its CRC, the seed for the payload's.
_VERSION_CRC = zlib.crc32(bytes([RECORD_VERSION]))


def _seal(payload: bytes) -> bytes:
    return _HEADER.pack(RECORD_VERSION, zlib.crc32(payload, _VERSION_CRC)) + payload


def _open(record: bytes) -> bytes:
    """The payload of `record`, after checking its version and checksum."""
    if len(record) < _HEADER_SIZE:
        raise RecordInvalid(f"truncated record: {len(record)} bytes, header is {_HEADER_SIZE}")
    version, checksum = _HEADER.unpack_from(record)
    if version != RECORD_VERSION:
        raise RecordInvalid(f"unknown record version {version} (this build reads {RECORD_VERSION})")
    # A slice copies, but for the small payloads of the hot path it is cheaper than a
    # memoryview, and msgspec decodes bytes fastest.
    payload = record[_HEADER_SIZE:]
    computed = zlib.crc32(payload, _VERSION_CRC)
    if computed != checksum:
        raise RecordInvalid(
            f"checksum mismatch: stored {checksum:#010x}, computed {computed:#010x}"
        )
    return payload


# -- payload shapes --------------------------------------------------------------------------
# Tuples on the encode side (msgspec encodes them fastest); typed tuples on the decode side,
# so msgspec validates shape and ranges in C. The wire form is a MessagePack array either way.

# MessagePack integers stop at 2**64 - 1, so a non-negative one fits a u64.
_Unsigned = Annotated[int, msgspec.Meta(ge=0)]
_ENTRY_KINDS = (EntryKind.NORMAL, EntryKind.CONF_CHANGE)
_ENTRY_KIND_CODES = {kind: code for code, kind in enumerate(_ENTRY_KINDS)}
_EntryKindCode = Annotated[int, msgspec.Meta(ge=0, lt=len(_ENTRY_KINDS))]
_Sha256 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]

# (term, index, kind, data)
_EntryShape = tuple[_Unsigned, _Unsigned, _EntryKindCode, bytes]
# (term, vote, commit)
_HardStateShape = tuple[_Unsigned, _Unsigned, _Unsigned]
# (index, term)
_IndexTermShape = tuple[_Unsigned, _Unsigned]
# (voters, learners, voters_outgoing, learners_next, auto_leave); node ids sorted
_ConfStateShape = tuple[list[_Unsigned], list[_Unsigned], list[_Unsigned], list[_Unsigned], bool]
# (index, term, conf state, data length, sha256 of data)
_SnapshotShape = tuple[_Unsigned, _Unsigned, _ConfStateShape, _Unsigned, _Sha256]
# (format version,)
_FormatVersionShape = tuple[_Unsigned]

_encode = msgspec.msgpack.Encoder().encode
_decode_entry_payload: Callable[[bytes], tuple[int, int, int, bytes]] = msgspec.msgpack.Decoder(
    _EntryShape
).decode
_decode_hard_state_payload: Callable[[bytes], tuple[int, int, int]] = msgspec.msgpack.Decoder(
    _HardStateShape
).decode
_decode_index_term_payload: Callable[[bytes], tuple[int, int]] = msgspec.msgpack.Decoder(
    _IndexTermShape
).decode
_decode_snapshot_payload: Callable[
    [bytes], tuple[int, int, tuple[list[int], list[int], list[int], list[int], bool], int, bytes]
] = msgspec.msgpack.Decoder(_SnapshotShape).decode
_decode_format_version_payload: Callable[[bytes], tuple[int]] = msgspec.msgpack.Decoder(
    _FormatVersionShape
).decode


def _invalid(error: msgspec.DecodeError) -> RecordInvalid:
    return RecordInvalid(f"malformed payload: {error}")


# -- records ---------------------------------------------------------------------------------


def encode_entry(entry: Entry) -> bytes:
    return _seal(_encode((entry.term, entry.index, _ENTRY_KIND_CODES[entry.kind], entry.data)))


def decode_entry(record: bytes) -> Entry:
    try:
        term, index, kind, data = _decode_entry_payload(_open(record))
    except msgspec.DecodeError as error:
        raise _invalid(error) from error
    return Entry(term, index, _ENTRY_KINDS[kind], data)


def encode_hard_state(hard_state: HardState) -> bytes:
    return _seal(_encode((hard_state.term, hard_state.vote, hard_state.commit)))


def decode_hard_state(record: bytes) -> HardState:
    try:
        term, vote, commit = _decode_hard_state_payload(_open(record))
    except msgspec.DecodeError as error:
        raise _invalid(error) from error
    return HardState(term=term, vote=NodeId(vote), commit=commit)


def encode_index_term(index: int, term: int) -> bytes:
    return _seal(_encode((index, term)))


def decode_index_term(record: bytes) -> tuple[int, int]:
    try:
        return _decode_index_term_payload(_open(record))
    except msgspec.DecodeError as error:
        raise _invalid(error) from error


def encode_format_version(version: int) -> bytes:
    return _seal(_encode((version,)))


def decode_format_version(record: bytes) -> int:
    try:
        (version,) = _decode_format_version_payload(_open(record))
    except msgspec.DecodeError as error:
        raise _invalid(error) from error
    return version


def encode_stored_snapshot(stored: StoredSnapshot) -> bytes:
    metadata = stored.metadata
    conf_state = metadata.conf_state
    conf_state_payload = (
        sorted(conf_state.voters),
        sorted(conf_state.learners),
        sorted(conf_state.voters_outgoing),
        sorted(conf_state.learners_next),
        conf_state.auto_leave,
    )
    return _seal(
        _encode(
            (
                metadata.index,
                metadata.term,
                conf_state_payload,
                stored.data_length,
                stored.data_sha256,
            )
        )
    )


def decode_stored_snapshot(record: bytes) -> StoredSnapshot:
    try:
        index, term, conf_state_payload, data_length, data_sha256 = _decode_snapshot_payload(
            _open(record)
        )
    except msgspec.DecodeError as error:
        raise _invalid(error) from error
    voters, learners, voters_outgoing, learners_next, auto_leave = conf_state_payload
    conf_state = ConfState(
        voters=frozenset(NodeId(node) for node in voters),
        learners=frozenset(NodeId(node) for node in learners),
        voters_outgoing=frozenset(NodeId(node) for node in voters_outgoing),
        learners_next=frozenset(NodeId(node) for node in learners_next),
        auto_leave=auto_leave,
    )
    return StoredSnapshot(SnapshotMetadata(index, term, conf_state), data_length, data_sha256)


encode_blob = _seal


def decode_blob(record: bytes) -> bytes:
    return _open(record)
