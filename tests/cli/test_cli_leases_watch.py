"""`raftkv lease ...`, `raftkv put --lease` and `raftkv watch` against a 3-node in-process
cluster: both output formats and the exit codes."""

from __future__ import annotations

import json

import pytest
from cli_helpers import Cli, in_cluster

from raftkv.cli import EXIT_OK, EXIT_REFUSED

Capsys = pytest.CaptureFixture[str]
Patch = pytest.MonkeyPatch


def test_lease_grant_put_ttl_list_keepalive_and_revoke(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        granted = await cli("lease", "grant", "60", "--id", "42", "--output", "json")
        assert granted.code == EXIT_OK, granted.err
        assert json.loads(granted.out)["id"] == 42 and json.loads(granted.out)["ttl"] == 60
        random_id = await cli("lease", "grant", "30")
        assert random_id.code == EXIT_OK and "ttl" in random_id.out and "30" in random_id.out
        put = await cli("put", "svc/a", "up", "--lease", "42")
        assert put.code == EXIT_OK, put.err
        ttl = await cli("lease", "ttl", "42", "--keys", "--output", "json")
        document = json.loads(ttl.out)
        assert document["granted_ttl"] == 60 and 0 < document["ttl"] <= 60
        assert document["keys"] == ["svc/a"]
        table = await cli("lease", "ttl", "42", "--keys")
        assert "granted_ttl" in table.out and "svc/a" in table.out
        listed = await cli("lease", "list", "--output", "json")
        assert sorted(item["granted_ttl"] for item in json.loads(listed.out)["leases"]) == [30, 60]
        assert "granted_ttl" in (await cli("lease", "list")).out
        once = await cli("lease", "keepalive", "42", "--once")
        assert once.code == EXIT_OK and "lease 42 kept alive, ttl 60s" in once.out
        revoked = await cli("lease", "revoke", "42", "--output", "json")
        assert json.loads(revoked.out)["revoked"] is True
        gone = await cli("get", "svc/a")
        assert gone.code != EXIT_OK
        for argv in (("lease", "keepalive", "42", "--once"), ("lease", "ttl", "42"),
                     ("put", "svc/b", "x", "--lease", "42")):  # fmt: skip
            refused = await cli(*argv)
            assert refused.code == EXIT_REFUSED, argv
            assert refused.err.startswith("raftkv: lease_not_found:"), refused.err

    in_cluster(capsys, monkeypatch, test)


def test_watch_prints_history_and_stops_after_count(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        first = json.loads((await cli("put", "w/a", "1", "--output", "json")).out)["revision"]
        await cli("put", "w/b", "2")
        await cli("put", "other", "x")
        await cli("del", "w/a")
        lines = await cli("watch", "w/", "--prefix", "--revision", str(first), "--count", "3")
        assert lines.code == EXIT_OK, lines.err
        assert lines.out.splitlines() == [
            f"put w/a 1 [revision {first}]",
            f"put w/b 2 [revision {first + 1}]",
            f"delete w/a [revision {first + 3}]",
        ]
        as_json = await cli(
            "watch", "w/a", "--rev", str(first), "--prev-kv", "--count", "2", "--output", "json"
        )
        messages = [json.loads(line) for line in as_json.out.splitlines()]
        events = [event for message in messages for event in message["events"]]
        assert [event["type"] for event in events] == ["put", "delete"]
        assert events[1]["prev_kv"]["value"] == "1"
        assert messages[-1]["revision"] == first + 3
        deletes = await cli("watch", "--rev", str(first), "--no-put", "--count", "1")
        assert deletes.out.splitlines() == [f"delete w/a [revision {first + 3}]"]

    in_cluster(capsys, monkeypatch, test)
