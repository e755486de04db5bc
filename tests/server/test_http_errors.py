"""Requests the API refuses are 4xx JSON error answers, never a 500, a traceback or
aiohttp's text/plain (issue 14, item 6 and 7).

The API runs on a one-node LocalCluster (real Node, manual clock) behind the real client
port on 127.0.0.1 (`server_helpers.served`); what aiohttp's parser refuses is sent as raw
bytes on a socket."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from server_helpers import error_code, served

from raftkv.raft.driver.settings import NodeSettings
from raftkv.server.logs import BadRequestLines
from raftkv.testing.local_cluster import run_scenario

# What every client of the API sends with a body (a body without it is refused 415).
JSON = {"Content-Type": "application/json"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    run_scenario(scenario, timeout_s=60)


# -- bodies ----------------------------------------------------------------------------------


def test_invalid_utf8_inside_a_json_string_is_a_400_on_every_body_route() -> None:
    """msgspec raises UnicodeDecodeError (not a DecodeError) for such a string: it was a
    500 `internal` with a traceback."""

    async def scenario() -> None:
        async with served() as api:
            for method, path, body in (
                ("POST", "/set", b'{"key": "a\xff", "value": "b"}'),
                ("PUT", "/v1/kv/a", b'{"value": "\xc3("}'),
                ("POST", "/v1/txn", b'{"success": [{"op": "put", "key": "\xff", "value": ""}]}'),
                ("POST", "/v1/members", b'{"id": 2, "peer_url": "\xed\xa0\x80"}'),
            ):
                status, answer = await api.call(method, path, data=body, headers=JSON)
                assert (status, error_code(answer)) == (400, "invalid_json"), (path, answer)
                assert "not UTF-8" in answer["error"]["message"]
                assert "encoding=base64" in answer["error"]["message"]
            assert await api.keys() == []

    run(scenario)


def test_a_lone_surrogate_escape_is_named_not_called_truncated() -> None:
    async def scenario() -> None:
        async with served() as api:
            for body, escape in (
                (b'{"key": "a\\ud800", "value": "b"}', "\\ud800"),
                (b'{"key": "a", "value": "\\udc00b"}', "\\udc00"),
            ):
                status, answer = await api.call("POST", "/set", data=body, headers=JSON)
                assert (status, error_code(answer)) == (400, "invalid_json")
                message = answer["error"]["message"]
                assert "truncated" not in message
                assert f"{escape} at byte" in message and "surrogate" in message
            # A whole pair is one character.
            status, _ = await api.call(
                "POST", "/set", data=b'{"key": "\\ud83d\\ude00", "value": ""}', headers=JSON
            )
            assert status == 200

    run(scenario)


def test_a_name_given_twice_in_one_json_object_is_refused() -> None:
    """It used to be last-wins, silently: `{"key": "a", "key": "b"}` wrote b."""

    async def scenario() -> None:
        async with served() as api:
            status, answer = await api.call(
                "POST", "/set", data=b'{"key": "a", "key": "b", "value": "1"}', headers=JSON
            )
            assert (status, error_code(answer)) == (400, "invalid_json")
            assert "'key' appears twice" in answer["error"]["message"]
            # The same name written with an escape is the same name.
            status, answer = await api.call(
                "POST", "/set", data=b'{"key": "a", "\\u006bey": "b", "value": "1"}', headers=JSON
            )
            assert (status, error_code(answer)) == (400, "invalid_json")
            assert "'key' appears twice" in answer["error"]["message"]
            # Nested, in a body large enough to be checked off the loop.
            ops = [{"op": "put", "key": f"k{i}", "value": "v" * 1000} for i in range(100)]
            text = json.dumps({"success": ops})
            text = text.replace('"op": "put", "key": "k7"', '"op": "put", "op": "put", "key": "k7"')
            assert len(text) > 64 << 10
            status, answer = await api.call("POST", "/v1/txn", data=text.encode(), headers=JSON)
            assert (status, error_code(answer)) == (400, "invalid_json")
            assert "'op' appears twice" in answer["error"]["message"]
            assert await api.keys() == []  # nothing applied
            status, _ = await api.call(
                "POST", "/v1/txn", data=json.dumps({"success": ops}), headers=JSON
            )
            assert status == 200

    run(scenario)


# -- errors of the node ------------------------------------------------------------------------


def test_removing_the_last_member_is_a_400_invalid_member_change() -> None:
    """The core's ConfChangeInvalid reached the client as a 500 `internal`."""

    async def scenario() -> None:
        async with served() as api:
            status, answer = await api.call("DELETE", "/v1/members/1")
            assert (status, error_code(answer)) == (400, "invalid_member_change")
            assert "removed all voters" in answer["error"]["message"]
            assert (await api.call("GET", "/v1/cluster"))[1]["members"][0]["id"] == 1

    run(scenario)


def test_a_transfer_to_a_non_member_is_a_400_and_only_a_large_command_a_413() -> None:
    """Every InvalidArgument used to be 413 `command_too_large`."""

    async def scenario() -> None:
        async with served(node=NodeSettings(max_command_bytes=200)) as api:
            status, answer = await api.call("POST", "/v1/leader/transfer", json={"to": 7})
            assert (status, error_code(answer)) == (400, "invalid_request")
            assert "non-member 7" in answer["error"]["message"]
            status, answer = await api.call("PUT", "/v1/kv/big", json={"value": "v" * 300})
            assert (status, error_code(answer)) == (413, "command_too_large")
            assert "max_command_bytes" in answer["error"]["message"]

    run(scenario)


# -- URLs and methods --------------------------------------------------------------------------


