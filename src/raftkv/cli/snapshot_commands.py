"""`raftkv snapshot save FILE` and `raftkv snapshot restore FILE`: backups (`snapshot status
FILE`, what a backup holds, is `raftkv.cli.snapshot_status`).

With `save --incremental DIR` the backup goes into a directory of backups that share
unchanged chunks (`raftkv.server.backup_store`): each costs the disk what changed since;
`restore DIR/backups/NAME.json` restores one, `prune DIR` drops chunks no backup names.

- `save` downloads `GET /v1/snapshot` from the first endpoint that serves it (any member:
  the state is taken at a linearizable point, so it holds every write acknowledged before),
  streaming into FILE.part with a progress bar on a terminal, checks the file whole
  (magic, header, SHA-256) and only then renames it to FILE.
- `restore` seeds a NEW data dir from a backup, as member `--id` of a new cluster of
  `--initial-cluster` (the `raftkv serve` settings) under a new cluster id (printed);
  restore every founder from the same file, then start them with `raftkv serve
  --cluster-id ID`.

Exit codes as for every verb (raftkv.cli): 0 done; 2 usage or a local problem (bad flags,
a data dir that is not empty, a file that cannot be read or written here); 3 the server
refused; 4 no endpoint served it; 5 the file is not a whole, valid backup. A failed
`save` leaves no FILE.part behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from raftkv.cli import (
    EXIT_INVALID_BACKUP,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from raftkv.cli.arguments import (
    add_credential_flags,
    add_tls_flags,
    client_settings_of,
    endpoints_of,
)
from raftkv.cli.errors import UsageError, fail

_CHUNK_BYTES = 1 << 20


def add_commands(subparsers: Any) -> None:
    # Imported here: server_commands owns the settings flags restore shares with serve.
    from raftkv.cli.server_commands import add_setting_flags  # noqa: PLC0415

    snapshot = subparsers.add_parser("snapshot", help="back up and restore the whole store")
    verbs = snapshot.add_subparsers(dest="snapshot_command", metavar="VERB", required=True)
    save = verbs.add_parser(
        "save",
        help="download a consistent backup from any member",
        description="Download a backup (GET /v1/snapshot) to FILE, checked before it is kept.",
    )
    save.add_argument("file", metavar="FILE", type=Path)
    save.add_argument(
        "--incremental",
        action="store_true",
        help="FILE is a directory of backups sharing unchanged chunks: add one to it",
    )
    save.add_argument(
        "--endpoints",
        default=None,
        metavar="URL,URL",
        help="members to try (default $RAFTKV_ENDPOINTS, else http://127.0.0.1:8080)",
    )
    save.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    add_tls_flags(save)
    add_credential_flags(save)
    save.set_defaults(handler=_save)
    restore = verbs.add_parser(
        "restore",
        help="seed a new member's data dir from a backup",
        description="Restore FILE into a new --data-dir as member --id of a new cluster of "
        "--initial-cluster (every founder from the same file), then start it with "
        "raftkv serve, the same settings and --cluster-id as printed (a restored cluster "
        "has a new id).",
    )
    restore.add_argument(
        "file", metavar="FILE", type=Path, help="a backup file, or DIR/backups/NAME.json"
    )
    add_setting_flags(restore)
    restore.set_defaults(handler=_restore)
    prune = verbs.add_parser(
        "prune",
        help="remove the chunks no backup of an incremental directory names",
        description="Remove chunks of DIR that no manifest in DIR/backups names (delete a "
        "backup by deleting its manifest first).",
    )
    prune.add_argument("directory", metavar="DIR", type=Path)
    prune.set_defaults(handler=_prune)
    # In a module of its own: it reads a backup without loading it (snapshot_status).
    from raftkv.cli.snapshot_status import add_command as add_status  # noqa: PLC0415

    add_status(verbs)


def _save(arguments: argparse.Namespace) -> int:
    endpoints = endpoints_of(arguments)
    target: Path = arguments.file
    if arguments.incremental:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return _local_error(target, error)
        partial = target / ".download.part"
    else:
        if target.is_dir():
            return fail(
                EXIT_USAGE,
                "usage",
                f"{target} is a directory: name the backup file (e.g. {target / 'backup.raftkv'}), "
                "or add to a directory of backups with --incremental",
            )
        if not target.parent.is_dir():
            return fail(EXIT_USAGE, "usage", f"{target.parent} is not a directory: create it first")
        partial = target.with_name(target.name + ".part")
    try:
        return _download_and_keep(arguments, endpoints, target, partial)
    finally:
        # Whatever happened (a refusal, a local error, Ctrl-C): no partial file stays behind.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _download_and_keep(
    arguments: argparse.Namespace, endpoints: str, target: Path, partial: Path
) -> int:
    import httpx  # noqa: PLC0415

    from raftkv.client.credentials import credentials_of  # noqa: PLC0415
    from raftkv.client.tls import verify_of  # noqa: PLC0415
    from raftkv.server.backup import BackupInvalid, open_backup  # noqa: PLC0415

    try:
        # The TLS flags and credentials as every client verb reads them (--cacert,
        # $RAFTKV_CACERT, --user, ...); a backup needs the role root once auth is enabled.
        settings = client_settings_of(arguments)
        verify = verify_of(settings)
    except UsageError as error:
        return fail(EXIT_USAGE, error.code, error.message)
    except ValueError as error:
        return fail(EXIT_USAGE, "usage", str(error))
    login = credentials_of(settings)
    failures = []
    for endpoint in _candidates(endpoints):
        try:
            with httpx.stream(
                "GET",
                f"{endpoint}/v1/snapshot",
                timeout=arguments.timeout,
                verify=verify,
                auth=login,
            ) as response:
                if response.status_code != 200:
                    response.read()
                    failures.append(f"{endpoint}: {response.status_code} {response.text[:200]}")
                    if 400 <= response.status_code < 500:
                        return fail(EXIT_REFUSED, "refused", failures[-1])
                    continue
                total = int(response.headers.get("content-length", "0"))
                try:
                    file = partial.open("wb")
                except OSError as error:
                    return _local_error(partial, error)
                with file:
                    _download(response.iter_bytes(_CHUNK_BYTES), file, total)
        except httpx.HTTPError as error:
            failures.append(f"{endpoint}: {error}")
            continue
        except OSError as error:  # writing the file (the stream's own errors are httpx's)
            return _local_error(partial, error)
        try:
            with open_backup(partial) as (header, _):
                pass
        except BackupInvalid as error:
            return fail(EXIT_INVALID_BACKUP, "invalid_backup", f"{endpoint}: {error}")
        if arguments.incremental:
            return _save_increment(target, partial, endpoint)
        os.replace(partial, target)
        print(
            json.dumps(
                {
                    "saved": str(target),
                    "from": endpoint,
                    "bytes": target.stat().st_size,
                    "index": header.index,
                    "revision": header.revision,
                }
            ),
            flush=True,
        )
        return EXIT_OK
    return fail(EXIT_UNAVAILABLE, "unavailable", "; ".join(failures) or "no endpoint given")


def _local_error(path: Path, error: OSError) -> int:
    """A problem with a file here (not the server's: retrying will not help)."""
    reason = error.strerror or str(error)
    return fail(EXIT_USAGE, "local_error", f"{path}: {reason}")


def _candidates(endpoints: str) -> list[str]:
    """The endpoints given, then the client URLs of the members the cluster lists (as the
    leader sees them), so a save moves on from a removed or dead member to a live one as
    every other verb does."""
    from raftkv.client import ClientError, SyncClient  # noqa: PLC0415

    given = [url.strip().rstrip("/") for url in endpoints.split(",") if url.strip()]
    try:
        with SyncClient(",".join(given)) as client:
            members = client.cluster().members
    except ClientError:
        return given  # nothing answered: the download's own errors will say so
    learned = [member.client_url.rstrip("/") for member in members if member.client_url]
    return given + [url for url in learned if url not in given]


def _save_increment(directory: Path, partial: Path, endpoint: str) -> int:
    from raftkv.server.backup_store import save_increment  # noqa: PLC0415

    saved = save_increment(directory, partial.read_bytes())
    partial.unlink()
    print(
        json.dumps(
            {
                "saved": str(saved.manifest),
                "from": endpoint,
                "bytes": saved.file_bytes,
                "index": saved.header.index,
                "revision": saved.header.revision,
                "pieces": saved.pieces,
                "written_pieces": saved.written_pieces,
                "written_bytes": saved.written_bytes,
                "reused_pieces": saved.reused_pieces,
                "reused_bytes": saved.reused_bytes,
            }
        ),
        flush=True,
    )
    return EXIT_OK


def _prune(arguments: argparse.Namespace) -> int:
    from raftkv.server.backup import BackupInvalid  # noqa: PLC0415
    from raftkv.server.backup_store import prune  # noqa: PLC0415

    directory: Path = arguments.directory
    if not (directory / "chunks").is_dir():
        return fail(EXIT_USAGE, "usage", f"{directory} is not an incremental backup directory")
    try:
        pieces, size = prune(directory)
    except BackupInvalid as error:
        return fail(EXIT_INVALID_BACKUP, "invalid_backup", f"nothing removed: {error}")
    print(json.dumps({"removed_pieces": pieces, "removed_bytes": size}), flush=True)
    return EXIT_OK


@contextlib.contextmanager
def _restore_progress() -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar of the items written, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(transient=True) as bar:
        task = bar.add_task("restoring", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield progress


def _download(chunks: Any, file: BinaryIO, total: int) -> None:
    """Write `chunks` to `file`, with a progress bar when stderr is a terminal."""
    if not sys.stderr.isatty():
        for chunk in chunks:
            file.write(chunk)
        return
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(transient=True) as progress:
        task = progress.add_task("downloading the backup", total=total or None)
        for chunk in chunks:
            file.write(chunk)
            progress.advance(task, len(chunk))


def _restore(arguments: argparse.Namespace) -> int:
    from raftkv.cli.server_commands import settings_of  # noqa: PLC0415
    from raftkv.server.backup import BackupInvalid  # noqa: PLC0415
    from raftkv.server.restore import restore  # noqa: PLC0415
    from raftkv.server.settings import SettingsInvalid  # noqa: PLC0415

    try:
        settings = settings_of(arguments)
        with _restore_progress() as progress:
            report = restore(arguments.file, settings, progress)
        print(report, flush=True)
    except SettingsInvalid as error:
        return fail(EXIT_USAGE, "usage", str(error))
    except BackupInvalid as error:
        return fail(EXIT_INVALID_BACKUP, "invalid_backup", f"{arguments.file}: {error}")
    except OSError as error:
        return _local_error(arguments.file, error)
    except MemoryError:
        return fail(
            EXIT_USAGE,
            "local_error",
            f"{arguments.file}: not enough memory to restore this backup: restore on a "
            "machine with more memory",
        )
    return EXIT_OK
