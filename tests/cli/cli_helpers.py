"""The CLI tests' harness: `raftkv.cli.main` run in a worker thread against an in-process
cluster behind HTTP servers (`raftkv.testing.http_cluster`), its output captured."""

from __future__ import annotations

import io
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from raftkv.cli import main
from raftkv.testing.http_cluster import HttpCluster, http_cluster
from raftkv.testing.local_cluster import run_scenario

__all__ = ["Cli", "Ran", "in_cluster", "run_cli"]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def run_cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    stdin: bytes = b"",
) -> Ran:
    """`raftkv ARGV` in this thread, with `stdin` as its standard input."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


@dataclass
class Cli:
    """Runs `raftkv` against the cluster `api` (its endpoints in RAFTKV_ENDPOINTS)."""

    api: HttpCluster
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    async def __call__(self, *argv: str, stdin: bytes = b"") -> Ran:
        return await self.api.run_blocking(
            lambda: run_cli(self.capsys, self.monkeypatch, *argv, stdin=stdin)
        )


def in_cluster(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    test: Callable[[Cli], Awaitable[None]],
) -> None:
    """Run `test(cli)` against a fresh 3-node cluster; tables are 200 columns wide."""
    monkeypatch.setenv("COLUMNS", "200")

    async def scenario() -> None:
        async with http_cluster() as api:
            monkeypatch.setenv("RAFTKV_ENDPOINTS", ",".join(api.endpoints()))
            await test(Cli(api, capsys, monkeypatch))

    run_scenario(scenario)
