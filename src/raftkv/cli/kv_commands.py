"""Client verbs of the `raftkv` command: put, get, del, range, txn, status, members.

Every verb talks to the cluster through `raftkv.client.SyncClient` (retries, leader
routing, exactly-once writes) and takes:
  --endpoints URL,URL   the members to try (default: $RAFTKV_ENDPOINTS, else
                        http://127.0.0.1:8080)
  --output table|json   table (default): rich tables for people; json: one JSON document
                        on stdout, for scripts
  --base64              keys and values in base64 in the output (binary data in JSON)
  --timeout SECONDS     give up on the call after this long (default 10)

Keys and values given on the command line are taken as the shell passed them (UTF-8 text,
or the raw bytes of a non-UTF-8 argument); `put KEY -` reads the value's bytes from stdin.

Errors go to stderr as one line, `raftkv: <code>: <message>`, with the exit code of
`raftkv.cli`: 1 a get of a missing key, 2 a usage error (bad flags, unreadable txn file,
output that cannot show the data), 3 a refusal by the server (4xx), 4 unavailable (no
endpoint answered, a 503/504 after every retry, an unknown outcome, a server error).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from raftkv.api.kv import CompareBody, DeleteOpBody, OpBody, PutOpBody, RangeOpBody, TxnBody
from raftkv.cli import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from raftkv.client import (
    Alarm,
    ClientError,
    ClientSettings,
    Cluster,
    DeleteResult,
    KeyValue,
    PutResult,
    RangeResult,
    Refused,
    Status,
    SyncClient,
    TxnResult,
    txn,
)

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["DEFAULT_ENDPOINT", "ENDPOINTS_VARIABLE", "add_commands"]

ENDPOINTS_VARIABLE = "RAFTKV_ENDPOINTS"
DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0

Json = Any
Verb = Callable[[SyncClient, argparse.Namespace, "Output"], int]


class UsageError(Exception):
    """A mistake in the command line or its input, found before or after the call."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- parsers ---------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return seconds


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"not an integer >= 0: {text!r}")
    return int(text)


