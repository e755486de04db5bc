"""Rendering a client verb's result: rich tables for people, or one JSON document on stdout
for scripts (`--output json`), keys and values as text or base64 (`--base64`).

Text that goes into a JSON document must be UTF-8 exactly (else the verb fails with
`not_utf8`: use --base64); text for people shows undecodable bytes and control characters
escaped. Table cells are plain text, never rich markup. rich is imported only when a table
is printed, so JSON output and the other verbs start fast.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, assert_never

from raftkv.cli.errors import UsageError
from raftkv.client import (
    Alarm,
    ClientError,
    Cluster,
    DeleteResult,
    KeyValue,
    PutResult,
    RangeResult,
    Status,
    TxnResult,
)

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["Json", "Output", "add_row", "new_table", "print_json", "print_table"]

# A JSON document, as json.dumps takes it.
Json = Any


@dataclass(frozen=True, slots=True)
class Output:
    """Renders results: one JSON document, or rich tables (rich is imported only here)."""

    # One JSON document instead of tables; keys and values in base64 instead of text.
    as_json: bool
    in_base64: bool

    # -- data

    def text(self, data: bytes, what: str) -> str:
        """Bytes for a JSON document: base64, or UTF-8 text (exactly, or refused)."""
        if self.in_base64:
            return base64.b64encode(data).decode("ascii")
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise UsageError(
                "not_utf8", f"a {what} is not UTF-8 text ({data[:32]!r}); use --base64"
            ) from None

    def shown(self, data: bytes) -> str:
        """Bytes for people: base64, or text with undecodable bytes and control characters
        escaped (b"\\xff\\n" shows as \\xff\\n)."""
        if self.in_base64:
            return base64.b64encode(data).decode("ascii")
        text = data.decode(errors="backslashreplace")
        return "".join(
            char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
            for char in text
        )

    def kv_json(self, kv: KeyValue) -> Json:
        return {
            "key": self.text(kv.key, "key"),
            "value": self.text(kv.value, "value"),
            "create_revision": kv.create_revision,
            "mod_revision": kv.mod_revision,
            "version": kv.version,
            "lease": kv.lease,
        }

    def put_json(self, result: PutResult) -> Json:
        prev_kv = None if result.prev_kv is None else self.kv_json(result.prev_kv)
        return {"revision": result.revision, "leader": result.leader, "prev_kv": prev_kv}

    def delete_json(self, result: DeleteResult) -> Json:
        return {
            "revision": result.revision,
            "leader": result.leader,
            "deleted": result.deleted,
            "prev_kvs": [self.kv_json(kv) for kv in result.prev_kvs],
        }

    def range_json(self, result: RangeResult) -> Json:
        return {
            "revision": result.revision,
            "leader": result.leader,
            "count": result.count,
            "more": result.more,
            "kvs": [self.kv_json(kv) for kv in result.kvs],
        }

    def response_json(self, response: PutResult | RangeResult | DeleteResult) -> Json:
        match response:
            case PutResult():
                return {"op": "put", **self.put_json(response)}
            case RangeResult():
                return {"op": "range", **self.range_json(response)}
            case DeleteResult():
                return {"op": "delete", **self.delete_json(response)}
            case _:
                assert_never(response)

    # -- verbs

    def put(self, result: PutResult) -> None:
        if self.as_json:
            return print_json(self.put_json(result))
        table = new_table("revision", "leader")
        add_row(table, str(result.revision), str(result.leader))
        print_table(table)

    def get(self, kv: KeyValue) -> None:
        if self.as_json:
            return print_json(self.kv_json(kv))
        print_table(self.kv_table([kv]))

    def delete(self, result: DeleteResult) -> None:
        if self.as_json:
            return print_json(self.delete_json(result))
        table = new_table("deleted", "revision")
        add_row(table, str(result.deleted), str(result.revision))
        print_table(table)
        if result.prev_kvs:
            print_table(self.kv_table(result.prev_kvs, title="deleted values"))

    def range(self, result: RangeResult, *, count_only: bool) -> None:
        if self.as_json:
            return print_json(self.range_json(result))
        if count_only:
            table = new_table("count", "revision")
            add_row(table, str(result.count), str(result.revision))
            return print_table(table)
        more = f", {result.count - len(result.kvs)} more" if result.more else ""
        caption = f"{len(result.kvs)} of {result.count} keys{more}, at revision {result.revision}"
        print_table(self.kv_table(result.kvs, caption=caption))

    def txn(self, result: TxnResult) -> None:
        if self.as_json:
            return print_json(
                {
                    "revision": result.revision,
                    "leader": result.leader,
                    "succeeded": result.succeeded,
                    "responses": [self.response_json(item) for item in result.responses],
                }
            )
        branch = "success" if result.succeeded else "failure"
        table = new_table("op", "result")
        for response in result.responses:
            match response:
                case PutResult():
                    add_row(table, "put", f"revision {response.revision}")
                case DeleteResult():
                    add_row(table, "delete", f"{response.deleted} deleted")
                case RangeResult():
                    pairs = ", ".join(
                        f"{self.shown(kv.key)}={self.shown(kv.value)}" for kv in response.kvs
                    )
                    found = f"{response.count} keys" + (f": {pairs}" if pairs else "")
                    add_row(table, "range", found)
                case _:
                    assert_never(response)
        held = "held" if result.succeeded else "did not hold"
        print_table(table, f"compares {held}: the {branch} branch ran (revision {result.revision})")

    def status(
        self,
        endpoints: Sequence[str],
        rows: Sequence[Status | ClientError],
        cluster: Cluster | None = None,
    ) -> None:
        """A row per endpoint; with the leader's view of the cluster, each member's lag and
        how long ago the leader heard from it."""
        members = {} if cluster is None else {member.id: member for member in cluster.members}
        if self.as_json:
            documents = []
            for endpoint, row in zip(endpoints, rows, strict=True):
                document = _status_json(endpoint, row)
                member = None if isinstance(row, ClientError) else members.get(row.id)
                if member is not None:
                    document["lag"] = member.lag
                    document["last_contact_s"] = member.last_contact_s
                documents.append(document)
            return print_json(documents)
        alarms = _alarms(rows)
        table = new_table(
            "endpoint", "id", "role", "leader", "term", "commit", "applied", "revision",
            "compacted", "lag", "last contact", "alarm",
        )  # fmt: skip
        for endpoint, row in zip(endpoints, rows, strict=True):
            if isinstance(row, ClientError):
                add_row(table, endpoint, "-", f"error: {row.code}", *["-"] * 9)
                continue
            member = members.get(row.id)
            lag = None if member is None else member.lag
            contact = None if member is None else member.last_contact_s
            add_row(
                table,
                endpoint,
                str(row.id),
                "removed" if row.removed else row.role,
                "-" if row.removed else str(row.leader),
                str(row.term),
                str(row.commit_index),
                str(row.applied_index),
                str(row.revision),
                str(row.compacted_revision),
                _or_dash(lag),
                _ago(contact),
                ", ".join(alarm.alarm for alarm in alarms.get(row.id, [])),
            )
        print_table(table)
        for member_alarms in alarms.values():
            for alarm in member_alarms:
                print(describe_alarm(alarm))
        warned: dict[str, None] = {}
        for row in rows:
            if not isinstance(row, ClientError):
                warned |= dict.fromkeys(
                    f"WARNING: member {row.id}: {line}" for line in row.warnings
                )
        for line in warned:
            print(line)

    def alarms(self, alarms: Sequence[Alarm]) -> None:
        """The cluster's alarms: a table and one line each on what to do (or JSON)."""
        if self.as_json:
            return print_json([alarm_json(alarm) for alarm in alarms])
        if not alarms:
            print("no alarm")
            return None
        table = new_table("member", "alarm", "reason", "index")
        for alarm in alarms:
            add_row(table, str(alarm.member), alarm.alarm, alarm.reason, str(alarm.check_index))
        print_table(table)
        for alarm in alarms:
            print(describe_alarm(alarm))
        return None

    def members(self, cluster: Cluster) -> None:
        if self.as_json:
            return print_json(
                {
                    "endpoint": cluster.endpoint,
                    "id": cluster.id,
                    "leader": cluster.leader,
                    "term": cluster.term,
                    "commit_index": cluster.commit_index,
                    "members": [
                        {
                            "id": member.id,
                            "role": member.role,
                            "client_url": member.client_url,
                            "etcd_url": member.etcd_url,
                            "peer_url": member.peer_url,
                            "match_index": member.match_index,
                            "lag": member.lag,
                            "active": member.active,
                            "last_contact_s": member.last_contact_s,
                        }
                        for member in cluster.members
                    ],
                }
            )
        # etcd's gRPC URLs only when a member serves etcd's API (the table is wide).
        etcd = any(member.etcd_url for member in cluster.members)
        columns = ("id", "role", "client_url", *(("etcd_url",) if etcd else ()), "peer_url")
        table = new_table(*columns, "match_index", "lag", "active", "last contact")
        for member in cluster.members:
            add_row(
                table,
                str(member.id),
                member.role,
                member.client_url,
                *((member.etcd_url,) if etcd else ()),
                member.peer_url,
                _or_dash(member.match_index),
                _or_dash(member.lag),
                _or_dash(None if member.active is None else ("yes" if member.active else "no")),
                _ago(member.last_contact_s),
            )
        table.caption = f"term {cluster.term}, as member {cluster.id} at {cluster.endpoint} sees it"
        print_table(table)

    def kv_table(
        self, kvs: Sequence[KeyValue], *, title: str | None = None, caption: str | None = None
    ) -> Table:
        table = new_table(
            "key", "value", "create_revision", "mod_revision", "version", "lease", title=title
        )
        for kv in kvs:
            add_row(
                table,
                self.shown(kv.key),
                self.shown(kv.value),
                str(kv.create_revision),
                str(kv.mod_revision),
                str(kv.version),
                str(kv.lease),
            )
        table.caption = caption
        return table