def test_a_percent_escape_that_is_not_utf8_is_refused_pointing_at_base64() -> None:
    """`/v1/kv/%FF` and `/v1/kv/%25FF` both named the key "%FF"; `?key=%FF` became U+FFFD."""

    async def scenario() -> None:
        async with served() as api:
            for method, path in (
                ("PUT", "/v1/kv/%FF"),
                ("GET", "/v1/kv/a%C3"),
                ("DELETE", "/v1/kv/%FF%FE"),
                ("GET", "/v1/kv?key=%FF"),
            ):
                status, answer = await api.call(method, path, json={"value": "v"})
                assert (status, error_code(answer)) == (400, "invalid_request"), path
                assert "not UTF-8" in answer["error"]["message"]
                assert "encoding=base64" in answer["error"]["message"]
            # UTF-8 escapes, and an escaped "%", are keys as before.
            assert (await api.call("PUT", "/v1/kv/%25FF", json={"value": "1"}))[0] == 200
            assert (await api.call("PUT", "/v1/kv/%E2%82%AC", json={"value": "2"}))[0] == 200
            assert await api.keys() == ["%FF", "€"]
            # The binary key, as the message says.
            status, _ = await api.call(
                "PUT", "/v1/kv/%2Fw%3D%3D?encoding=base64", json={"value": "Mw=="}
            )
            assert status == 200

    run(scenario)


def test_revisions_above_int64_are_refused() -> None:
    async def scenario() -> None:
        async with served() as api:
            for path in (
                "/v1/watch?key=a&start_revision=9223372036854775808",
                "/v1/watch?key=a&start_revision=9999999999999999999",
                "/v1/kv?key=a&revision=9223372036854775808",
            ):
                status, answer = await api.call("GET", path)
                assert (status, error_code(answer)) == (400, "invalid_request"), path
                assert "9223372036854775807" in answer["error"]["message"]
            # The largest is a future revision, not a malformed one.
            status, answer = await api.call("GET", "/v1/kv?key=a&revision=9223372036854775807")
            assert (status, error_code(answer)) == (400, "future_revision")

    run(scenario)


def test_a_405_says_which_methods_the_route_takes_in_allow() -> None:
    async def scenario() -> None:
        async with served() as api:

            async def refused(method: str, path: str) -> tuple[str, Any]:
                async with api.session.request(method, api.url + path) as response:
                    assert response.status == 405
                    return response.headers["Allow"], await response.json()

            allow, answer = await api.cluster.complete(refused("PATCH", "/health"))
            assert set(allow.split(",")) == {"GET"}
            assert error_code(answer) == "method_not_allowed"
            assert "GET" in answer["error"]["message"]
            allow, _ = await api.cluster.complete(refused("POST", "/v1/kv/a"))
            assert {method.strip() for method in allow.split(",")} == {"GET", "PUT", "DELETE"}

    run(scenario)


# -- what aiohttp's parser refuses -------------------------------------------------------------


PARSER_REFUSALS = {
    "long request line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "long header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
    "too many headers": b"GET /health HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: y\r\n" % i for i in range(200))
    + b"\r\n",
    "bad method": b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "missing Host": b"GET /health HTTP/1.1\r\n\r\n",
}


def test_requests_the_parser_refuses_get_the_json_error_answer() -> None:
    """They were text/plain answers holding Python reprs of the request's bytes."""

    async def scenario() -> None:
        async with served() as api:
            for what, request in PARSER_REFUSALS.items():
                status_line, headers, answer = await api.raw(request)
                assert status_line.split()[1] == b"400", what
                assert headers["content-type"] == "application/json", what
                assert error_code(answer) == "malformed_request", what
                message = answer["error"]["message"]
                assert "\n" not in message and "b'" not in message and "bytearray" not in message
                assert len(message) < 200, what
            assert (
                "longer than 8190 bytes"
                in (await api.raw(PARSER_REFUSALS["long header"]))[2]["error"]["message"]
            )

    run(scenario)


def test_http_versions_other_than_1_0_and_1_1_are_answered_505() -> None:
    """HTTP/0.9 and HTTP/2.0 request lines were served, 200, with that version echoed."""

    async def scenario() -> None:
        async with served() as api:
            for version in (b"0.9", b"2.0"):
                status_line, _, answer = await api.raw(
                    b"GET /health HTTP/" + version + b"\r\nHost: x\r\n\r\n"
                )
                assert status_line.startswith(b"HTTP/1.1 505 "), status_line
                assert error_code(answer) == "http_version_not_supported"
                assert version.decode() in answer["error"]["message"]
            # One the parser does not know.
            status_line, _, answer = await api.raw(b"GET /health HTTP/3.0\r\nHost: x\r\n\r\n")
            assert status_line.split()[1] == b"505"
            assert error_code(answer) == "http_version_not_supported"
            assert "Invalid HTTP version" in answer["error"]["message"]
            status_line, _, answer = await api.raw(b"GET /health HTTP/1.0\r\n\r\n")
            assert status_line.startswith(b"HTTP/1.0 200") and answer == {"status": "ok"}

    run(scenario)


def test_malformed_requests_log_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each used to log aiohttp's 6-12 line traceback, unthrottled (11 MB in 10 s)."""
    lines = BadRequestLines(interval_s=1.0, clock=lambda: 0.0)  # time stands still
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(lines)

    async def scenario() -> None:
        async with served() as api:
            for _ in range(3):
                for request in PARSER_REFUSALS.values():
                    await api.raw(request)

    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            run(scenario)
    finally:
        server_log.removeFilter(lines)
    records = [record for record in caplog.records if record.name == "aiohttp.server"]
    assert len(records) == 1, [record.getMessage() for record in records]
    assert records[0].levelno == logging.INFO and records[0].exc_info is None
    assert "\n" not in records[0].getMessage()
