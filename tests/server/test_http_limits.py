"""The client port's limits (issue 12 C14, C15, C17, C18): compressed bodies refused and
never inflated, body and header read timeouts, the connection cap, rate-limited accept
errors, the open-files limit, the loop lag histogram, and the read limits over HTTP.

The API runs on a LocalCluster (real Nodes, manual clock) served by the real client port
(`raftkv.server.listener.ClientPort`, aiohttp with the server's options) on 127.0.0.1;
requests that need Raft run inside `cluster.complete`."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.http_parser import DeflateBuffer
from server_helpers import served

from raftkv.kv import ReadLimits
from raftkv.server import HttpSettings
from raftkv.server.event_loops import loop_factory
from raftkv.server.listener import (
    MAX_FIELD_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    RESERVED_FILE_DESCRIPTORS,
    AcceptErrorLog,
    ClientPortSettings,
    raise_open_files_limit,
)
from raftkv.server.setting_values import EVENT_LOOP_KINDS
from raftkv.server.settings import SettingsInvalid
from raftkv.testing.local_cluster import run_scenario

# Bounds on waits for what the server does by itself (never a timing the test relies on).
WAIT_S = 10.0
JSON = {"Content-Type": "application/json"}


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (every 10 ms of real time) for up to WAIT_S."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server ends the connection (EOF or reset) within WAIT_S."""
    try:
        async with asyncio.timeout(WAIT_S):
            while await reader.read(1 << 16):
                pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    run_scenario(scenario, timeout_s=60)


# -- C15: compressed bodies ------------------------------------------------------------------


def test_a_compressed_body_is_refused_with_415_and_never_inflated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gzip bomb used to be inflated on the loop past max_body_bytes (2.9 s of CPU before
    the 413); a compressed body of a valid txn was applied."""
    inflaters: list[object] = []
    original = DeflateBuffer.__init__

    def counting(self: DeflateBuffer, *args: Any, **kwargs: Any) -> None:
        inflaters.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(DeflateBuffer, "__init__", counting)

    async def scenario() -> None:
        async with served() as api:
            txn = b'{"success": [{"op": "put", "key": "zipped", "value": "1"}]}'
            for encoding, body in (
                ("gzip", gzip.compress(txn)),
                ("GZip", gzip.compress(b"{" + b" " * (64 << 20) + b"}")),  # 64 MiB inflated
                ("deflate, gzip", b"whatever"),
                # Not installed codecs: once a plain-text 400 suggesting to install Brotli.
                ("br", b"whatever"),
                ("zstd", b"whatever"),
            ):
                status, answer = await api.call(
                    "POST", "/v1/txn", data=body, headers={"Content-Encoding": encoding, **JSON}
                )
                assert status == 415
                assert answer["error"]["code"] == "unsupported_content_encoding"
                assert repr(encoding) in answer["error"]["message"]
            assert inflaters == []
            status, _ = await api.call("GET", "/v1/kv/zipped")
            assert status == 404  # nothing applied
            # "identity" is no compression.
            status, _ = await api.call(
                "POST", "/v1/txn", data=txn, headers={"Content-Encoding": "identity", **JSON}
            )
            assert status == 200

    run(scenario)


# -- C17: slow clients, connections, descriptors -------------------------------------------


def test_a_body_that_trickles_in_is_answered_408_at_the_body_timeout() -> None:
    async def scenario() -> None:
        async with served(HttpSettings(body_timeout_s=0.2)) as api:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port.port)
            writer.write(
                b"POST /v1/txn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            async with asyncio.timeout(WAIT_S):
                status_line = await reader.readline()
            assert status_line.startswith(b"HTTP/1.1 408"), status_line
            assert await closed_by_server(reader)
            writer.close()

    run(scenario)


def test_a_connection_whose_headers_trickle_in_is_closed_at_the_keepalive_timeout() -> None:
    """Slowloris: aiohttp's default keep-alive (3630 s) left such a connection open."""

    async def scenario() -> None:
        async with served(port=ClientPortSettings(keepalive_timeout_s=0.2)) as api:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
            assert await closed_by_server(reader)
            writer.close()
            # An idle connection too, after its last answer.
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(WAIT_S):
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            assert await closed_by_server(reader)
            writer.close()

    run(scenario)


