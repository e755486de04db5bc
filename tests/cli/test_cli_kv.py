"""The client verbs of `raftkv` (put, get, del, range, txn, status, members) against a
3-node in-process cluster: output in both formats, and the exit codes of raftkv.cli."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import Cli, in_cluster, run_cli

from raftkv.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from raftkv.testing.http_cluster import closed_port_url

Capsys = pytest.CaptureFixture[str]
Patch = pytest.MonkeyPatch


def test_put_then_get_as_a_table_and_as_json(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        put = await cli("put", "greeting", "hello world")
        assert (put.code, put.err) == (EXIT_OK, "")
        assert "revision" in put.out and "leader" in put.out
        table = await cli("get", "greeting")
        assert table.code == EXIT_OK
        assert "greeting" in table.out and "hello world" in table.out
        assert "mod_revision" in table.out
        got = await cli("get", "greeting", "--output", "json")
        assert json.loads(got.out) == {
            "key": "greeting",
            "value": "hello world",
            "create_revision": 2,
            "mod_revision": 2,
            "version": 1,
            "lease": 0,
        }
        again = await cli("put", "greeting", "hi", "--output", "json")
        assert json.loads(again.out) == {
            "revision": 3,
            "leader": cli.api.leader_id(),
            "prev_kv": None,
        }
        old = await cli("get", "greeting", "--revision", "2", "--serializable", "--output", "json")
        assert json.loads(old.out)["value"] == "hello world"

    in_cluster(capsys, monkeypatch, test)


def test_put_reads_stdin_and_binary_data_needs_base64_in_json(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    async def test(cli: Cli) -> None:
        assert (await cli("put", "blob", "-", stdin=b"\xff\x00[bold]x")).code == EXIT_OK
        refused = await cli("get", "blob", "--output", "json")
        assert (refused.code, refused.out) == (EXIT_USAGE, "")
        assert refused.err.startswith("raftkv: not_utf8: a value is not UTF-8 text")
        assert "--base64" in refused.err
        encoded = await cli("get", "blob", "--output", "json", "--base64")
        document = json.loads(encoded.out)
        assert (document["key"], document["value"]) == ("YmxvYg==", "/wBbYm9sZF14")
        table = await cli("get", "blob")  # escaped for people, and no markup interpreted
        assert table.code == EXIT_OK and "\\xff\\x00[bold]x" in table.out

    in_cluster(capsys, monkeypatch, test)


def test_get_of_a_missing_key_exits_1(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        for output in ("table", "json"):
            missing = await cli("get", "nothing", "--output", output)
            assert (missing.code, missing.out) == (EXIT_NOT_FOUND, "")
            assert missing.err == "raftkv: not_found: key nothing not found\n"

    in_cluster(capsys, monkeypatch, test)


def test_del_one_key_and_a_prefix_with_prev_kv(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        for key in ("dir/a", "dir/b", "keep"):
            await cli("put", key, key.upper())
        one = await cli("del", "keep")
        assert one.code == EXIT_OK and "deleted" in one.out
        many = await cli("del", "dir/", "--prefix", "--prev-kv", "--output", "json")
        document = json.loads(many.out)
        assert document["deleted"] == 2
        assert [kv["value"] for kv in document["prev_kvs"]] == ["DIR/A", "DIR/B"]
        table = await cli("del", "keep", "--prev-kv")
        assert table.code == EXIT_OK and "0" in table.out
        left = await cli("range", "--output", "json")
        assert json.loads(left.out)["count"] == 0

    in_cluster(capsys, monkeypatch, test)


def test_range_all_keys_a_prefix_an_interval_and_its_options(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    async def keys(cli: Cli, *argv: str) -> list[str]:
        ran = await cli("range", *argv, "--output", "json")
        assert ran.code == EXIT_OK, ran.err
        return [kv["key"] for kv in json.loads(ran.out)["kvs"]]

    async def test(cli: Cli) -> None:
        for key in ("app/a", "app/b", "app/c", "other"):
            await cli("put", key, "v")
        assert await keys(cli) == ["app/a", "app/b", "app/c", "other"]
        assert await keys(cli, "app/", "--prefix") == ["app/a", "app/b", "app/c"]
        assert await keys(cli, "app/b", "b") == ["app/b", "app/c"]
        assert await keys(cli, "other") == ["other"]
        assert await keys(cli, "app/", "--prefix", "--revision", "3") == ["app/a", "app/b"]
        page = await cli("range", "--limit", "2", "--keys-only", "--output", "json")
        document = json.loads(page.out)
        assert (document["count"], document["more"]) == (4, True)
        assert [kv["value"] for kv in document["kvs"]] == ["", ""]
        counted = await cli("range", "app/", "--prefix", "--count-only")
        assert counted.code == EXIT_OK and "count" in counted.out and "3" in counted.out
        table = await cli("range", "--limit", "2", "--serializable")
        assert "app/a" in table.out and "2 of 4 keys, 2 more" in table.out

    in_cluster(capsys, monkeypatch, test)


LOCK = {
    "compares": [{"key": "lock", "target": "version", "op": "=", "value": 0}],
    "success": [
        {"op": "put", "key": "lock", "value": "me"},
        {"op": "range", "key": "lock"},
    ],
    "failure": [{"op": "range", "key": "lock"}],
}


def test_txn_from_a_file_and_from_stdin(capsys: Capsys, monkeypatch: Patch, tmp_path: Path) -> None:
    path = tmp_path / "lock.json"
    path.write_text(json.dumps(LOCK))

    async def test(cli: Cli) -> None:
        won = await cli("txn", str(path), "--output", "json")
        assert won.code == EXIT_OK, won.err
        document = json.loads(won.out)
        assert document["succeeded"] is True
        put, read = document["responses"]
        assert put["op"] == "put" and read["op"] == "range"
        assert read["kvs"][0]["value"] == "me"
        lost = await cli("txn", stdin=json.dumps(LOCK).encode())
        assert lost.code == EXIT_OK
        assert "compares did not hold: the failure branch ran" in lost.out and "lock=me" in lost.out
        compare = {"key": "lock", "target": "value", "op": "=", "value": "me"}
        delete = {"op": "delete", "key": "lock", "prev_kv": True}
        body = json.dumps({"compares": [compare], "success": [delete]}).encode()
        deleted = await cli("txn", "-", "--output", "json", stdin=body)
        assert json.loads(deleted.out)["responses"][0]["deleted"] == 1

    in_cluster(capsys, monkeypatch, test)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"success": [{"op": "nope", "key": "k"}]}', "invalid_json"),
        (
            b'{"compares": [{"key": "k", "target": "value", "op": "=", "value": 1}]}',
            "invalid_request",
        ),
        (b'{"client_id": "mine", "sequence": 1}', "usage"),
        # Not UTF-8 inside a string: msgspec raises UnicodeDecodeError, not DecodeError.
        (b'{"success": [{"op": "put", "key": "a", "value": "\xff"}]}', "invalid_json"),
    ],
)
def test_a_bad_txn_file_is_a_usage_error(
    capsys: Capsys, monkeypatch: Patch, text: bytes, code: str
) -> None:
    ran = run_cli(capsys, monkeypatch, "txn", "--endpoints", closed_port_url(), stdin=text)
    assert (ran.code, ran.out) == (EXIT_USAGE, "")
    assert ran.err.startswith(f"raftkv: {code}: ") and ran.err.count("\n") == 1


def test_a_missing_txn_file_is_a_usage_error(
    capsys: Capsys, monkeypatch: Patch, tmp_path: Path
) -> None:
    ran = run_cli(capsys, monkeypatch, "txn", str(tmp_path / "absent.json"))
    assert ran.code == EXIT_USAGE and "cannot read the txn file" in ran.err


def test_status_has_a_row_per_endpoint_even_an_unreachable_one(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    async def test(cli: Cli) -> None:
        dead = closed_port_url()
        endpoints = ",".join([*cli.api.endpoints(), dead])
        ran = await cli("status", "--endpoints", endpoints, "--output", "json")
        assert ran.code == EXIT_OK, ran.err
        rows = json.loads(ran.out)
        assert [row["endpoint"] for row in rows] == [*cli.api.endpoints(), dead]
        assert [row.get("id") for row in rows] == [1, 2, 3, None]
        assert {row["leader"] for row in rows[:3]} == {cli.api.leader_id()}
        assert rows[3]["error"]["code"] == "unavailable"
        # The leader's view of each member: caught up, and heard from lately.
        assert all(row["lag"] == 0 for row in rows[:3])
        leader = cli.api.leader_id()
        for row in rows[:3]:
            contact = row["last_contact_s"]
            assert contact is None if row["id"] == leader else 0 <= contact < 5
        table = await cli("status", "--endpoints", endpoints)
        assert table.code == EXIT_OK
        assert "leader" in table.out and "follower" in table.out
        assert "last contact" in table.out and "s ago" in table.out
        assert "error: unavailable" in table.out and dead in table.out

    in_cluster(capsys, monkeypatch, test)


def test_members_as_json_and_as_a_table(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        ran = await cli("members", "--output", "json")
        assert ran.code == EXIT_OK, ran.err
        document = json.loads(ran.out)
        assert document["leader"] == cli.api.leader_id()
        members = document["members"]
        assert [member["client_url"] for member in members] == cli.api.endpoints()
        assert all(member["match_index"] is not None for member in members)
        # The leader heard from each follower within a heartbeat or so; not from itself.
        contacts = {member["id"]: member["last_contact_s"] for member in members}
        assert contacts[document["leader"]] is None
        assert all(0 <= seconds < 5 for node, seconds in contacts.items()
                   if node != document["leader"])  # fmt: skip
        table = await cli("members")
        assert all(url in table.out for url in cli.api.endpoints()), table.out
        assert "leader" in table.out and "voter" in table.out
        assert "last contact" in table.out and "s ago" in table.out

    in_cluster(capsys, monkeypatch, test)


def test_a_refused_request_exits_3_with_one_line(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        empty = await cli("put", "", "v")
        assert (empty.code, empty.out) == (EXIT_REFUSED, "")
        assert empty.err.startswith("raftkv: empty_key: put '': ")
        assert "HTTP 400 from http://127.0.0.1:" in empty.err and empty.err.count("\n") == 1
        future = await cli("get", "k", "--revision", "99")
        assert future.code == EXIT_REFUSED and future.err.startswith("raftkv: future_revision: ")

    in_cluster(capsys, monkeypatch, test)


def test_the_endpoints_flag_wins_over_the_environment(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        live = ",".join(cli.api.endpoints())
        monkeypatch.setenv("RAFTKV_ENDPOINTS", closed_port_url())
        ran = await cli("put", "k", "v", "--endpoints", live, "--timeout", "2")
        assert ran.code == EXIT_OK, ran.err

    in_cluster(capsys, monkeypatch, test)


def test_no_endpoint_reachable_exits_4(capsys: Capsys, monkeypatch: Patch) -> None:
    dead = closed_port_url()
    monkeypatch.setenv("RAFTKV_ENDPOINTS", dead)
    for argv in (["put", "k", "v"], ["get", "k"], ["members"]):
        ran = run_cli(capsys, monkeypatch, *argv, "--timeout", "0.3")
        assert (ran.code, ran.out) == (EXIT_UNAVAILABLE, ""), argv
        assert ran.err.startswith("raftkv: unavailable: ") and dead in ran.err
        assert ran.err.count("\n") == 1
        assert "the endpoints came from $RAFTKV_ENDPOINTS: name live members" in ran.err


def test_status_exits_4_when_no_endpoint_answers(capsys: Capsys, monkeypatch: Patch) -> None:
    dead = [closed_port_url(), closed_port_url()]
    ran = run_cli(capsys, monkeypatch, "status", "--endpoints", ",".join(dead), "--output", "json")
    assert ran.code == EXIT_UNAVAILABLE
    assert ran.err.startswith("raftkv: unavailable: no endpoint answered; the endpoints came ")
    assert "--endpoints URL,URL or RAFTKV_ENDPOINTS" in ran.err and ran.err.count("\n") == 1
    rows = json.loads(ran.out)  # still one row per endpoint, saying why
    assert [(row["endpoint"], row["error"]["code"]) for row in rows] == [
        (url, "unavailable") for url in dead
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["get"],
        ["get", "k", "--output", "xml"],
        ["get", "k", "--timeout", "0"],
        ["range", "--limit", "-1"],
        ["put", "k"],
        ["put", "k", "v", "--lease", "0"],
        ["lease", "grant", "0"],
        ["lease", "keepalive"],
        ["lease", "revoke", "-3"],
        ["watch", "--rev", "x"],
    ],
)
def test_bad_flags_exit_2(capsys: Capsys, monkeypatch: Patch, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        run_cli(capsys, monkeypatch, *argv)
    assert raised.value.code == EXIT_USAGE


def test_a_bad_endpoint_is_a_usage_error(capsys: Capsys, monkeypatch: Patch) -> None:
    ran = run_cli(capsys, monkeypatch, "get", "k", "--endpoints", "ftp://x")
    assert ran.code == EXIT_USAGE and ran.err.startswith("raftkv: usage: an endpoint is")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["serve", "--bogus"], "raftkv: usage: unrecognized arguments: --bogus (see raftkv serve"),
        (["get"], "raftkv: usage: the following arguments are required: KEY (see raftkv get"),
        ([], "raftkv: usage: the following arguments are required: COMMAND (see raftkv --help)"),
    ],
)
def test_a_command_line_that_does_not_parse_is_one_line(
    capsys: Capsys, monkeypatch: Patch, argv: list[str], line: str
) -> None:
    try:
        ran = run_cli(capsys, monkeypatch, *argv)
        code, err = ran.code, ran.err
    except SystemExit as exited:
        code, err = int(str(exited.code)), capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith(line) and err.count("\n") == 1, err
