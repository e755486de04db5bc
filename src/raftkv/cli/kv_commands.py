"""Client verbs of the `raftkv` command: put, get, del, range, txn, status, members.

Every verb talks to the cluster through `raftkv.client.SyncClient` (retries, leader
routing, exactly-once writes) and takes the common flags of `raftkv.cli.arguments`
(--endpoints, --output, --base64, --timeout); `raftkv.cli.output` renders the results and
`raftkv.cli.running` runs the verb.

Keys and values given on the command line are taken as the shell passed them (UTF-8 text,
or the raw bytes of a non-UTF-8 argument), or decoded from base64 with --base64-input (the
keys and values of a txn file too); `put KEY -` reads the value's raw bytes from stdin.

Errors go to stderr as one line, `raftkv: <code>: <message>`, with the exit code of
`raftkv.cli`: 1 a get of a missing key, 2 a usage error (bad flags, unreadable txn file,
output that cannot show the data), 3 a refusal by the server (4xx), 4 unavailable (no
endpoint answered, a 503/504 after every retry, an unknown outcome, a server error).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Callable
from pathlib import Path
from typing import assert_never

import msgspec

from raftkv.api.kv import CompareBody, DeleteOpBody, OpBody, PutOpBody, RangeOpBody, TxnBody
from raftkv.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE
from raftkv.cli.arguments import (
    common_flags,
    endpoints_hint,
    input_bytes,
    key_input_flags,
    non_negative,
    positive,
    positive_seconds,
)
from raftkv.cli.errors import UsageError, fail
from raftkv.cli.maintenance_commands import every_endpoint
from raftkv.cli.output import Output, print_json, print_table
from raftkv.cli.running import Verb, run_verb
from raftkv.client import ClientError, Cluster, Status, SyncClient, txn

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = [common_flags()]
    with_keys = [*common, key_input_flags()]

    def verb(
        name: str, help_text: str, handler: Verb, *, keys: bool = False
    ) -> argparse.ArgumentParser:
        parents = with_keys if keys else common
        parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=parents)
        parser.set_defaults(handler=run_verb(handler))
        return parser

    put = verb("put", "set a key's value", _put, keys=True)
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help='the value; "-" reads it from stdin')
    put.add_argument(
        "--lease", type=positive, default=0, help="attach the key to this lease (its id)"
    )

    get = verb("get", "read a key (exit 1 if it does not exist)", _get, keys=True)
    get.add_argument("key", metavar="KEY")
    get.add_argument("--revision", type=non_negative, default=0, help="read at this revision")
    get.add_argument("--serializable", action="store_true", help="local read, maybe stale")

    delete = verb("del", "delete a key, or every key with a prefix", _delete, keys=True)
    delete.add_argument("key", metavar="KEY")
    delete.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    delete.add_argument("--prev-kv", action="store_true", help="show the deleted values")

    ranged = verb(
        "range", "list keys in [KEY, RANGE_END), with a prefix, or all", _range, keys=True
    )
    ranged.add_argument("key", metavar="KEY", nargs="?", default=None, help="(default: all)")
    ranged.add_argument("range_end", metavar="RANGE_END", nargs="?", default=None)
    ranged.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    ranged.add_argument("--limit", type=non_negative, default=0, help="at most this many keys")
    ranged.add_argument("--revision", type=non_negative, default=0, help="read at this revision")
    ranged.add_argument("--keys-only", action="store_true", help="without values")
    ranged.add_argument("--count-only", action="store_true", help="only the number of keys")
    ranged.add_argument("--serializable", action="store_true", help="local read, maybe stale")

    transaction = verb(
        "txn", "run a transaction from a JSON file (the /v1/txn body)", _txn, keys=True
    )
    transaction.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default="-",
        help='{"compares": [...], "success": [...], "failure": [...]}, keys as UTF-8 text '
        '(base64 with --base64-input); "-" or none: stdin',
    )

    status = verb("status", "every member's status, one row each", _status)
    status.add_argument(
        "--wait",
        type=positive_seconds,
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
        parser.set_defaults(handler=run_verb(handler))
        parser.add_argument("id", metavar="ID", type=positive, help="the member's node id")
        return parser

    add = member_verb("add", "add a learner (it votes once promoted)", _member_add)
    add.add_argument("peer_url", metavar="PEER_URL", help="host:port its peers reach it at")
    member_verb("promote", "promote a caught-up learner to voter (exit 3 if it lags)", _promote)
    member_verb("remove", "remove a member (the leader hands over first)", _remove)
    update = member_verb(
        "update", "change a member's peer address (then start it listening there)", _update
    )
    update.add_argument("peer_url", metavar="PEER_URL", help="host:port its peers reach it at")

    transfer = verb("transfer-leader", "hand leadership to another voter", _transfer)
    transfer.add_argument(
        "id", metavar="ID", nargs="?", type=non_negative, default=0,
        help="the new leader (default: the most caught-up voter)",
    )  # fmt: skip


# -- verbs -----------------------------------------------------------------------------------


def _put(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = input_bytes(arguments, arguments.key, "key")
    if arguments.value == "-":
        value = sys.stdin.buffer.read()
    else:
        value = input_bytes(arguments, arguments.value, "value")
    result = client.put(key, value, lease=arguments.lease)
    output.put(result)
    return EXIT_OK


def _get(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = input_bytes(arguments, arguments.key, "key")
    kv = client.get(key, revision=arguments.revision, serializable=arguments.serializable)
    if kv is None:
        return fail(EXIT_NOT_FOUND, "not_found", f"key {output.shown(key)} not found")
    output.get(kv)
    return EXIT_OK


def _delete(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = input_bytes(arguments, arguments.key, "key")
    result = client.delete(key, prefix=arguments.prefix, prev_kv=arguments.prev_kv)
    output.delete(result)
    return EXIT_OK


def _range(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key = b"" if arguments.key is None else input_bytes(arguments, arguments.key, "key")
    range_end = (
        b"" if arguments.range_end is None else input_bytes(arguments, arguments.range_end, "end")
    )
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
    compares, success, failure = _read_txn(arguments.file, arguments.base64_input)
    result = client.txn(compares, success, failure)
    output.txn(result)
    return EXIT_OK


def _status(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    """Every endpoint given, and every member the cluster lists (one endpoint is enough to
    see the whole cluster)."""
    from raftkv.cli import catch_up  # noqa: PLC0415

    endpoints, cluster = every_endpoint(client)
    rows: list[Status | ClientError] = []
    for endpoint in endpoints:
        try:
            rows.append(client.status(endpoint))
        except ClientError as error:
            rows.append(error)
    output.status(endpoints, rows, cluster)
    if all(isinstance(row, ClientError) for row in rows):
        return fail(
            EXIT_UNAVAILABLE, "unavailable", f"no endpoint answered; {endpoints_hint(arguments)}"
        )
    if arguments.wait is not None:
        behind = catch_up.wait_caught_up(client, arguments.wait)
        if behind is not None:
            return fail(
                EXIT_UNAVAILABLE, "lagging", f"not caught up after {arguments.wait:g}s: {behind}"
            )
    elif cluster is not None and not output.as_json:
        lagging = catch_up.lagging(cluster)
        if lagging:
            print_table(catch_up.render(lagging), catch_up.progress_line(cluster, lagging))
    return EXIT_OK


def _members(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(client.cluster())
    return EXIT_OK


def _member_add(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(
        _as_the_leader_sees_it(client, client.add_member(arguments.id, arguments.peer_url))
    )
    return EXIT_OK


def _promote(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(_as_the_leader_sees_it(client, client.promote_member(arguments.id)))
    return EXIT_OK


def _remove(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    output.members(_as_the_leader_sees_it(client, client.remove_member(arguments.id)))
    return EXIT_OK


def _update(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    answer = client.update_member(arguments.id, arguments.peer_url)
    output.members(_as_the_leader_sees_it(client, answer))
    return EXIT_OK


def _as_the_leader_sees_it(client: SyncClient, answer: Cluster) -> Cluster:
    """The members after a change, as `raftkv members` shows them: a follower that
    forwarded the change answers with its own view (no match indexes, and "last contact"
    times of peers it has no reason to hear from), so the leader is asked; the answer
    itself if the leader gave it or cannot be asked (the change is made either way)."""
    if answer.id == answer.leader:
        return answer
    try:
        return client.cluster()
    except ClientError:
        return answer


def _transfer(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    leader = client.transfer_leadership(arguments.id)
    if output.as_json:
        print_json({"leader": leader})
    else:
        print(f"leader is now member {leader}")
    return EXIT_OK


# -- the txn file ----------------------------------------------------------------------------

_TXN_DECODER = msgspec.json.Decoder(TxnBody)


def _read_txn(path: str, in_base64: bool) -> tuple[list[txn.Compare], list[txn.Op], list[txn.Op]]:
    """The txn of a /v1/txn body in `path` or stdin: keys and values as UTF-8 text, or
    base64 (`in_base64`, as `/v1/txn?encoding=base64` reads them)."""
    data_of = _from_base64 if in_base64 else _as_text
    where = "stdin" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        body = _TXN_DECODER.decode(data)
    except OSError as error:
        raise UsageError("usage", f"cannot read the txn file {where}: {error}") from error
    except msgspec.DecodeError as error:
        raise UsageError("invalid_json", f"the txn in {where}: {error}") from error
    except UnicodeDecodeError as error:  # msgspec's, for a string that is not UTF-8
        raise UsageError(
            "invalid_json",
            f"the txn in {where}: a string holds bytes that are not UTF-8; write binary "
            "keys and values in base64 with --base64-input",
        ) from error
    if body.client_id or body.sequence:
        raise UsageError(
            "usage", f"the txn in {where} sets client_id/sequence; the client numbers writes"
        )
    try:
        compares = [_compare(compare, data_of) for compare in body.compares]
        success = [_op(op, data_of) for op in body.success]
        return compares, success, [_op(op, data_of) for op in body.failure]
    except (TypeError, ValueError) as error:
        raise UsageError("invalid_request", f"the txn in {where}: {error}") from error


def _as_text(text: str) -> str:
    return text


def _from_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError(f"not base64 (--base64-input): {text!r}") from None


def _compare(compare: CompareBody, data_of: Callable[[str], txn.Data]) -> txn.Compare:
    key, op, operand = data_of(compare.key), compare.op, compare.value
    range_end, prefix = data_of(compare.range_end), compare.prefix
    match compare.target:
        case "value":
            if not isinstance(operand, str):
                raise TypeError(f"a value compare takes a string, got {operand!r}")
            return txn.value(key, op, data_of(operand), range_end=range_end, prefix=prefix)
        case "version":
            return txn.version(key, op, _integer(operand), range_end=range_end, prefix=prefix)
        case "create":
            return txn.create_revision(
                key, op, _integer(operand), range_end=range_end, prefix=prefix
            )
        case "mod":
            return txn.mod_revision(key, op, _integer(operand), range_end=range_end, prefix=prefix)
        case "lease":
            return txn.lease(key, op, _integer(operand), range_end=range_end, prefix=prefix)
        case _:
            assert_never(compare.target)


def _integer(operand: str | int) -> int:
    if not isinstance(operand, int):
        raise TypeError(f"this compare takes an integer, got {operand!r}")
    return operand


def _op(op: OpBody, data_of: Callable[[str], txn.Data]) -> txn.Op:
    key = data_of(op.key)
    match op:
        case PutOpBody():
            return txn.put(key, data_of(op.value), lease=op.lease, prev_kv=op.prev_kv)
        case RangeOpBody():
            return txn.range(
                key,
                data_of(op.range_end),
                prefix=op.prefix,
                limit=op.limit,
                revision=op.revision,
                keys_only=op.keys_only,
                count_only=op.count_only,
            )
        case DeleteOpBody():
            return txn.delete(key, data_of(op.range_end), prefix=op.prefix, prev_kv=op.prev_kv)
        case _:
            assert_never(op)
