"""`raftkv snapshot status FILE`: what a backup file holds, and whether it is intact,
without loading it (etcdctl's `snapshot status`).

It reads the header (the layout is `raftkv.server.backup`'s: magic, header length, msgpack
header, payload, SHA-256 of everything before), checks that the file is exactly as long as
the header says, then streams the file through SHA-256 in chunks of a MiB and compares the
trailing digest: memory stays constant however large the backup. It does not decode the
payload (restore does that).

Exit codes: 0 an intact backup; 1 not a whole raftkv backup (as `snapshot save` and
`restore` say it); 2 the file cannot be read.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import IO, Any

from raftkv.cli import EXIT_OK, EXIT_USAGE
from raftkv.cli.errors import fail
from raftkv.cli.output import Json, add_row, new_table, print_json, print_table

__all__ = ["add_command", "backup_status"]

_CHUNK_BYTES = 1 << 20
_DIGEST_BYTES = 32
_LENGTH_BYTES = 4
# A header is a few dozen bytes; anything larger is not one of ours (as backup.py says).
_MAX_HEADER_BYTES = 1 << 16


def add_command(verbs: Any) -> None:
    status = verbs.add_parser(
        "status",
        help="what a backup file holds, checked whole, without loading it",
        description="Read FILE's header (index, term, revision, member, sizes) and check its "
        "SHA-256, streaming: exit 1 if it is not a whole raftkv backup.",
    )
    status.add_argument("file", metavar="FILE", type=Path, help="a backup file")
    status.add_argument(
        "--output",
        choices=["table", "json"],
        default="table",
        help="table for people (default), json (one document on stdout) for scripts",
    )
    status.set_defaults(handler=_status)


def backup_status(path: Path) -> Json:
    """The header of the backup at `path` and its size and digest, checked whole;
    BackupInvalid if it is not a whole raftkv backup, OSError if it cannot be read."""
    import msgspec  # noqa: PLC0415

    from raftkv.server.backup import MAGIC, BackupHeader, BackupInvalid  # noqa: PLC0415

    size = path.stat().st_size
    with path.open("rb") as file:
        digest = hashlib.sha256()
        start = _read_exactly(file, len(MAGIC) + _LENGTH_BYTES, digest)
        if not start.startswith(MAGIC):
            raise BackupInvalid("not a raftkv backup (wrong magic)")
        length = int.from_bytes(start[len(MAGIC) :], "big")
        if length > _MAX_HEADER_BYTES:
            raise BackupInvalid("the backup header is damaged")
        try:
            header = msgspec.msgpack.decode(_read_exactly(file, length, digest), type=BackupHeader)
        except msgspec.DecodeError as error:
            raise BackupInvalid(f"the backup header does not decode: {error}") from error
        expected = len(start) + length + header.payload_bytes + _DIGEST_BYTES
        if size != expected:
            raise BackupInvalid(
                f"the file has {size} bytes; its header says {expected}: truncated or damaged"
            )
        remaining = header.payload_bytes
        while remaining:
            remaining -= len(_read_exactly(file, min(remaining, _CHUNK_BYTES), digest))
        trailer = file.read(_DIGEST_BYTES)
    if digest.digest() != trailer:
        raise BackupInvalid("the backup's checksum does not match: truncated or damaged")
    return {
        "file": str(path),
        "bytes": size,
        "format_version": header.format_version,
        "index": header.index,
        "term": header.term,
        "revision": header.revision,
        "node_id": header.node_id,
        "payload_bytes": header.payload_bytes,
        "sha256": trailer.hex(),
    }


def _read_exactly(file: IO[bytes], count: int, digest: Any) -> bytes:
    from raftkv.server.backup import BackupInvalid  # noqa: PLC0415

    data = file.read(count)
    if len(data) != count:
        raise BackupInvalid("the backup is truncated")
    digest.update(data)
    return data


def _status(arguments: argparse.Namespace) -> int:
    from raftkv.cli.snapshot_commands import EXIT_INVALID  # noqa: PLC0415
    from raftkv.server.backup import BackupInvalid  # noqa: PLC0415

    path: Path = arguments.file
    try:
        document = backup_status(path)
    except BackupInvalid as error:
        return fail(EXIT_INVALID, "invalid_backup", f"{path}: {error}")
    except OSError as error:
        reason = error.strerror or str(error)
        return fail(EXIT_USAGE, "usage", f"cannot read the backup file {path}: {reason}")
    if arguments.output == "json":
        print_json(document)
        return EXIT_OK
    table = new_table("field", "value", title=f"{path}: an intact raftkv backup")
    for name, value in document.items():
        if name != "file":
            add_row(table, name, str(value))
    print_table(table)
    return EXIT_OK
