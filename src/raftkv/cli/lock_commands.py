"""`raftkv lock NAME [-- COMMAND...]`: hold a distributed lock (`raftkv.client.recipes.Lock`)
while a command runs, or until interrupted.

The lock lives under the prefix `NAME/` on a lease of `--ttl` seconds kept alive in the
background. Once held, it prints one JSON line `{"lock", "key", "token"}` (the token is the
fencing token: pass it to whatever the command protects) and runs COMMAND with
`RAFTKV_LOCK_KEY` and `RAFTKV_LOCK_TOKEN` in its environment; the command's exit code is
`raftkv`'s. Without a command it holds the lock until Ctrl-C. If the lease is lost while
the command runs (the cluster could not be reached for a TTL), the command is sent SIGTERM
and `raftkv` exits 4 with `lock_lost`: someone else may hold the lock by then. Options may
come before or after NAME and end at `--`: `raftkv lock NAME --ttl 15 -- COMMAND`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from raftkv.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from raftkv.cli.arguments import client_settings_of, endpoints_of, positive
from raftkv.cli.errors import UsageError, fail
from raftkv.client import Client, ClientError, Lock, Refused

__all__ = ["add_commands"]

# How long a command sent SIGTERM (its lock lost) gets before SIGKILL.
_TERMINATE_GRACE_S = 5.0


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: list[argparse.ArgumentParser],
) -> None:
    lock = subparsers.add_parser(
        "lock",
        help="hold a distributed lock while a command runs (or until Ctrl-C)",
        description="Acquire the lock NAME (waiting its turn), then run COMMAND holding it, "
        "with RAFTKV_LOCK_TOKEN (the fencing token) and RAFTKV_LOCK_KEY in its environment.",
        parents=common,
    )
    lock.add_argument("name", metavar="NAME", help="the lock's name (its keys live under NAME/)")
    lock.add_argument("--ttl", type=positive, default=10, help="lease TTL in seconds (10)")
    lock.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER,
                      help="after --: the command to run while holding the lock")  # fmt: skip
    lock.set_defaults(handler=_lock, lock_parser=lock)


def _lock(arguments: argparse.Namespace) -> int:
    command: list[str] = list(arguments.command)
    if command and command[0] != "--" and ("--" in command or command[0].startswith("-")):
        # argparse.REMAINDER took everything after NAME, options too: parse those up to
        # `--` as this verb's (a bad one exits 2 naming it).
        end = command.index("--") if "--" in command else len(command)
        reparsed = arguments.lock_parser.parse_args([*command[:end], arguments.name])
        if reparsed.command:
            return fail(
                EXIT_USAGE,
                "usage",
                f"cannot tell options from the command in {' '.join(command)!r}: "
                "write raftkv lock NAME [OPTIONS] -- COMMAND",
            )
        arguments, command = reparsed, command[end:]
    if command and command[0] == "--":
        command = command[1:]
    if not arguments.name:
        return fail(EXIT_USAGE, "usage", "a lock needs a name")
    try:
        client = Client(endpoints_of(arguments), client_settings_of(arguments))
    except UsageError as error:
        return fail(EXIT_USAGE, error.code, error.message)
    except ValueError as error:
        return fail(EXIT_USAGE, "usage", str(error))
    try:
        return asyncio.run(_hold(client, arguments.name, arguments.ttl, command))
    except KeyboardInterrupt:
        return EXIT_OK


async def _hold(client: Client, name: str, ttl: int, command: list[str]) -> int:
    prefix = name.rstrip("/") + "/"
    async with client:
        try:
            async with client.lease(ttl) as lease, Lock(client, prefix, lease) as lock:
                key = prefix + f"{lease.id:016x}"
                print(json.dumps({"lock": name, "key": key, "token": lock.token}), flush=True)
                if not command:
                    await lease.lost.wait()
                    return fail(EXIT_UNAVAILABLE, "lock_lost", f"the lease of lock {name} ended")
                return await _run(command, key, lock.token, lease.lost, name)
        except Refused as error:
            return fail(EXIT_REFUSED, error.code, error.message)
        except ClientError as error:
            return fail(EXIT_UNAVAILABLE, error.code, error.message)


async def _run(command: list[str], key: str, token: int, lost: asyncio.Event, name: str) -> int:
    environment = {**os.environ, "RAFTKV_LOCK_KEY": key, "RAFTKV_LOCK_TOKEN": str(token)}
    try:
        process = await asyncio.create_subprocess_exec(*command, env=environment)
    except OSError as error:
        return fail(EXIT_USAGE, "usage", f"cannot run {command[0]!r}: {error}")
    finished = asyncio.ensure_future(process.wait())
    lost_waiter = asyncio.ensure_future(lost.wait())
    done, _ = await asyncio.wait([finished, lost_waiter], return_when=asyncio.FIRST_COMPLETED)
    if finished in done:
        lost_waiter.cancel()
        return finished.result()
    # The lock may be someone else's now: stop the command.
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(finished, _TERMINATE_GRACE_S)
    except TimeoutError:
        process.kill()
        await finished
    print(f"raftkv: lock_lost: the lease of lock {name} ended; the command was stopped",
          file=sys.stderr)  # fmt: skip
    return EXIT_UNAVAILABLE
