"""`raftkv snapshot status FILE`: what a backup file holds, and whether it is intact,
without loading it (etcdctl's `snapshot status`).

It checks the file as restore does before writing anything (`raftkv.server.backup.
open_backup`: the file mapped, not read, its SHA-256 computed in slices, its header's
fields in range), so memory stays constant however large the backup. It does not decode
the payload (restore does that).

Exit codes: 0 an intact backup; 5 not a whole raftkv backup (as `snapshot save` and
`restore` say it); 2 the file cannot be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from raftkv.cli import EXIT_INVALID_BACKUP, EXIT_OK, EXIT_USAGE
from raftkv.cli.errors import fail
from raftkv.cli.output import Json, add_row, new_table, print_json, print_table

__all__ = ["add_command", "backup_status"]

# The file ends with the SHA-256 of everything before it (raftkv.server.backup's layout).
_DIGEST_BYTES = 32


def add_command(verbs: Any) -> None:
    status = verbs.add_parser(
        "status",
        help="what a backup file holds, checked whole, without loading it",
        description="Read FILE's header (index, term, revision, member, sizes) and check its "
        "SHA-256, without loading it: exit 5 if it is not a whole raftkv backup.",
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
    from raftkv.server.backup import open_backup  # noqa: PLC0415

    size = path.stat().st_size
    # open_backup maps the file (never reads it whole), checks its checksum in slices and
    # its header's ranges: what restore checks before it writes anything.
    with open_backup(path) as (header, _):
        pass
    with path.open("rb") as file:
        file.seek(size - _DIGEST_BYTES)
        trailer = file.read(_DIGEST_BYTES)
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


def _status(arguments: argparse.Namespace) -> int:
    from raftkv.server.backup import BackupInvalid  # noqa: PLC0415

    path: Path = arguments.file
    try:
        document = backup_status(path)
    except BackupInvalid as error:
        return fail(EXIT_INVALID_BACKUP, "invalid_backup", f"{path}: {error}")
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
