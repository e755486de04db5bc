"""`raftkv lock NAME -- COMMAND`: the command runs holding the lock, with its fencing token in
the environment; its exit code is raftkv's; the lock and its lease are gone afterwards."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from cli_helpers import Cli, in_cluster, run_cli

from raftkv.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

Capsys = pytest.CaptureFixture[str]
Patch = pytest.MonkeyPatch


def test_a_command_runs_holding_the_lock(
    capsys: Capsys, monkeypatch: Patch, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    script = (
        "import os, sys; "
        "open(sys.argv[1], 'w').write(os.environ['RAFTKV_LOCK_TOKEN'] + ' ' "
        "+ os.environ['RAFTKV_LOCK_KEY'])"
    )

    async def test(cli: Cli) -> None:
        ran = await cli("lock", "jobs/report", "--", sys.executable, "-c", script, str(seen))
        assert ran.code == EXIT_OK, ran.err
        held = json.loads(ran.out.splitlines()[0])
        token, key = seen.read_text().split()
        assert int(token) == held["token"] > 0 and key == held["key"]
        assert key.startswith("jobs/report/")
        # Released: no lock key, no lease.
        left = await cli("range", "jobs/", "--prefix", "--output", "json")
        assert json.loads(left.out)["count"] == 0
        assert json.loads((await cli("lease", "list", "--output", "json")).out)["leases"] == []
        # The next holder gets a larger token; the command's exit code is raftkv's.
        failed = await cli("lock", "jobs/report", "--", sys.executable, "-c", "raise SystemExit(7)")
        assert failed.code == 7
        assert json.loads(failed.out.splitlines()[0])["token"] > held["token"]
        missing = await cli("lock", "jobs/report", "--", str(tmp_path / "no-such-program"))
        assert missing.code == EXIT_USAGE and "cannot run" in missing.err

    in_cluster(capsys, monkeypatch, test)


def test_a_command_whose_lock_is_lost_is_stopped(capsys: Capsys) -> None:
    from raftkv.cli.lock_commands import _run

    async def scenario() -> int:
        lost = asyncio.Event()
        lost.set()  # the lease ended: the command must not go on as if it held the lock
        command = [sys.executable, "-c", "import time; time.sleep(60)"]
        return await asyncio.wait_for(_run(command, "jobs/x", 5, lost, "jobs"), 30)

    assert asyncio.run(scenario()) == EXIT_UNAVAILABLE
    assert "lock_lost" in capsys.readouterr().err


def test_raftkv_commands_run_under_a_lock_and_options_may_follow_the_name(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    """Issue 14, item 5: the RAFTKV_LOCK_* variables the lock exports are no settings, so
    `raftkv config show` (like `serve`) runs under it; `--endpoints` after NAME is the
    lock's option, not the start of the command."""
    config_show = [sys.executable, "-m", "raftkv", "config", "show", "--id", "2"]

    async def test(cli: Cli) -> None:
        ran = await cli("lock", "jobs/x", "--", *config_show)
        assert ran.code == EXIT_OK, ran.err
        endpoint = cli.api.endpoints()[0]
        # Only the flag reaches the cluster: the variable names a port nothing listens on.
        monkeypatch.setenv("RAFTKV_ENDPOINTS", "http://127.0.0.1:1")
        ran = await cli(
            "lock", "jobs/x", "--endpoints", endpoint, "--ttl", "15", "--", *config_show
        )
        assert ran.code == EXIT_OK, ran.err
        unclear = await cli("lock", "jobs/x", "--ttl", "5", "true")
        assert unclear.code == EXIT_USAGE and "raftkv lock NAME [OPTIONS] -- COMMAND" in unclear.err

    in_cluster(capsys, monkeypatch, test)


def test_a_bad_option_after_the_name_is_refused_in_one_line(
    capsys: Capsys, monkeypatch: Patch
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(capsys, monkeypatch, "lock", "jobs/x", "--ttl", "0", "--", "true")
    assert exited.value.code == EXIT_USAGE
    assert capsys.readouterr().err.startswith("raftkv: usage: argument --ttl")