def test_headers_sent_a_byte_at_a_time_do_not_keep_the_connection_open() -> None:
    """Slowloris that keeps talking: a byte every 50 ms never lets the head complete, and
    bytes received do not push the keep-alive timer back (only answers do), so the
    connection is closed about keepalive_timeout_s after it was made."""

    async def scenario() -> None:
        timeout_s = 0.3
        async with served(port=ClientPortSettings(keepalive_timeout_s=timeout_s)) as api:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port.port)
            head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
            loop = asyncio.get_running_loop()
            opened = loop.time()

            sent = 0

            async def trickle() -> None:
                nonlocal sent
                with contextlib.suppress(ConnectionError):
                    for byte in head:  # the client's pace, not a wait for the server
                        writer.write(bytes([byte]))
                        await writer.drain()
                        sent += 1
                        await asyncio.sleep(0.05)

            trickling = asyncio.create_task(trickle())
            assert await closed_by_server(reader)
            closed_after = loop.time() - opened
            trickling.cancel()
            writer.close()
            # Closed while bytes were still coming (far from the whole head), within a
            # few timeouts of the connection's start (the bound allows a loaded machine).
            assert sent < len(head)
            assert closed_after < 20 * timeout_s, closed_after

    run(scenario)


def test_the_request_head_limits_are_the_pinned_ones() -> None:
    """MAX_HEADERS fields and a MAX_FIELD_BYTES field pass; one more of either is a 400."""

    async def status_of(api: Any, fields: list[bytes]) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port.port)
        writer.write(b"GET /health HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n")
        async with asyncio.timeout(WAIT_S):
            status_line = await reader.readline()
        writer.close()
        return status_line.split()[1]

    async def scenario() -> None:
        async with served() as api:
            host = b"Host: x"
            extra = [b"X-%d: y" % number for number in range(MAX_HEADERS)]
            assert await status_of(api, [host, *extra[: MAX_HEADERS - 1]]) == b"200"
            assert await status_of(api, [host, *extra]) == b"400"
            token = b"Authorization: " + b"a" * MAX_FIELD_BYTES
            assert await status_of(api, [host, token]) == b"200"
            assert await status_of(api, [host, token + b"a"]) == b"400"
            assert MAX_LINE_BYTES == MAX_FIELD_BYTES == 8190

    run(scenario)


@pytest.mark.parametrize("event_loop", EVENT_LOOP_KINDS)
def test_connections_beyond_max_client_connections_are_closed_at_once_and_counted(
    event_loop: str,
) -> None:
    """On either event loop `raftkv serve` can run (uvloop's transports are not
    asyncio.Transport subclasses: refusing one used to fail an assert, with a traceback)."""

    async def scenario() -> None:
        async with served(port=ClientPortSettings(max_connections=2)) as api:
            gate = api.port.gate
            assert gate is not None
            first = await asyncio.open_connection("127.0.0.1", api.port.port)
            second = await asyncio.open_connection("127.0.0.1", api.port.port)
            await eventually(lambda: gate.open == 2, "two connections open")
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port.port)
            assert await closed_by_server(reader)
            writer.close()
            assert (gate.open, gate.refused) == (2, 1)
            first[1].close()
            await eventually(lambda: gate.open == 1, "the first connection gone")
            # Room again: the session's connection is served (and counted while open).
            assert (await api.call("GET", "/health"))[0] == 200
            second[1].close()
            await eventually(lambda: gate.open <= 1, "the second connection gone")
            assert await api.metric("raftkv_limit_hits_total", limit="max_client_connections") == 1
            assert await api.metric("raftkv_http_connections") == gate.open

    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(bounded())


def test_failed_accepts_are_logged_one_line_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Running out of descriptors used to log a traceback per failed accept (85 MB in 40 s)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        others: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: others.append(context))
        log = AcceptErrorLog(loop, interval_s=0.05)
        log.install()
        failed = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(24, "Too many open files"),
        }
        with caplog.at_level(logging.WARNING, logger="raftkv.server"):
            for _ in range(500):
                loop.call_exception_handler(failed)
            lines = [line.message for line in caplog.records if "not be accepted" in line.message]
            assert len(lines) == 1 and "1 connection(s)" in lines[0]
            await eventually(lambda: len(caplog.records) == 2, "the interval's summary")
            assert "499 connection(s)" in caplog.records[1].message
            assert "Too many open files" in caplog.records[1].message
            assert all(record.exc_info is None for record in caplog.records)
        loop.call_exception_handler({"message": "something else"})
        assert [context["message"] for context in others] == ["something else"]
        log.uninstall()
        assert log.errors == 500

    run(scenario)


