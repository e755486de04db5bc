"""The `raftkv` command (also `python -m raftkv`).

Server verbs (`serve`, `dev`) live in `raftkv.cli.server_commands`; client verbs (`put`,
`get`, `del`, `range`, `txn`, `status`, `members`) in `raftkv.cli.kv_commands`, `lease`
and `watch` in `raftkv.cli.lease_watch_commands`, `lock` in `raftkv.cli.lock_commands`,
`snapshot` in `raftkv.cli.snapshot_commands`, `compact` and `endpoint health|hashkv` in
`raftkv.cli.maintenance_commands`, `auth`, `user` and `role` in `raftkv.cli.auth_commands`,
`certs` (TLS certificates) in
`raftkv.cli.certs_commands`. Each module adds its subcommands with
`add_commands(subparsers)`; a subcommand's `handler(arguments)` returns the process exit
code. The client verbs share their plumbing: `arguments` (argument types, the common
flags), `output` (tables or JSON), `running` (a verb run with a client, its failures
mapped to exit codes) and `errors` (the one-line error). Heavy imports (RocksDB, gRPC,
aiohttp) happen inside the server handlers only, so client verbs start fast.

Exit codes (shared by every verb; scripts can test them):
  0 success; 1 not found (get of a missing key); 2 usage error (bad flags or settings);
  3 refused by the server (a 4xx answer: bad request, limit, compacted...);
  4 unavailable (no endpoint answered, or 503/504 after retries: outcome may be unknown);
  5 invalid backup (`snapshot`: the file is not a whole, valid raftkv backup).
A command line that does not parse prints one line, `raftkv: usage: <what> (see raftkv
VERB --help)`, and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4
EXIT_INVALID_BACKUP = 5


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (not the usage, then the error): the
    subcommands' parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"raftkv: usage: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from raftkv.cli import (  # noqa: PLC0415
        arguments,
        auth_commands,
        certs_commands,
        kv_commands,
        lease_watch_commands,
        lock_commands,
        maintenance_commands,
        server_commands,
        snapshot_commands,
    )

    # Annotated as the base class: add_subparsers makes parsers of type(parser) at run time.
    parser: argparse.ArgumentParser = _Parser(
        prog="raftkv", description="raftkv: a Raft-replicated key-value store"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server_commands.add_commands(subparsers)
    kv_commands.add_commands(subparsers)
    lease_watch_commands.add_commands(subparsers, [arguments.common_flags()])
    lock_commands.add_commands(subparsers, [arguments.common_flags()])
    maintenance_commands.add_commands(subparsers, [arguments.common_flags()])
    auth_commands.add_commands(subparsers, [arguments.common_flags()])
    snapshot_commands.add_commands(subparsers)
    certs_commands.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments, unknown = parser.parse_known_args(argv)
    if unknown:
        # Found by the verb's parser but reported by the top one: name the verb's help.
        print(
            f"raftkv: usage: unrecognized arguments: {' '.join(unknown)} "
            f"(see raftkv {arguments.command} --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    code: int = arguments.handler(arguments)
    return code


def run() -> None:
    sys.exit(main())
