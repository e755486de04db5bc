"""What native code writes to descriptor 2 is logged in raftkv's format (issue 14 item 14):
gRPC's C core lines parsed by level, other lines kept, a flood held to a rate, and a
process's descriptor 2 captured and given back (in a subprocess: pytest owns ours)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from raftkv.server.native_stderr import NativeStderr, parse_native_line

HANDSHAKE = (
    "I1206 15:05:41.241488   15221 ssl_transport_security.cc:2563] Handshake failed with "
    "error SSL_ERROR_SSL: error:1000009c:SSL routines:OPENSSL_internal:HTTP_REQUEST"
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            HANDSHAKE,
            (
                "grpc",
                logging.INFO,
                "Handshake failed with error SSL_ERROR_SSL: error:1000009c:SSL routines:"
                "OPENSSL_internal:HTTP_REQUEST (ssl_transport_security.cc:2563)",
            ),
        ),
        (
            "E0101 00:00:00.000001 7 chttp2_server.cc:1] bind failed",
            ("grpc", logging.ERROR, "bind failed (chttp2_server.cc:1)"),
        ),
        ("W1231 23:59:59.5 1 a.cc:9] careful", ("grpc", logging.WARNING, "careful (a.cc:9)")),
        ("something else entirely", ("stderr", logging.WARNING, "something else entirely")),
    ],
)
def test_a_native_line_is_parsed(line: str, expected: tuple[str, int, str]) -> None:
    assert parse_native_line(line) == expected


def test_a_flood_of_native_lines_is_held_to_a_rate(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    native = NativeStderr(max_lines_per_second=3, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for _ in range(10):
            native.log_line(HANDSHAKE)
        native.log_line("")  # blank lines are not logged
        now[0] += 1.0
        native.log_line(HANDSHAKE)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4
    assert messages[-1].endswith("(7 more lines left out)")
    assert {record.name for record in caplog.records} == {"grpc"}


CHILD = """
import os, sys
from raftkv.server.logs import configure_logging
from raftkv.server.native_stderr import NativeStderr
native = NativeStderr()
configure_logging("info", "json", 7, native=native)
os.write(2, (sys.argv[1] + "\\n").encode())
os.write(2, b"a native line in no known format\\n")
print("python's own stderr", file=sys.stderr)
native.stop()
os.write(2, b"after stop\\n")
"""


def test_descriptor_2_is_logged_as_json_while_captured_and_given_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, HANDSHAKE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stderr.splitlines()
    assert lines[-1] == "after stop"
    documents = [json.loads(line) for line in lines[:-1] if line != "python's own stderr"]
    assert [(d["logger"], d["level"], d["node"]) for d in documents] == [
        ("grpc", "info", 7),
        ("stderr", "warning", 7),
    ]
    assert documents[0]["message"].startswith("Handshake failed with error SSL_ERROR_SSL")
    assert "python's own stderr" in lines