def _alarms(rows: Sequence[Status | ClientError]) -> dict[int, list[Alarm]]:
    """The alarms any answering member listed, by the member they name (one per kind)."""
    found: dict[tuple[int, str], Alarm] = {}
    for row in rows:
        if not isinstance(row, ClientError):
            for alarm in row.alarms:
                found.setdefault((alarm.member, alarm.alarm), alarm)
    by_member: dict[int, list[Alarm]] = {}
    for (member, _), alarm in sorted(found.items()):
        by_member.setdefault(member, []).append(alarm)
    return by_member


def describe_alarm(alarm: Alarm) -> str:
    """One line: what the alarm means and what to do."""
    if alarm.alarm == "NOSPACE":
        finding = (
            "its storage passed its quota (quota_backend_bytes)"
            if alarm.reason == "quota"
            else "its disk's free space fell under min_free_disk_bytes"
        )
        return (
            f"ALARM NOSPACE: member {alarm.member}: {finding}; the cluster refuses writes "
            "that add data. Free space (delete keys, compact), then run raftkv alarm disarm."
        )
    if alarm.alarm != "CORRUPT":
        return f"ALARM {alarm.alarm}: member {alarm.member}"
    why = (
        "its state differs from the one a majority of members hold"
        if alarm.reason == "minority"
        else "the members' states differ and no state is held by a majority"
    )
    return (
        f"ALARM CORRUPT: member {alarm.member}: the hash check at log index "
        f"{alarm.check_index} found that {why}; it refuses client requests. Remove it "
        f"(raftkv member remove {alarm.member}) and join it again with a new id and an "
        "empty data dir."
    )