def test_the_open_files_limit_is_raised_to_the_hard_limit_or_the_start_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = {"soft": 1024, "hard": 4096}

    def setrlimit(_: int, values: tuple[int, int]) -> None:
        limits["soft"], limits["hard"] = values

    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert raise_open_files_limit(1000) == (1024, 4096)
    assert limits == {"soft": 4096, "hard": 4096}
    limits["hard"] = limits["soft"] = 2000
    with pytest.raises(SettingsInvalid) as refused:
        raise_open_files_limit(1000)
    message = str(refused.value)
    assert "max_client_connections" in message
    assert f"{1000 + RESERVED_FILE_DESCRIPTORS}" in message and "2000" in message


# -- C18: the event loop's lag ---------------------------------------------------------------


def test_a_stalled_loop_shows_in_the_loop_lag_histogram() -> None:
    async def scenario() -> None:
        async with served() as api:
            name = "raftkv_event_loop_lag_seconds_bucket"

            async def late() -> float:
                return await api.metric(name, le="+Inf") - await api.metric(name, le="0.25")

            # A loaded machine may have stalled the loop already (starting the server):
            # the stall under test must add one late observation to what is there.
            before = await late()
            time.sleep(0.3)  # the stall under test: the loop runs nothing meanwhile
            after = before
            for _ in range(100):
                after = await late()
                if after > before:
                    break
            assert after >= before + 1

    run(scenario)


# -- C14: the read limits over HTTP ----------------------------------------------------------


def test_reads_answer_max_response_bytes_with_more_and_refuse_scans_past_the_limit() -> None:
    async def scenario() -> None:
        limits = ReadLimits(max_scan_entries=30, max_response_bytes=1000)
        async with served(limits=limits) as api:
            puts = [{"op": "put", "key": f"k/{n:02}", "value": "v" * 300} for n in range(20)]
            assert (await api.call("POST", "/v1/txn", json={"success": puts}))[0] == 200
            status, answer = await api.call("GET", "/v1/kv?key=k/&prefix=true")
            assert status == 200
            assert (len(answer["kvs"]), answer["count"], answer["more"]) == (2, 20, True)
            # A read-only txn is a read: consistency applies, the same limits too.
            ranges = {"success": [{"op": "range", "key": "k/", "prefix": True}]}
            status, answer = await api.call("POST", "/v1/txn?consistency=serializable", json=ranges)
            assert status == 200 and answer["responses"][0]["more"] is True
            status, answer = await api.call("POST", "/v1/txn", json={"success": puts[:1]} | {})
            assert status == 200
            status, answer = await api.call(
                "POST", "/v1/txn?consistency=serializable", json={"success": puts[:1]}
            )
            assert (status, answer["error"]["code"]) == (400, "invalid_request")
            # A count scans the rest of its range and the keys outside it in turns (the
            # store knows how many keys are live): half of the keys in the range, half
            # outside, so 17 entries each (3 read for the answer, then 7 of the range's in
            # turns with 7 outside).
            half = {"op": "range", "key": "k/", "range_end": "k/10"}
            status, answer = await api.call("POST", "/v1/txn", json={"success": [half]})
            assert status == 200 and answer["responses"][0]["count"] == 10
            status, answer = await api.call("POST", "/v1/txn", json={"success": [half] * 2})
            assert (status, answer["error"]["code"]) == (413, "scan_too_large")
            assert "max_scan_entries=30" in answer["error"]["message"]
            assert await api.metric("raftkv_limit_hits_total", limit="max_scan_entries") == 1

    run(scenario)


def test_a_large_answer_built_off_the_loop_is_the_answer_built_on_it() -> None:
    async def scenario() -> None:
        async with served() as api:
            for start in range(0, 1200, 100):
                puts = [
                    {"op": "put", "key": f"k/{n:04}", "value": "v"}
                    for n in range(start, start + 100)
                ]
                assert (await api.call("POST", "/v1/txn", json={"success": puts}))[0] == 200
            status, large = await api.call("GET", "/v1/kv?key=k/&prefix=true")  # > 1000 kvs
            assert status == 200 and (len(large["kvs"]), large["more"]) == (1200, False)
            status, small = await api.call("GET", "/v1/kv?key=k/&prefix=true&limit=1000")
            assert status == 200 and small["kvs"] == large["kvs"][:1000]
            ranges = {"success": [{"op": "range", "key": "k/", "prefix": True}]}
            status, txn = await api.call("POST", "/v1/txn", json=ranges)
            assert status == 200 and txn["responses"][0]["kvs"] == large["kvs"]

    run(scenario)
