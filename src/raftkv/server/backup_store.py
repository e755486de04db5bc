"""Incremental backups: a directory of backups that share unchanged chunks
(`raftkv snapshot save --incremental DIR`, `raftkv snapshot restore DIR/backups/NAME.json`).

Layout:

    DIR/chunks/<sha256 hex>       a piece of a backup file, named by its SHA-256
    DIR/backups/<name>.json       one backup: its header and the pieces, in order

A backup file (`raftkv.server.backup`) is cut into pieces: its prefix (magic and header),
the payload cut by `transfer_chunks` (a KV snapshot is a container of content-defined
chunks of the key space, so a piece is one chunk, and two backups of mostly unchanged data
share most pieces), and the trailing SHA-256. A piece already in `chunks/` is not written
again: each backup costs the disk only what changed since the backups already there.

Safety: pieces are written to a temporary name and renamed (a crash leaves no partial
piece under a real name), the manifest last, the same way: a manifest names only pieces
that are complete on disk. Restoring re-reads every piece, checks its SHA-256 and size,
and checks the whole file's SHA-256 (`read_backup`) before anything is written. Deleting a
backup is deleting its manifest; `prune` removes the pieces no manifest names.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

from raftkv.raft.snapshot_chunks import transfer_chunks
from raftkv.server.backup import BackupHeader, BackupInvalid, encode_prefix, read_backup

__all__ = [
    "SavedIncrement",
    "assemble",
    "prune",
    "read_manifest",
    "save_increment",
    "write_assembled",
]

MANIFEST_VERSION = 1
# The longest piece (a payload region longer than this is cut).
MAX_PIECE_BYTES = 4 << 20
# A manifest names at most this many pieces (a backup of 4 TiB at 4 MiB pieces... and
# far more than any store here holds).
MAX_PIECES = 1_000_000


class Piece(msgspec.Struct, frozen=True, array_like=True):
    sha256: str
    size: int


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format_version: int
    header: BackupHeader
    # The whole backup file's size and SHA-256 (the file's own trailing digest covers it
    # too; this one lets a restore say which backup it assembled).
    file_bytes: int
    pieces: list[Piece]
    created_unix_s: float


@dataclass(frozen=True, slots=True)
class SavedIncrement:
    manifest: Path
    header: BackupHeader
    file_bytes: int
    pieces: int
    # Pieces (and their bytes) written now vs already in the directory.
    written_pieces: int
    written_bytes: int
    reused_pieces: int
    reused_bytes: int


def save_increment(
    directory: Path, backup: bytes, *, clock: Callable[[], float] = time.time
) -> SavedIncrement:
    """Store the backup file `backup` (checked whole first: BackupInvalid) in `directory`."""
    header, payload = read_backup(backup)
    prefix_bytes = len(encode_prefix(header))
    regions = [(0, prefix_bytes)]
    regions += [(prefix_bytes + offset, size) for offset, size in
                transfer_chunks(payload, MAX_PIECE_BYTES)]  # fmt: skip
    regions.append((prefix_bytes + len(payload), len(backup) - prefix_bytes - len(payload)))
    chunks_dir = directory / "chunks"
    backups_dir = directory / "backups"
    chunks_dir.mkdir(parents=True, exist_ok=True)
    backups_dir.mkdir(parents=True, exist_ok=True)
    view = memoryview(backup)
    pieces: list[Piece] = []
    written = [0, 0]
    reused = [0, 0]
    for offset, size in regions:
        if size == 0:
            continue
        data = view[offset : offset + size]
        digest = hashlib.sha256(data).hexdigest()
        path = chunks_dir / digest
        if path.exists() and path.stat().st_size == size:
            reused[0] += 1
            reused[1] += size
        else:
            _write_atomically(path, data)
            written[0] += 1
            written[1] += size
        pieces.append(Piece(digest, size))
    created = clock()
    manifest = Manifest(MANIFEST_VERSION, header, len(backup), pieces, created)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
    name = f"{stamp}-r{header.revision}-i{header.index}.json"
    target = backups_dir / name
    _write_atomically(target, msgspec.json.encode(manifest))
    return SavedIncrement(
        target, header, len(backup), len(pieces), written[0], written[1], reused[0], reused[1]
    )


def read_manifest(manifest_path: Path) -> Manifest:
    """A manifest, checked: BackupInvalid if it cannot be read, is not one, or names
    pieces that cannot be (a malformed name, sizes that do not add up)."""
    try:
        raw = manifest_path.read_bytes()
    except OSError as error:
        raise BackupInvalid(f"cannot read {manifest_path}: {error}") from error
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as error:
        raise BackupInvalid(
            f"{manifest_path} is not an incremental backup manifest: {error}"
        ) from error
    if manifest.format_version != MANIFEST_VERSION:
        raise BackupInvalid(f"manifest format {manifest.format_version} is unknown")
    if len(manifest.pieces) > MAX_PIECES:
        raise BackupInvalid(f"manifest names {len(manifest.pieces)} pieces (max {MAX_PIECES})")
    if sum(piece.size for piece in manifest.pieces) != manifest.file_bytes:
        raise BackupInvalid("manifest pieces do not add up to the backup's size")
    for position, piece in enumerate(manifest.pieces):
        if len(piece.sha256) != 64 or not all(c in "0123456789abcdef" for c in piece.sha256):
            raise BackupInvalid(f"piece {position} has a malformed name {piece.sha256!r}")
    return manifest


def assemble(manifest_path: Path) -> bytes:
    """The backup file a manifest names, every piece and the whole checked (BackupInvalid
    if anything is missing, altered or not a manifest)."""
    output = io.BytesIO()
    manifest = write_assembled(manifest_path, output)
    backup = output.getvalue()
    header, _ = read_backup(backup)
    if header != manifest.header:
        raise BackupInvalid("the assembled backup's header differs from the manifest's")
    return backup


def write_assembled(manifest_path: Path, output: BinaryIO) -> Manifest:
    """Write the backup file a manifest names to `output`, one piece in memory at a time,
    each piece checked (BackupInvalid if one is missing or altered); the manifest. The
    caller checks the whole (`read_backup`) and that its header is the manifest's."""
    manifest = read_manifest(manifest_path)
    chunks_dir = manifest_path.parent.parent / "chunks"
    for position, piece in enumerate(manifest.pieces):
        try:
            data = (chunks_dir / piece.sha256).read_bytes()
        except OSError as error:
            raise BackupInvalid(f"piece {position} ({piece.sha256}) is missing: {error}") from error
        if len(data) != piece.size or hashlib.sha256(data).hexdigest() != piece.sha256:
            raise BackupInvalid(f"piece {position} ({piece.sha256}) is damaged")
        output.write(data)
    return manifest


def prune(directory: Path) -> tuple[int, int]:
    """Remove the pieces no manifest names; (pieces, bytes) removed. BackupInvalid (and
    nothing removed) if a manifest cannot be read: its pieces would look unnamed."""
    named: set[str] = set()
    for manifest_path in sorted((directory / "backups").glob("*.json")):
        named.update(piece.sha256 for piece in read_manifest(manifest_path).pieces)
    removed = [0, 0]
    for path in (directory / "chunks").iterdir():
        if path.name not in named:
            removed[0] += 1
            removed[1] += path.stat().st_size
            path.unlink()
    return removed[0], removed[1]


def _write_atomically(path: Path, data: bytes | memoryview) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