def common_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--endpoints",
        default=None,
        metavar="URL,URL",
        help=f"members to try (default ${ENDPOINTS_VARIABLE}, else {DEFAULT_ENDPOINT})",
    )
    group.add_argument(
        "--output",
        choices=["table", "json"],
        default="table",
        help="table for people (default), json (one document on stdout) for scripts",
    )
    group.add_argument(
        "--base64", action="store_true", help="show keys and values in base64 (binary data)"
    )
    group.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on the call after this long, retries included ({DEFAULT_TIMEOUT_S:g})",
    )
    return common


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = [common_flags()]

    def verb(name: str, help_text: str, handler: Verb) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=common)
        parser.set_defaults(handler=_run(handler))
        return parser

    put = verb("put", "set a key's value", _put)
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help='the value; "-" reads it from stdin')
    put.add_argument(
        "--lease", type=_positive, default=0, help="attach the key to this lease (its id)"
    )

    get = verb("get", "read a key (exit 1 if it does not exist)", _get)
    get.add_argument("key", metavar="KEY")
    get.add_argument("--revision", type=_non_negative, default=0, help="read at this revision")
    get.add_argument("--serializable", action="store_true", help="local read, maybe stale")

    delete = verb("del", "delete a key, or every key with a prefix", _delete)
    delete.add_argument("key", metavar="KEY")
    delete.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    delete.add_argument("--prev-kv", action="store_true", help="show the deleted values")

    ranged = verb("range", "list keys in [KEY, RANGE_END), with a prefix, or all", _range)
    ranged.add_argument("key", metavar="KEY", nargs="?", default=None, help="(default: all)")
    ranged.add_argument("range_end", metavar="RANGE_END", nargs="?", default=None)
    ranged.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    ranged.add_argument("--limit", type=_non_negative, default=0, help="at most this many keys")
    ranged.add_argument("--revision", type=_non_negative, default=0, help="read at this revision")
    ranged.add_argument("--keys-only", action="store_true", help="without values")
    ranged.add_argument("--count-only", action="store_true", help="only the number of keys")
    ranged.add_argument("--serializable", action="store_true", help="local read, maybe stale")

    transaction = verb("txn", "run a transaction from a JSON file (the /v1/txn body)", _txn)
    transaction.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default="-",
        help='{"compares": [...], "success": [...], "failure": [...]}, keys as UTF-8 text; '
        '"-" or none: stdin',
    )

    status = verb("status", "every member's status, one row each", _status)
    status.add_argument(
        "--wait",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="then show catch-up progress until every member has caught up (exit 4 if not)",
    )
    verb("members", "the cluster's members (as the leader sees them)", _members)

    member = subparsers.add_parser(
        "member", help="change the membership", description="Change the membership."
    )
    member_verbs = member.add_subparsers(dest="member_command", metavar="VERB", required=True)

    def member_verb(name: str, help_text: str, handler: Verb) -> argparse.ArgumentParser:
        parser = member_verbs.add_parser(
            name, help=help_text, description=help_text, parents=common
        )
        parser.set_defaults(handler=_run(handler))
        parser.add_argument("id", metavar="ID", type=_positive, help="the member's node id")
        return parser

    add = member_verb("add", "add a learner (it votes once promoted)", _member_add)
    add.add_argument("peer_url", metavar="PEER_URL", help="host:port its peers reach it at")
    member_verb("promote", "promote a caught-up learner to voter (exit 3 if it lags)", _promote)
    member_verb("remove", "remove a member (the leader hands over first)", _remove)

    transfer = verb("transfer-leader", "hand leadership to another voter", _transfer)
    transfer.add_argument(
        "id", metavar="ID", nargs="?", type=_non_negative, default=0,
        help="the new leader (default: the most caught-up voter)",
    )  # fmt: skip


# -- running a verb --------------------------------------------------------------------------


def _run(verb: Verb) -> Callable[[argparse.Namespace], int]:
    def handler(arguments: argparse.Namespace) -> int:
        output = Output(as_json=arguments.output == "json", in_base64=arguments.base64)
        try:
            client = SyncClient(_endpoints(arguments), _settings(arguments))
        except ValueError as error:
            return _fail(EXIT_USAGE, "usage", str(error))
        with client:
            try:
                return verb(client, arguments, output)
            except UsageError as error:
                return _fail(EXIT_USAGE, error.code, error.message)
            except Refused as error:
                return _fail(EXIT_REFUSED, error.code, error.message)
            except ClientError as error:
                return _fail(EXIT_UNAVAILABLE, error.code, error.message)

    return handler


def _endpoints(arguments: argparse.Namespace) -> str:
    given: str | None = arguments.endpoints
    return given or os.environ.get(ENDPOINTS_VARIABLE) or DEFAULT_ENDPOINT


def _settings(arguments: argparse.Namespace) -> ClientSettings:
    timeout: float = arguments.timeout
    return ClientSettings(request_timeout_s=timeout, deadline_s=timeout)


def _fail(code: int, error_code: str, message: str) -> int:
    print(f"raftkv: {error_code}: {' '.join(message.split())}", file=sys.stderr)
    return code


def _argument_bytes(text: str) -> bytes:
    """An argument's bytes as the shell passed them (os.fsencode undoes the surrogate
    escapes Python uses for bytes that are not UTF-8)."""
    return os.fsencode(text)


# -- verbs -----------------------------------------------------------------------------------


