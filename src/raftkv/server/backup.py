"""The backup file of `raftkv snapshot save` / `restore` (`GET /v1/snapshot`).

Layout, every integer big-endian:

    b"RAFTKVBK" | u32 header length | header (msgpack BackupHeader) | payload | sha256

- the header names the format version, the Raft index and term the state is at, the MVCC
  revision, the member it came from, and the payload's length;
- the payload is a KV state machine snapshot (`KvStateMachine.snapshot()` bytes: chunks of
  zstd-compressed msgpack; older backups hold one zstd frame), restorable with
  `KvStateMachine.restore`;
- the trailing SHA-256 covers everything before it, so a truncated or altered file is
  refused before anything is written.

This module only encodes and checks (msgspec and hashlib): the CLI verifies a download
without loading the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import msgspec

MAGIC = b"RAFTKVBK"
FORMAT_VERSION = 1
_DIGEST_BYTES = 32
# A header is a few dozen bytes; anything larger is not one of ours.
_MAX_HEADER_BYTES = 1 << 16


class BackupInvalid(ValueError):
    """The file is not a complete, intact raftkv backup."""


class BackupHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format_version: int
    index: int
    term: int
    revision: int
    # The member that made it.
    node_id: int
    payload_bytes: int


def encode_prefix(header: BackupHeader) -> bytes:
    """Magic, header length and header: what precedes the payload."""
    encoded = msgspec.msgpack.encode(header)
    return MAGIC + len(encoded).to_bytes(4, "big") + encoded


def backup_chunks(header: BackupHeader, payload: bytes, chunk_bytes: int) -> Iterator[bytes]:
    """The whole file in chunks of at most `chunk_bytes` (for streaming it)."""
    digest = hashlib.sha256()
    prefix = encode_prefix(header)
    digest.update(prefix)
    yield prefix
    for offset in range(0, len(payload), chunk_bytes):
        chunk = payload[offset : offset + chunk_bytes]
        digest.update(chunk)
        yield chunk
    yield digest.digest()


def read_backup(data: bytes) -> tuple[BackupHeader, bytes]:
    """The header and payload of a backup file's bytes; BackupInvalid if it is not whole."""
    if not data.startswith(MAGIC):
        raise BackupInvalid("not a raftkv backup (wrong magic)")
    if len(data) < len(MAGIC) + 4 + _DIGEST_BYTES:
        raise BackupInvalid("the backup is truncated")
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise BackupInvalid("the backup's checksum does not match: truncated or damaged")
    length = int.from_bytes(body[len(MAGIC) : len(MAGIC) + 4], "big")
    start = len(MAGIC) + 4
    if length > _MAX_HEADER_BYTES or start + length > len(body):
        raise BackupInvalid("the backup header is damaged")
    try:
        header = msgspec.msgpack.decode(body[start : start + length], type=BackupHeader)
    except msgspec.DecodeError as error:
        raise BackupInvalid(f"the backup header does not decode: {error}") from error
    if header.format_version != FORMAT_VERSION:
        raise BackupInvalid(
            f"backup format {header.format_version}; this build reads {FORMAT_VERSION}"
        )
    payload = body[start + length :]
    if len(payload) != header.payload_bytes:
        raise BackupInvalid("the backup payload has the wrong length")
    return header, payload