def alarm_json(alarm: Alarm) -> Json:
    return {
        "alarm": alarm.alarm,
        "member": alarm.member,
        "check_index": alarm.check_index,
        "reason": alarm.reason,
    }


def _status_json(endpoint: str, row: Status | ClientError) -> Json:
    if isinstance(row, ClientError):
        return {"endpoint": endpoint, "error": {"code": row.code, "message": row.message}}
    return {
        "endpoint": endpoint,
        "id": row.id,
        "role": row.role,
        "removed": row.removed,
        "leader": row.leader,
        "term": row.term,
        "commit_index": row.commit_index,
        "applied_index": row.applied_index,
        "revision": row.revision,
        "compacted_revision": row.compacted_revision,
        "alarms": [alarm_json(alarm) for alarm in row.alarms],
        "warnings": list(row.warnings),
    }


def print_json(document: Json) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")


def new_table(*columns: str, title: str | None = None) -> Table:
    from rich.table import Table  # noqa: PLC0415 - client verbs load rich only to print a table

    table = Table(title=title, title_justify="left")
    for column in columns:
        # Long cells fold rather than being cut short.
        table.add_column(column, overflow="fold")
    return table


def add_row(table: Table, *cells: str) -> None:
    """A row of plain text: never read as markup (a key may well contain "[bold]")."""
    from rich.text import Text  # noqa: PLC0415

    table.add_row(*(Text(cell) for cell in cells))


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s ago"


def print_table(table: Table, preamble: str | None = None) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    # Not a terminal (a pipe, a file): rich would wrap at 80 columns; tables read better whole.
    width = None if sys.stdout.isatty() else 200
    console = Console(file=sys.stdout, highlight=False, width=width)
    if preamble is not None:
        console.print(Text(preamble))
    console.print(table)
