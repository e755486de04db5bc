"""The backup file of `raftkv snapshot save` / `restore` (`GET /v1/snapshot`).

Layout, every integer big-endian:

    b"RAFTKVBK" | u32 header length | header (msgpack BackupHeader) | payload | sha256

- the header names the format version, the Raft index and term the state is at, the MVCC
  revision, the member it came from, and the payload's length;
- the payload is a KV state machine snapshot (`KvStateMachine.snapshot()` bytes: chunks of
  zstd-compressed msgpack; older backups hold one zstd frame), restorable with
  `KvStateMachine.restore`;
- the trailing SHA-256 covers everything before it, so a truncated or altered file is
  refused before anything is written;
- `padding` in the header (zero bytes, absent from most backups) makes the whole file's
  size 32 more than a multiple of 512, which `etcdctl snapshot save` checks before it
  keeps a file (etcd's database pages plus a SHA-256): the backups etcd's
  Maintenance.Snapshot sends carry it (`padded_for_etcd`).

This module only encodes and checks (msgspec and hashlib): the CLI verifies a download
without loading the server. `open_backup` checks a file without reading it into memory:
the checksum is computed reading it in slices, and the payload is a view of the file
mapped into memory (the OS reads it in as it is used).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
from collections.abc import Iterator
from pathlib import Path

import msgspec

MAGIC = b"RAFTKVBK"
FORMAT_VERSION = 1
_DIGEST_BYTES = 32
# A header is a few dozen bytes; anything larger is not one of ours.
_MAX_HEADER_BYTES = 1 << 16
# Raft indexes and terms, revisions: int64 everywhere they are stored or answered.
_MAX_INT64 = 2**63 - 1
_READ_BYTES = 1 << 20


class BackupInvalid(ValueError):
    """The file is not a complete, intact raftkv backup."""


class BackupHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    format_version: int
    index: int
    term: int
    revision: int
    # The member that made it.
    node_id: int
    payload_bytes: int
    # Zero bytes that only set the file's size (see the module docstring); left out of
    # the encoding when empty, so such a header is the bytes it always was.
    padding: bytes = b""


# etcdctl keeps a snapshot whose size is this much more than a multiple of _ETCD_PAGE.
_ETCD_PAGE = 512
_MAX_PADDING = 2 * _ETCD_PAGE


def padded_for_etcd(header: BackupHeader) -> BackupHeader:
    """`header` with the padding that makes the file's size 32 (the SHA-256) more than a
    multiple of 512, as `etcdctl snapshot save` requires of what it receives."""
    for size in range(_MAX_PADDING):
        padded = msgspec.structs.replace(header, padding=bytes(size))
        total = len(encode_prefix(padded)) + header.payload_bytes + _DIGEST_BYTES
        if total % _ETCD_PAGE == _DIGEST_BYTES:
            return padded
    raise AssertionError("no padding fits: the header's encoding grew by more than a page")


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


def read_backup(data: bytes | memoryview) -> tuple[BackupHeader, memoryview]:
    """The header and payload (a view of `data`) of a backup file's bytes; BackupInvalid
    if it is not whole, or its header is out of range."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise BackupInvalid("not a raftkv backup (wrong magic)")
    if len(view) < len(MAGIC) + 4 + _DIGEST_BYTES:
        raise BackupInvalid("the backup is truncated")
    body, digest = view[:-_DIGEST_BYTES], view[-_DIGEST_BYTES:]
    checksum = hashlib.sha256()
    for offset in range(0, len(body), _READ_BYTES):
        checksum.update(body[offset : offset + _READ_BYTES])
    if checksum.digest() != digest:
        raise BackupInvalid("the backup's checksum does not match: truncated or damaged")
    length = int.from_bytes(body[len(MAGIC) : len(MAGIC) + 4], "big")
    start = len(MAGIC) + 4
    if length > _MAX_HEADER_BYTES or start + length > len(body):
        raise BackupInvalid("the backup header is damaged")
    try:
        header = msgspec.msgpack.decode(body[start : start + length], type=BackupHeader)
    except msgspec.DecodeError as error:
        raise BackupInvalid(f"the backup header does not decode: {error}") from error
    check_header(header)
    payload = body[start + length :]
    if len(payload) != header.payload_bytes:
        raise BackupInvalid("the backup payload has the wrong length")
    return header, payload


def check_header(header: BackupHeader) -> None:
    """BackupInvalid unless every field is one a real backup can hold: a node restored at an
    index or term of 2**64 - 1 (or -5) would write it and die at its first entry."""
    if header.format_version != FORMAT_VERSION:
        raise BackupInvalid(
            f"backup format {header.format_version}; this build reads {FORMAT_VERSION}"
        )
    ranges = {
        "index": (header.index, 1),
        "term": (header.term, 1),
        "revision": (header.revision, 0),
        "node_id": (header.node_id, 1),
        "payload_bytes": (header.payload_bytes, 0),
        "padding length": (len(header.padding), 0),
    }
    for name, (value, low) in ranges.items():
        if not low <= value <= _MAX_INT64:
            raise BackupInvalid(
                f"the backup header's {name} {value} is out of range [{low}, 2**63-1]: "
                "not a backup raftkv made"
            )
    if len(header.padding) >= _MAX_PADDING or any(header.padding):
        raise BackupInvalid("the backup header's padding is not a few zero bytes")


@contextlib.contextmanager
def open_backup(path: Path) -> Iterator[tuple[BackupHeader, memoryview]]:
    """`read_backup` over the file at `path`, mapped into memory rather than read: the
    payload is valid inside the `with` only. BackupInvalid if it is not a whole backup;
    OSError if it cannot be opened."""
    with path.open("rb") as file:
        if bytes(file.read(len(MAGIC))) != MAGIC:  # before mapping a file of any size
            raise BackupInvalid("not a raftkv backup (wrong magic)")
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    try:
        yield read_backup(view)
    finally:
        # A view of it still held (by the caller, or a traceback's frames) keeps it open;
        # the garbage collector unmaps it then.
        with contextlib.suppress(BufferError):
            view.release()
            mapped.close()
