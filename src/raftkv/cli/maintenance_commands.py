"""Maintenance verbs of the `raftkv` command, named as etcdctl names them: `compact
REVISION`, `endpoint health`, `endpoint hashkv`, `alarm list`, `alarm disarm`, `defrag`. They
take the common flags of `raftkv.cli.arguments` and fail as every client verb does
(`raftkv.cli.running`).

- `compact REVISION` discards the history before REVISION (`POST /v1/compact`); reads and
  watches at older revisions are refused `compacted` after it.
- `endpoint health` asks every endpoint given, and every member the cluster lists, for
  `/health`, one attempt each; exit 4 if any is not healthy, naming them.
- `endpoint hashkv` asks the same nodes for `/v1/status?hash=true`: the SHA-256 of each
  one's whole committed KV state, beside the index it had applied. Members that applied
  the same index have the same hash; a member whose hash differs at the same index has
  diverged (the hash checks raise a CORRUPT alarm for it). Beside it `data_hash`, the
  user's data only: equal on a cluster restored from a backup and on the source at the
  backup (`hash` also covers what each cluster writes for itself). Exit 4 if a node did
  not answer.
- `alarm list` lists the cluster's alarms with one line each on what to do (exit 0, as
  etcdctl's); `alarm disarm [--member ID]` ends NOSPACE alarms once space is freed.

`member update` (etcdctl's, changing a member's peer URL) has no counterpart: the server
has no route for it. Remove the member and add it again at its new address instead.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from raftkv.cli import EXIT_OK, EXIT_UNAVAILABLE
from raftkv.cli.arguments import endpoints_hint, non_negative
from raftkv.cli.errors import fail
from raftkv.cli.output import (
    Json,
    Output,
    add_row,
    alarm_json,
    describe_alarm,
    new_table,
    print_json,
    print_table,
)
from raftkv.cli.running import Verb, run_verb
from raftkv.client import ClientError, Cluster, Status, SyncClient

__all__ = ["add_commands", "every_endpoint"]


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: list[argparse.ArgumentParser],
) -> None:
    compact = subparsers.add_parser(
        "compact",
        help="discard the history before a revision",
        description="Discard the history before REVISION: older revisions can no longer be "
        "read or watched (compacted).",
        parents=common,
    )
    compact.add_argument("revision", metavar="REVISION", type=non_negative)
    compact.set_defaults(handler=run_verb(_compact))

    endpoint = subparsers.add_parser(
        "endpoint",
        help="check every endpoint: health, state hash",
        description="Ask every endpoint given and every member the cluster lists.",
    )
    verbs = endpoint.add_subparsers(dest="endpoint_command", metavar="VERB", required=True)

    def verb(name: str, help_text: str, handler: Verb) -> None:
        parser = verbs.add_parser(name, help=help_text, description=help_text, parents=common)
        parser.set_defaults(handler=run_verb(handler))

    defrag = subparsers.add_parser(
        "defrag",
        help="give back the space of deleted and compacted data on every member",
        description="Compact the storage files of every endpoint given and every member the "
        "cluster lists, one at a time (etcdctl defrag); each keeps serving meanwhile. Exit 4 "
        "if one could not be.",
        parents=common,
    )
    defrag.set_defaults(handler=run_verb(_defrag))
    verb("health", "whether each member answers /health (exit 4 if any does not)", _health)
    verb("hashkv", "each member's hash of its whole KV state, at its applied index", _hashkv)

    alarm = subparsers.add_parser(
        "alarm",
        help="list the cluster's alarms, disarm NOSPACE",
        description="The cluster's alarms (CORRUPT, NOSPACE), as etcdctl's alarm verbs.",
    )
    alarm_verbs = alarm.add_subparsers(dest="alarm_command", metavar="VERB", required=True)
    listing = alarm_verbs.add_parser(
        "list", help="every alarm, and what to do", description=_LIST_HELP, parents=common
    )
    listing.set_defaults(handler=run_verb(_alarm_list))
    disarm = alarm_verbs.add_parser(
        "disarm", help="end NOSPACE alarms", description=_DISARM_HELP, parents=common
    )
    disarm.add_argument(
        "--member",
        type=non_negative,
        default=0,
        help="the member whose NOSPACE alarm to end (default: every member's)",
    )
    disarm.set_defaults(handler=run_verb(_alarm_disarm))


def every_endpoint(client: SyncClient) -> tuple[list[str], Cluster | None]:
    """The endpoints given, then every member's client URL the cluster lists (one endpoint
    is enough to reach them all), and the cluster as the leader sees it (None if no
    endpoint answered)."""
    endpoints = list(client.endpoints)
    cluster: Cluster | None = None
    with contextlib.suppress(ClientError):
        cluster = client.cluster()
        for member in cluster.members:
            url = member.client_url.rstrip("/")
            if url and url not in endpoints:
                endpoints.append(url)
    return endpoints, cluster


_LIST_HELP = (
    "List the cluster's alarms (the same on every member): CORRUPT (a member's state "
    "diverged: it serves no clients) and NOSPACE (a member ran out of space: the cluster "
    "refuses writes that add data)."
)
_DISARM_HELP = (
    "End NOSPACE alarms once space is freed (delete keys, compact). A member still out of "
    "space raises its alarm again within a second. CORRUPT alarms are not disarmed: they "
    "end when their member is removed."
)


def _alarm_list(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.alarms(client.alarms())
    return EXIT_OK


def _alarm_disarm(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    left = client.disarm_alarms(arguments.member)
    if output.as_json:
        print_json({"disarmed": arguments.member or "all", "alarms": [alarm_json(a) for a in left]})
        return EXIT_OK
    who = f"member {arguments.member}" if arguments.member else "every member"
    print(f"disarmed the NOSPACE alarm of {who}")
    for alarm in left:
        print(describe_alarm(alarm))
    return EXIT_OK


def _compact(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    result = client.compact(arguments.revision)
    if output.as_json:
        print_json({"compacted": arguments.revision, "revision": result.revision})
    else:
        print(f"compacted the history before revision {arguments.revision}")
    return EXIT_OK


def _defrag(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    endpoints, _ = every_endpoint(client)
    rows: list[Json] = []
    for endpoint in endpoints:
        try:
            done = client.defragment(endpoint)
            rows.append(
                {
                    "endpoint": endpoint,
                    "storage_bytes_before": done.storage_bytes_before,
                    "storage_bytes_after": done.storage_bytes_after,
                    "seconds": done.seconds,
                }
            )
        except ClientError as failure:
            rows.append({"endpoint": endpoint, "error": f"{failure.code}: {failure.message}"})
    if output.as_json:
        print_json(rows)
    else:
        table = new_table("endpoint", "before", "after", "took", "error")
        for row in rows:
            if "error" in row:
                add_row(table, row["endpoint"], "-", "-", "-", row["error"])
            else:
                add_row(
                    table,
                    row["endpoint"],
                    f"{row['storage_bytes_before']:,} B",
                    f"{row['storage_bytes_after']:,} B",
                    f"{row['seconds']} s",
                    "",
                )
        print_table(table)
    failed = [row["endpoint"] for row in rows if "error" in row]
    if failed:
        return fail(
            EXIT_UNAVAILABLE,
            "unavailable",
            f"{len(failed)} of {len(rows)} endpoints not defragmented: {', '.join(failed)}",
        )
    return EXIT_OK


def _health(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    endpoints, _ = every_endpoint(client)
    rows: list[Json] = []
    for endpoint in endpoints:
        started = time.monotonic()
        error = ""
        try:
            healthy = client.health(endpoint)
            if not healthy:
                error = "answered /health, not ok"
        except ClientError as failure:
            healthy, error = False, f"{failure.code}: {failure.message}"
        took_ms = round((time.monotonic() - started) * 1000, 1)
        row: Json = {"endpoint": endpoint, "health": healthy, "took_ms": took_ms}
        if error:
            row["error"] = error
        rows.append(row)
    if output.as_json:
        print_json(rows)
    else:
        table = new_table("endpoint", "health", "took", "error")
        for row in rows:
            state = "healthy" if row["health"] else "unhealthy"
            add_row(table, row["endpoint"], state, f"{row['took_ms']} ms", row.get("error", ""))
        print_table(table)
    unhealthy = [row["endpoint"] for row in rows if not row["health"]]
    if unhealthy:
        return fail(
            EXIT_UNAVAILABLE,
            "unhealthy",
            f"{len(unhealthy)} of {len(rows)} endpoints unhealthy: {', '.join(unhealthy)}; "
            f"{endpoints_hint(arguments)}",
        )
    return EXIT_OK


def _hashkv(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    endpoints, _ = every_endpoint(client)
    rows: list[Status | ClientError] = []
    for endpoint in endpoints:
        try:
            rows.append(client.status(endpoint, hash=True))
        except ClientError as error:
            rows.append(error)
    if output.as_json:
        print_json(
            [_hash_json(endpoint, row) for endpoint, row in zip(endpoints, rows, strict=True)]
        )
    else:
        table = new_table("endpoint", "id", "applied", "revision", "compacted", "hash", "data_hash")
        for endpoint, row in zip(endpoints, rows, strict=True):
            if isinstance(row, ClientError):
                add_row(table, endpoint, "-", "-", "-", "-", f"error: {row.code}", "-")
                continue
            add_row(
                table,
                endpoint,
                str(row.id),
                str(row.applied_index),
                str(row.revision),
                str(row.compacted_revision),
                row.hash,
                row.data_hash,
            )
        print_table(table)
    silent = [
        endpoint
        for endpoint, row in zip(endpoints, rows, strict=True)
        if isinstance(row, ClientError)
    ]
    if silent:
        return fail(
            EXIT_UNAVAILABLE,
            "unavailable",
            f"no hash from {', '.join(silent)}; {endpoints_hint(arguments)}",
        )
    return EXIT_OK


def _hash_json(endpoint: str, row: Status | ClientError) -> Json:
    if isinstance(row, ClientError):
        return {"endpoint": endpoint, "error": {"code": row.code, "message": row.message}}
    return {
        "endpoint": endpoint,
        "id": row.id,
        "applied_index": row.applied_index,
        "revision": row.revision,
        "compacted_revision": row.compacted_revision,
        "hash": row.hash,
        "data_hash": row.data_hash,
    }
