"""The auth verbs (`raftkv auth|user|role`, `raftkv.cli.auth_commands`) and the credential
flags (`--user`, `--password`, $RAFTKV_USER, $RAFTKV_PASSWORD) against a 3-node in-process
cluster."""

from __future__ import annotations

import json

import pytest
from cli_helpers import Cli, in_cluster

from raftkv.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE

Capsys = pytest.CaptureFixture[str]
Patch = pytest.MonkeyPatch


async def set_up(cli: Cli) -> None:
    """root and alice (role reader: read on app/), auth enabled."""
    for argv, stdin in (
        (("user", "add", "root", "--password-stdin"), b"root-pw\n"),
        (("user", "grant-role", "root", "root"), b""),
        (("role", "add", "reader"), b""),
        (("role", "grant-permission", "reader", "read", "app/", "--prefix"), b""),
        (("user", "add", "alice:alice-pw"), b""),
        (("user", "grant-role", "alice", "reader"), b""),
        (("put", "app/x", "1"), b""),
        (("auth", "enable"), b""),
    ):
        ran = await cli(*argv, stdin=stdin)
        assert ran.code == EXIT_OK, (argv, ran.err)


def test_users_log_in_with_flags_or_the_environment(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        await set_up(cli)
        anonymous = await cli("get", "app/x")
        assert anonymous.code == EXIT_REFUSED
        assert anonymous.err.startswith("raftkv: auth_required:")
        assert (await cli("get", "app/x", "--user", "alice:alice-pw")).code == EXIT_OK
        flags = await cli("get", "app/x", "--user", "alice", "--password", "alice-pw")
        assert flags.code == EXIT_OK
        denied = await cli("put", "app/x", "2", "--user", "alice:alice-pw")
        assert denied.code == EXIT_REFUSED
        assert denied.err.startswith("raftkv: permission_denied: ")
        assert "user 'alice' may not write key b'app/x'" in denied.err
        wrong = await cli("get", "app/x", "--user", "alice:nope")
        assert wrong.code == EXIT_REFUSED and "auth_failed" in wrong.err
        # No password and no terminal to ask on: one usage line, nothing sent.
        asked = await cli("get", "app/x", "--user", "alice")
        assert asked.code == EXIT_USAGE and "no password for user 'alice'" in asked.err
        cli.monkeypatch.setenv("RAFTKV_USER", "alice")
        cli.monkeypatch.setenv("RAFTKV_PASSWORD", "alice-pw")
        assert (await cli("get", "app/x")).code == EXIT_OK

    in_cluster(capsys, monkeypatch, test)


def test_users_and_roles_are_shown_and_changed(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        await set_up(cli)
        root = ("--user", "root:root-pw")
        users = json.loads((await cli("user", "list", *root, "--output", "json")).out)
        assert users == {
            "users": [
                {"name": "alice", "roles": ["reader"], "has_password": True},
                {"name": "root", "roles": ["root"], "has_password": True},
            ]
        }
        table = await cli("role", "get", "reader", *root)
        assert "app/" in table.out and "read" in table.out
        role = json.loads((await cli("role", "get", "reader", *root, "--output", "json")).out)
        assert role["roles"][0]["permissions"] == [
            {"kind": "read", "key": "app/", "range_end": "app0"}
        ]
        both = await cli("role", "grant-permission", "reader", "read", "a", "b", "--prefix", *root)
        assert both.code == EXIT_USAGE
        # Alice changes her own password; then only the new one works.
        changed = await cli("user", "passwd", "alice:new-pw", "--user", "alice:alice-pw")
        assert changed.code == EXIT_OK, changed.err
        assert (await cli("get", "app/x", "--user", "alice:alice-pw")).code == EXIT_REFUSED
        assert (await cli("get", "app/x", "--user", "alice:new-pw")).code == EXIT_OK
        no_password = await cli("user", "add", "bob", *root)
        assert no_password.code == EXIT_USAGE and "no new password for 'bob'" in no_password.err
        certificate_only = await cli("user", "add", "carol", "--no-password", *root)
        assert certificate_only.code == EXIT_OK and "certificate only" in certificate_only.out
        assert (await cli("user", "delete", "carol", *root)).code == EXIT_OK
        assert (await cli("role", "delete", "reader", *root)).code == EXIT_OK
        status = json.loads((await cli("auth", "status", "--output", "json")).out)
        assert status["enabled"] is True
        assert (await cli("auth", "disable", *root)).code == EXIT_OK
        assert (await cli("get", "app/x")).code == EXIT_OK

    in_cluster(capsys, monkeypatch, test)
