"""Binary keys on the command line (`--base64-input`), `watch --revision`, and the
etcdctl-style maintenance verbs (`compact`, `endpoint health`, `endpoint hashkv`) against a
3-node in-process cluster."""

from __future__ import annotations

import argparse
import base64
import json

import pytest
from cli_helpers import Cli, in_cluster

from raftkv.cli import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    build_parser,
)
from raftkv.testing.http_cluster import closed_port_url

Capsys = pytest.CaptureFixture[str]
Patch = pytest.MonkeyPatch

BINARY_KEY = b"\x00bin\xff/k"
BINARY_VALUE = b"\xfe\x00v"


def watch_parser() -> argparse.ArgumentParser:
    subparsers = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    parser: argparse.ArgumentParser = subparsers.choices["watch"]
    return parser


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_key_verb_takes_a_binary_key_with_base64_input(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    async def test(cli: Cli) -> None:
        key, value = b64(BINARY_KEY), b64(BINARY_VALUE)
        put = await cli("put", key, value, "--base64-input", "--output", "json")
        assert (put.code, put.err) == (EXIT_OK, "")
        first = json.loads(put.out)["revision"]
        got = await cli("get", key, "--base64-input", "--base64", "--output", "json")
        assert (json.loads(got.out)["key"], json.loads(got.out)["value"]) == (key, value)
        prefix = b64(b"\x00bin")
        listed = await cli(
            "range", prefix, "--prefix", "--base64-input", "--base64", "--output", "json"
        )
        assert [kv["key"] for kv in json.loads(listed.out)["kvs"]] == [key]
        # A txn file's keys and values are base64 too, as /v1/txn?encoding=base64 reads them.
        body = {
            "compares": [{"target": "value", "key": key, "op": "=", "value": value}],
            "success": [{"op": "put", "key": key, "value": b64(b"\x01")}],
        }
        txn = await cli(
            "txn", "--base64-input", "--output", "json", stdin=json.dumps(body).encode()
        )
        assert txn.code == EXIT_OK and json.loads(txn.out)["succeeded"] is True
        watched = await cli(
            "watch", key, "--base64-input", "--base64", "--revision", str(first),
            "--count", "2", "--output", "json",
        )  # fmt: skip
        messages = [json.loads(line) for line in watched.out.splitlines()]
        values = [event["kv"]["value"] for message in messages for event in message["events"]]
        assert values == [value, b64(b"\x01")]
        deleted = await cli("del", key, "--base64-input", "--output", "json")
        assert json.loads(deleted.out)["deleted"] == 1
        missing = await cli("get", key, "--base64-input")
        assert missing.code == EXIT_NOT_FOUND
        # Without the flag the argument is the key as written: "blob" stays "blob".
        assert (await cli("put", "blob", "text")).code == EXIT_OK
        assert json.loads((await cli("get", "blob", "--output", "json")).out)["value"] == "text"

    in_cluster(capsys, monkeypatch, test)


def test_base64_input_that_is_not_base64_is_one_usage_line(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    async def test(cli: Cli) -> None:
        bad = await cli("get", "not base64!", "--base64-input")
        assert (bad.code, bad.out) == (EXIT_USAGE, "")
        assert bad.err == (
            "raftkv: usage: the key 'not base64!' is not base64 (--base64-input takes base64)\n"
        )
        body = {"compares": [], "success": [{"op": "put", "key": "%%%", "value": ""}]}
        txn = await cli("txn", "--base64-input", stdin=json.dumps(body).encode())
        assert txn.code == EXIT_USAGE and txn.err.startswith("raftkv: invalid_request:")
        assert len(txn.err.splitlines()) == 1

    in_cluster(capsys, monkeypatch, test)


def test_watch_takes_revision_like_get_and_keeps_rev(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        first = json.loads((await cli("put", "r/a", "1", "--output", "json")).out)["revision"]
        await cli("put", "r/a", "2")
        for flag in ("--revision", "--rev"):
            lines = await cli("watch", "r/a", flag, str(first), "--count", "2")
            assert lines.out.splitlines() == [
                f"put r/a 1 [revision {first}]",
                f"put r/a 2 [revision {first + 1}]",
            ]
        usage = watch_parser().format_help()
        assert "--revision" in usage and "--rev " not in usage  # the alias is hidden

    in_cluster(capsys, monkeypatch, test)


def test_compact_discards_older_revisions(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        first = json.loads((await cli("put", "c", "1", "--output", "json")).out)["revision"]
        second = json.loads((await cli("put", "c", "2", "--output", "json")).out)["revision"]
        compacted = await cli("compact", str(second), "--output", "json")
        assert compacted.code == EXIT_OK
        assert json.loads(compacted.out)["compacted"] == second
        table = await cli("compact", str(second))
        assert table.code == EXIT_REFUSED  # compacting twice is refused
        assert table.err.startswith("raftkv: compacted:")
        old = await cli("get", "c", "--revision", str(first))
        assert old.code == EXIT_REFUSED and old.err.startswith("raftkv: compacted:")
        assert (await cli("get", "c", "--revision", str(second))).code == EXIT_OK

    in_cluster(capsys, monkeypatch, test)


def test_endpoint_health_asks_every_member_and_names_the_unhealthy(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    async def test(cli: Cli) -> None:
        healthy = await cli("endpoint", "health", "--output", "json")
        assert (healthy.code, healthy.err) == (EXIT_OK, "")
        rows = json.loads(healthy.out)
        assert sorted(row["endpoint"] for row in rows) == sorted(cli.api.endpoints())
        assert all(row["health"] for row in rows)
        table = await cli("endpoint", "health")
        assert table.code == EXIT_OK and table.out.count("healthy") == 3
        dead = closed_port_url()
        endpoints = ",".join([*cli.api.endpoints(), dead])
        one_down = await cli("endpoint", "health", "--endpoints", endpoints, "--timeout", "2")
        assert one_down.code == EXIT_UNAVAILABLE
        assert one_down.err.startswith(f"raftkv: unhealthy: 1 of 4 endpoints unhealthy: {dead};")

    in_cluster(capsys, monkeypatch, test)


def test_endpoint_hashkv_shows_each_members_state_hash(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        await cli("put", "h", "1")
        hashed = await cli("endpoint", "hashkv", "--output", "json")
        assert (hashed.code, hashed.err) == (EXIT_OK, "")
        rows = json.loads(hashed.out)
        assert sorted(row["id"] for row in rows) == [1, 2, 3]
        by_index: dict[int, set[str]] = {}
        for row in rows:
            assert len(row["hash"]) == len(row["data_hash"]) == 64
            by_index.setdefault(row["applied_index"], set()).add(row["hash"] + row["data_hash"])
        assert all(len(hashes) == 1 for hashes in by_index.values())  # same log, same hash
        table = await cli("endpoint", "hashkv")
        assert table.code == EXIT_OK and rows[0]["hash"][:16] in table.out
        assert rows[0]["data_hash"][:16] in table.out
        dead = closed_port_url()
        endpoints = ",".join([*cli.api.endpoints(), dead])
        partial = await cli("endpoint", "hashkv", "--endpoints", endpoints, "--timeout", "2")
        assert partial.code == EXIT_UNAVAILABLE
        assert partial.err.startswith(f"raftkv: unavailable: no hash from {dead};")

    in_cluster(capsys, monkeypatch, test)
