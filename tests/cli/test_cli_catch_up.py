"""Catch-up progress in `raftkv status`: bars for members behind the leader's log, and
`--wait` until every member has caught up."""

from __future__ import annotations

import io
import json

import pytest
from cli_helpers import Cli, in_cluster
from rich.console import Console

from raftkv.cli import EXIT_OK, EXIT_UNAVAILABLE
from raftkv.cli.catch_up import Lagging, lagging, render
from raftkv.client import Cluster, Member

Capsys = pytest.CaptureFixture[str]
Patch = pytest.MonkeyPatch


def cluster_of(*members: Member) -> Cluster:
    return Cluster("http://leader", 1, 1, 3, 500, members)


def test_lagging_members_from_the_leaders_view() -> None:
    view = cluster_of(
        Member(1, "p1", "c1", "leader", 500, 0, True),
        Member(2, "p2", "c2", "voter", 500, 0, True),
        Member(4, "p4", "c4", "learner", 120, 380, True),
    )
    assert lagging(view) == [Lagging(4, "learner", 120, 500)]
    # A follower's answer has no match indexes: no view of the catch-up.
    assert lagging(cluster_of(Member(2, "p2", "c2", "voter", None))) is None
    console = Console(file=io.StringIO(), width=120)
    console.print(render(lagging(view) or []))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "learner" in shown and "120/500 (24%)" in shown and "380" in shown


def test_status_waits_until_every_member_has_caught_up(capsys: Capsys, monkeypatch: Patch) -> None:
    async def test(cli: Cli) -> None:
        await cli("put", "k", "v")
        ran = await cli("status", "--wait", "10")
        assert ran.code == EXIT_OK, ran.err
        assert "every member is caught up" in ran.out

    in_cluster(capsys, monkeypatch, test)


def test_the_cli_moves_on_from_a_removed_member_to_the_live_ones(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    """Issue 14.1: after `raftkv member remove`, the default endpoint is a removed member.
    get/put learn the live members from it; members and status show the leader's view
    (match, lag, last contact), the removed member's row says so."""

    async def test(cli: Cli) -> None:
        api = cli.api
        victim = api.follower_ids()[0]
        removed = await cli("member", "remove", str(victim))
        assert removed.code == EXIT_OK, removed.err
        await api.cluster.run_until(lambda: api.services[victim].node.removed)
        monkeypatch.setenv("RAFTKV_ENDPOINTS", api.urls[victim])
        put = await cli("put", "k", "v", "--timeout", "5")
        assert put.code == EXIT_OK, put.err
        got = await cli("get", "k", "--output", "json", "--timeout", "5")
        assert got.code == EXIT_OK and json.loads(got.out)["value"] == "v"
        members = await cli("members", "--output", "json")
        document = json.loads(members.out)
        assert document["id"] == document["leader"] == api.leader_id()
        assert victim not in [member["id"] for member in document["members"]]
        assert all(member["lag"] == 0 for member in document["members"])
        status = await cli("status", "--output", "json")
        rows = {row["endpoint"]: row for row in json.loads(status.out)}
        assert rows[api.urls[victim]]["removed"] is True
        live = [row for url, row in rows.items() if url != api.urls[victim]]
        assert len(live) == 2 and all(row["lag"] == 0 for row in live)
        table = await cli("status")
        assert "removed" in table.out

    in_cluster(capsys, monkeypatch, test)


def test_status_wait_names_a_member_that_never_made_contact(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    """Issue 14.1: `status --wait` prints its progress (a line per change off a terminal)
    and says which member the leader never heard from, instead of waiting silently."""

    async def test(cli: Cli) -> None:
        added = await cli("member", "add", "9", "127.0.0.1:1")
        assert added.code == EXIT_OK, added.err
        ran = await cli("status", "--wait", "1")
        assert ran.code == EXIT_UNAVAILABLE
        assert "waiting up to 1s for every member to catch up" in ran.out
        never = "member 9 has never made contact with the leader"
        assert never in ran.out and "peer address 127.0.0.1:1" in ran.out
        assert ran.err.startswith("raftkv: lagging: not caught up after 1s: " + never)
        assert ran.err.count("\n") == 1

    in_cluster(capsys, monkeypatch, test)


def test_member_changes_print_the_leaders_view(capsys: Capsys, monkeypatch: Patch) -> None:
    """docs/operations.md's `member add 5` through a follower printed that follower's view:
    no match indexes, and "5.6s ago" as the last contact of a healthy voter."""

    async def test(cli: Cli) -> None:
        follower = cli.api.urls[cli.api.follower_ids()[0]]
        added = await cli("member", "add", "9", "127.0.0.1:1", "--endpoints", follower)
        assert added.code == EXIT_OK, added.err
        leader = cli.api.leader_id()
        assert f"as member {leader} at" in added.out, added.out
        removed = await cli("member", "remove", "9", "--endpoints", follower, "--output", "json")
        assert removed.code == EXIT_OK, removed.err
        answer = json.loads(removed.out)
        assert answer["id"] == answer["leader"] == leader, answer

    in_cluster(capsys, monkeypatch, test)
