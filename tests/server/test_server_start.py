"""`Server.start` when the client port is taken after the start-up checks passed (another
process bound it in between): one StartFailed naming the setting, everything it started
stopped, and no second close of the HTTP app (which once raised a ValueError traceback)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from raftkv.server import runner
from raftkv.server.preflight import StartFailed
from raftkv.server.settings import ServerSettings
from raftkv.testing.processes import free_port


def test_a_client_port_taken_after_the_checks_fails_the_start_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="raftkv.server")
    # The race, made certain: the checks pass, then the port is someone else's.
    monkeypatch.setattr(runner, "check_before_start", lambda _: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        settings = ServerSettings(
            data_dir=tmp_path / "data",
            listen_client=f"127.0.0.1:{taken.getsockname()[1]}",
            listen_peer=f"127.0.0.1:{free_port()}",
            corrupt_check_at_start=False,
        )
        server = runner.Server(settings)

        async def start() -> None:
            try:
                await asyncio.wait_for(server.start(), 60)
            finally:
                await server.stop()  # as run_server does: a second stop is harmless

        with pytest.raises(StartFailed, match=r"setting listen_client: cannot listen on"):
            asyncio.run(start())
    assert server.node is None
    assert "node 1 stopped" in caplog.text  # it had started: its stop is logged
