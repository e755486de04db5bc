"""Lease and watch verbs of the `raftkv` command: `lease grant|keepalive|revoke|ttl|list`
and `watch`. They take the common flags of `raftkv.cli.arguments` (--endpoints, --output,
--base64, --timeout) and fail as every client verb does (`raftkv.cli.running`).

`watch` prints one line per event for people (`put KEY VALUE` / `delete KEY`, with the
revision), or with `--output json` one JSON document per message, NDJSON: `{"revision",
"events": [{"type", "kv", "prev_kv"?}]}`. It runs until interrupted (exit 0) or `--count`
events; it reconnects and resumes by itself (see `raftkv.client.watching`). `lease
keepalive` renews every TTL/3 until interrupted (or `--count` renewals); `--once` renews
once.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from raftkv.cli import EXIT_OK
from raftkv.cli.arguments import input_bytes, key_input_flags, non_negative, positive
from raftkv.cli.output import Json, Output, add_row, new_table, print_json, print_table
from raftkv.cli.running import Verb, run_verb
from raftkv.client import SyncClient, WatchBatch, WatchEvent

__all__ = ["add_commands"]


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: list[argparse.ArgumentParser],
) -> None:
    lease = subparsers.add_parser(
        "lease", help="grant, renew, revoke and inspect leases", description="Leases."
    )
    verbs = lease.add_subparsers(dest="lease_command", metavar="VERB", required=True)

    def verb(name: str, help_text: str, handler: Verb) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help_text, description=help_text, parents=common)
        parser.set_defaults(handler=run_verb(handler))
        return parser

    grant = verb("grant", "grant a lease of TTL seconds", _grant)
    grant.add_argument("ttl", metavar="TTL", type=positive, help="seconds")
    grant.add_argument("--id", type=positive, default=0, help="the lease id (default: random)")

    keep_alive = verb("keepalive", "keep a lease alive (every TTL/3, until interrupted)", _renew)
    keep_alive.add_argument("id", metavar="ID", type=positive)
    keep_alive.add_argument("--once", action="store_true", help="renew once and exit")
    keep_alive.add_argument(
        "--count", type=non_negative, default=0, help="stop after this many renewals"
    )

    verb("revoke", "revoke a lease, deleting its keys", _revoke).add_argument(
        "id", metavar="ID", type=positive
    )
    ttl = verb("ttl", "a lease's remaining and granted TTL", _ttl)
    ttl.add_argument("id", metavar="ID", type=positive)
    ttl.add_argument("--keys", action="store_true", help="list the attached keys")
    verb("list", "every lease", _list)

    watch = subparsers.add_parser(
        "watch",
        help="print changes to a key, a prefix or a range as they happen",
        description="Print changes as they happen, until interrupted.",
        parents=[*common, key_input_flags()],
    )
    watch.set_defaults(handler=run_verb(_watch))
    watch.add_argument("key", metavar="KEY", nargs="?", default=None, help="(default: all)")
    watch.add_argument("range_end", metavar="RANGE_END", nargs="?", default=None)
    watch.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    watch.add_argument(
        "--revision", type=non_negative, default=0, help="start at this revision (default: now)"
    )
    # The old spelling, kept working for scripts (`get` and `range` say --revision).
    watch.add_argument("--rev", dest="revision", type=non_negative, help=argparse.SUPPRESS)
    watch.add_argument("--prev-kv", action="store_true", help="show each key's previous value")
    watch.add_argument("--no-put", action="store_true", help="leave out puts")
    watch.add_argument("--no-delete", action="store_true", help="leave out deletes")
    watch.add_argument("--progress", action="store_true", help="print progress notifications")
    watch.add_argument("--count", type=non_negative, default=0, help="exit after this many events")


# -- leases ----------------------------------------------------------------------------------


def _grant(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    granted = client.lease_grant(arguments.ttl, id=arguments.id)
    _show(output, {"id": granted.id, "ttl": granted.ttl, "revision": granted.revision})
    return EXIT_OK


def _renew(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    renewals = 1 if arguments.once else arguments.count
    done = 0
    try:
        while True:
            result = client.lease_keep_alive(arguments.id)
            done += 1
            document = {"id": result.id, "ttl": result.ttl, "revision": result.revision}
            if output.as_json:
                print_json(document)
            else:
                print(f"lease {result.id} kept alive, ttl {result.ttl}s", flush=True)
            if renewals and done >= renewals:
                return EXIT_OK
            time.sleep(result.ttl / 3)
    except KeyboardInterrupt:
        return EXIT_OK


def _revoke(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    result = client.lease_revoke(arguments.id)
    _show(output, {"id": arguments.id, "revoked": True, "revision": result.revision})
    return EXIT_OK


def _ttl(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    info = client.lease_time_to_live(arguments.id, keys=arguments.keys)
    document: Json = {"id": info.id, "ttl": info.ttl, "granted_ttl": info.granted_ttl}
    if arguments.keys:
        if output.as_json:
            document["keys"] = [output.text(key, "key") for key in info.keys]
        else:
            document["keys"] = ", ".join(output.shown(key) for key in info.keys)
    _show(output, document)
    return EXIT_OK


def _list(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    leases = client.leases()
    if output.as_json:
        rows = [
            {"id": item.id, "ttl": item.ttl, "granted_ttl": item.granted_ttl} for item in leases
        ]
        print_json({"leases": rows})
        return EXIT_OK
    table = new_table("id", "ttl", "granted_ttl")
    for lease in leases:
        add_row(table, str(lease.id), str(lease.ttl), str(lease.granted_ttl))
    print_table(table)
    return EXIT_OK


def _show(output: Output, document: Json) -> None:
    if output.as_json:
        print_json(document)
        return
    table = new_table(*document)
    add_row(table, *(str(value) for value in document.values()))
    print_table(table)


# -- watch -----------------------------------------------------------------------------------


def _watch(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = b"" if arguments.key is None else input_bytes(arguments, arguments.key, "key")
    range_end = (
        b"" if arguments.range_end is None else input_bytes(arguments, arguments.range_end, "end")
    )
    watcher = client.watch(
        key,
        range_end,
        # No key at all: every key.
        prefix=arguments.prefix or arguments.key is None,
        start_revision=arguments.revision,
        prev_kv=arguments.prev_kv,
        no_put=arguments.no_put,
        no_delete=arguments.no_delete,
        progress_notify=arguments.progress,
    )
    show = _batch_json(output) if output.as_json else _batch_lines(output)
    seen = 0
    try:
        with watcher:
            for received in watcher.batches():
                batch = received
                if arguments.count:
                    batch = WatchBatch(received.revision, received.events[: arguments.count - seen])
                show(batch)
                seen += len(batch.events)
                if arguments.count and seen >= arguments.count:
                    return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _batch_json(output: Output) -> Callable[[WatchBatch], None]:
    def show(batch: WatchBatch) -> None:
        events = [_event_json(output, event) for event in batch.events]
        print_json({"revision": batch.revision, "events": events})
        sys.stdout.flush()

    return show


def _event_json(output: Output, event: WatchEvent) -> Json:
    document: Json = {"type": event.type, "kv": output.kv_json(event.kv)}
    if event.prev_kv is not None:
        document["prev_kv"] = output.kv_json(event.prev_kv)
    return document


def _batch_lines(output: Output) -> Callable[[WatchBatch], None]:
    def show(batch: WatchBatch) -> None:
        if not batch.events:
            print(f"progress: revision {batch.revision}")
        for event in batch.events:
            line = f"{event.type} {output.shown(event.kv.key)}"
            if event.type == "put":
                line += f" {output.shown(event.kv.value)}"
            if event.prev_kv is not None:
                line += f" (was {output.shown(event.prev_kv.value)})"
            print(f"{line} [revision {event.revision}]")
        sys.stdout.flush()

    return show