def _put(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = _argument_bytes(arguments.key)
    value = sys.stdin.buffer.read() if arguments.value == "-" else _argument_bytes(arguments.value)
    result = client.put(key, value, lease=arguments.lease)
    output.put(result)
    return EXIT_OK


def _get(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = _argument_bytes(arguments.key)
    kv = client.get(key, revision=arguments.revision, serializable=arguments.serializable)
    if kv is None:
        return _fail(EXIT_NOT_FOUND, "not_found", f"key {output.shown(key)} not found")
    output.get(kv)
    return EXIT_OK


def _delete(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = _argument_bytes(arguments.key)
    result = client.delete(key, prefix=arguments.prefix, prev_kv=arguments.prev_kv)
    output.delete(result)
    return EXIT_OK


def _range(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = b"" if arguments.key is None else _argument_bytes(arguments.key)
    range_end = b"" if arguments.range_end is None else _argument_bytes(arguments.range_end)
    # No key at all: every key (the API reads an empty key alone as an error).
    prefix = arguments.prefix or (arguments.key is None and arguments.range_end is None)
    result = client.range(
        key,
        range_end,
        prefix=prefix,
        limit=arguments.limit,
        revision=arguments.revision,
        keys_only=arguments.keys_only,
        count_only=arguments.count_only,
        serializable=arguments.serializable,
    )
    output.range(result, count_only=arguments.count_only)
    return EXIT_OK


def _txn(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    compares, success, failure = _read_txn(arguments.file)
    result = client.txn(compares, success, failure)
    output.txn(result)
    return EXIT_OK


def _status(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    """Every endpoint given, and every member the cluster lists (one endpoint is enough to
    see the whole cluster)."""
    from raftkv.cli import catch_up  # noqa: PLC0415

    endpoints = list(client.endpoints)
    cluster: Cluster | None = None
    with contextlib.suppress(ClientError):
        cluster = client.cluster()
        for member in cluster.members:
            url = member.client_url.rstrip("/")
            if url and url not in endpoints:
                endpoints.append(url)
    rows: list[Status | ClientError] = []
    for endpoint in endpoints:
        try:
            rows.append(client.status(endpoint))
        except ClientError as error:
            rows.append(error)
    output.status(endpoints, rows, cluster)
    if all(isinstance(row, ClientError) for row in rows):
        return _fail(EXIT_UNAVAILABLE, "unavailable", "no endpoint answered")
    if arguments.wait is not None:
        if not catch_up.wait_caught_up(client, arguments.wait):
            return _fail(EXIT_UNAVAILABLE, "lagging", f"not caught up after {arguments.wait:g}s")
    elif cluster is not None and not output.as_json:
        behind = catch_up.lagging(cluster)
        if behind:
            _print_table(catch_up.render(behind))
    return EXIT_OK


def _members(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(client.cluster())
    return EXIT_OK


def _member_add(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(client.add_member(arguments.id, arguments.peer_url))
    return EXIT_OK


def _promote(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(client.promote_member(arguments.id))
    return EXIT_OK


def _remove(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(client.remove_member(arguments.id))
    return EXIT_OK


def _transfer(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    leader = client.transfer_leadership(arguments.id)
    if output.as_json:
        _print_json({"leader": leader})
    else:
        print(f"leader is now member {leader}")
    return EXIT_OK


# -- the txn file ----------------------------------------------------------------------------

_TXN_DECODER = msgspec.json.Decoder(TxnBody)


def _read_txn(path: str) -> tuple[list[txn.Compare], list[txn.Op], list[txn.Op]]:
    """The txn of a /v1/txn body (keys and values as UTF-8 text) in `path` or stdin."""
    where = "stdin" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        body = _TXN_DECODER.decode(data)
    except OSError as error:
        raise UsageError("usage", f"cannot read the txn file {where}: {error}") from error
    except msgspec.DecodeError as error:
        raise UsageError("invalid_json", f"the txn in {where}: {error}") from error
    if body.client_id or body.sequence:
        raise UsageError(
            "usage", f"the txn in {where} sets client_id/sequence; the client numbers writes"
        )
    try:
        compares = [_compare(compare) for compare in body.compares]
        return compares, [_op(op) for op in body.success], [_op(op) for op in body.failure]
    except (TypeError, ValueError) as error:
        raise UsageError("invalid_request", f"the txn in {where}: {error}") from error


def _compare(compare: CompareBody) -> txn.Compare:
    key, op, operand = compare.key, compare.op, compare.value
    match compare.target:
        case "value":
            if not isinstance(operand, str):
                raise TypeError(f"a value compare takes a string, got {operand!r}")
            return txn.value(key, op, operand)
        case "version":
            return txn.version(key, op, _integer(operand))
        case "create":
            return txn.create_revision(key, op, _integer(operand))
        case "mod":
            return txn.mod_revision(key, op, _integer(operand))
        case "lease":
            return txn.lease(key, op, _integer(operand))
        case _:
            _never(compare.target)


def _integer(operand: str | int) -> int:
    if not isinstance(operand, int):
        raise TypeError(f"this compare takes an integer, got {operand!r}")
    return operand


def _op(op: OpBody) -> txn.Op:
    match op:
        case PutOpBody():
            return txn.put(op.key, op.value, lease=op.lease, prev_kv=op.prev_kv)
        case RangeOpBody():
            return txn.range(
                op.key,
                op.range_end,
                prefix=op.prefix,
                limit=op.limit,
                revision=op.revision,
                keys_only=op.keys_only,
                count_only=op.count_only,
            )
        case DeleteOpBody():
            return txn.delete(op.key, op.range_end, prefix=op.prefix, prev_kv=op.prev_kv)
        case _:
            _never(op)


def _never(value: NoReturn) -> NoReturn:
    raise AssertionError(f"unexpected {value!r}")


# -- output ----------------------------------------------------------------------------------


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
                _never(response)

    # -- verbs

    def put(self, result: PutResult) -> None:
        if self.as_json:
            return _print_json(self.put_json(result))
        table = _table("revision", "leader")
        _add_row(table, str(result.revision), str(result.leader))
        _print_table(table)

    def get(self, kv: KeyValue) -> None:
        if self.as_json:
            return _print_json(self.kv_json(kv))
        _print_table(self.kv_table([kv]))

    def delete(self, result: DeleteResult) -> None:
        if self.as_json:
            return _print_json(self.delete_json(result))
        table = _table("deleted", "revision")
        _add_row(table, str(result.deleted), str(result.revision))
        _print_table(table)
        if result.prev_kvs:
            _print_table(self.kv_table(result.prev_kvs, title="deleted values"))

    def range(self, result: RangeResult, *, count_only: bool) -> None:
        if self.as_json:
            return _print_json(self.range_json(result))
        if count_only:
            table = _table("count", "revision")
            _add_row(table, str(result.count), str(result.revision))
            return _print_table(table)
        more = f", {result.count - len(result.kvs)} more" if result.more else ""
        caption = f"{len(result.kvs)} of {result.count} keys{more}, at revision {result.revision}"
        _print_table(self.kv_table(result.kvs, caption=caption))

    def txn(self, result: TxnResult) -> None:
        if self.as_json:
            return _print_json(
                {
                    "revision": result.revision,
                    "leader": result.leader,
                    "succeeded": result.succeeded,
                    "responses": [self.response_json(item) for item in result.responses],
                }
            )
        branch = "success" if result.succeeded else "failure"
        table = _table("op", "result")
        for response in result.responses:
            match response:
                case PutResult():
                    _add_row(table, "put", f"revision {response.revision}")
                case DeleteResult():
                    _add_row(table, "delete", f"{response.deleted} deleted")
                case RangeResult():
                    pairs = ", ".join(
                        f"{self.shown(kv.key)}={self.shown(kv.value)}" for kv in response.kvs
                    )
                    found = f"{response.count} keys" + (f": {pairs}" if pairs else "")
                    _add_row(table, "range", found)
                case _:
                    _never(response)
        held = "held" if result.succeeded else "did not hold"
        _print_table(
            table, f"compares {held}: the {branch} branch ran (revision {result.revision})"
        )

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
            return _print_json(documents)
        alarms = _alarms(rows)
        table = _table(
            "endpoint", "id", "role", "leader", "term", "commit", "applied", "revision",
            "compacted", "lag", "last contact", "alarm",
        )  # fmt: skip
        for endpoint, row in zip(endpoints, rows, strict=True):
            if isinstance(row, ClientError):
                _add_row(table, endpoint, "-", f"error: {row.code}", *["-"] * 9)
                continue
            member = members.get(row.id)
            lag = None if member is None else member.lag
            contact = None if member is None else member.last_contact_s
            _add_row(
                table,
                endpoint,
                str(row.id),
                row.role,
                str(row.leader),
                str(row.term),
                str(row.commit_index),
                str(row.applied_index),
                str(row.revision),
                str(row.compacted_revision),
                _or_dash(lag),
                _ago(contact),
                alarms[row.id].alarm if row.id in alarms else "",
            )
        _print_table(table)
        for alarm in alarms.values():
            print(_describe_alarm(alarm))

    def members(self, cluster: Cluster) -> None:
        if self.as_json:
            return _print_json(
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
        table = _table(
            "id", "role", "client_url", "peer_url", "match_index", "lag", "active", "last contact"
        )
        for member in cluster.members:
            _add_row(
                table,
                str(member.id),
                member.role,
                member.client_url,
                member.peer_url,
                _or_dash(member.match_index),
                _or_dash(member.lag),
                _or_dash(None if member.active is None else ("yes" if member.active else "no")),
                _ago(member.last_contact_s),
            )
        table.caption = f"term {cluster.term}, as member {cluster.id} at {cluster.endpoint} sees it"
        _print_table(table)

    def kv_table(
        self, kvs: Sequence[KeyValue], *, title: str | None = None, caption: str | None = None
    ) -> Table:
        table = _table(
            "key", "value", "create_revision", "mod_revision", "version", "lease", title=title
        )
        for kv in kvs:
            _add_row(
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


def _alarms(rows: Sequence[Status | ClientError]) -> dict[int, Alarm]:
    """The alarms any answering member listed, by the member they name."""
    found: dict[int, Alarm] = {}
    for row in rows:
        if not isinstance(row, ClientError):
            for alarm in row.alarms:
                found.setdefault(alarm.member, alarm)
    return dict(sorted(found.items()))


def _describe_alarm(alarm: Alarm) -> str:
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


def _status_json(endpoint: str, row: Status | ClientError) -> Json:
    if isinstance(row, ClientError):
        return {"endpoint": endpoint, "error": {"code": row.code, "message": row.message}}
    return {
        "endpoint": endpoint,
        "id": row.id,
        "role": row.role,
        "leader": row.leader,
        "term": row.term,
        "commit_index": row.commit_index,
        "applied_index": row.applied_index,
        "revision": row.revision,
        "compacted_revision": row.compacted_revision,
        "alarms": [
            {
                "alarm": alarm.alarm,
                "member": alarm.member,
                "check_index": alarm.check_index,
                "reason": alarm.reason,
            }
            for alarm in row.alarms
        ],
    }


def _print_json(document: Json) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")


def _table(*columns: str, title: str | None = None) -> Table:
    from rich.table import Table  # noqa: PLC0415 - client verbs load rich only to print a table

    table = Table(title=title, title_justify="left")
    for column in columns:
        # Long cells fold rather than being cut short.
        table.add_column(column, overflow="fold")
    return table


def _add_row(table: Table, *cells: str) -> None:
    """A row of plain text: never read as markup (a key may well contain "[bold]")."""
    from rich.text import Text  # noqa: PLC0415

    table.add_row(*(Text(cell) for cell in cells))


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s ago"


def _print_table(table: Table, preamble: str | None = None) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    # Not a terminal (a pipe, a file): rich would wrap at 80 columns; tables read better whole.
    width = None if sys.stdout.isatty() else 200
    console = Console(file=sys.stdout, highlight=False, width=width)
    if preamble is not None:
        console.print(Text(preamble))
    console.print(table)
