"""`raftkv dev` relays each child's output and spots its started line, whatever else the
child prints (a JSON log line, a bare number, text)."""

from __future__ import annotations

import asyncio

import pytest

from raftkv.server.dev import _relay


def test_the_relay_finds_the_started_line_among_any_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def scenario() -> bool:
        stream = asyncio.StreamReader()
        for line in (b"123\n", b'"text"\n', b'{"level": "info"}\n', b"plain\n"):
            stream.feed_data(line)
        stream.feed_data(b'{"started": 2, "client_url": "http://h:1"}\n')
        stream.feed_eof()
        started = asyncio.Event()
        await _relay(2, stream, started)
        return started.is_set()

    assert asyncio.run(scenario())
    relayed = capsys.readouterr().err.splitlines()
    assert relayed == [
        "[node 2] 123",
        '[node 2] "text"',
        '[node 2] {"level": "info"}',
        "[node 2] plain",
    ]
