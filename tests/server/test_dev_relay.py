"""`raftkv dev` relays each child's output and spots its started line, whatever else the
child prints (a JSON log line, a bare number, text)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from raftkv.server.dev import _relay, removed_nodes


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


def test_removed_nodes_are_found_by_their_status() -> None:
    """An old data dir whose node 1 was removed: `raftkv dev` must not say "ready". Node 1
    says so only from its third answer (it replays its log after it starts); node 2 has
    settled; node 3 is down and does not count."""
    answers = {1: 0}

    async def scenario() -> list[int]:
        servers = []
        for removed in (True, False):

            async def status(request: web.Request, removed: bool = removed) -> web.Response:
                if not removed:
                    return web.json_response(
                        {"id": 2, "leader": 2, "commit_index": 9, "applied_index": 9}
                    )
                answers[1] += 1
                if answers[1] < 3:
                    return web.json_response(
                        {"id": 1, "leader": 0, "commit_index": 9, "applied_index": 4}
                    )
                return web.json_response({"id": 1, "removed": True})

            app = web.Application()
            app.router.add_get("/v1/status", status)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            servers.append(server)
        try:
            endpoints = [str(server.make_url("")).rstrip("/") for server in servers]
            return await removed_nodes(
                [*endpoints, "http://127.0.0.1:9"], timeout_s=2.0, interval_s=0.01
            )
        finally:
            for server in servers:
                await server.close()

    assert asyncio.run(scenario()) == [1]
    assert answers[1] == 3
