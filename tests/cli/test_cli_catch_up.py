"""Catch-up progress in `raftkv status`: bars for members behind the leader's log, and
`--wait` until every member has caught up."""

from __future__ import annotations

import io

import pytest
from cli_helpers import Cli, in_cluster
from rich.console import Console

from raftkv.cli import EXIT_OK
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
