"""Structured log lines of `raftkv serve` (`raftkv.server.logs`)."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from aiohttp.http_exceptions import LineTooLong

from raftkv.server.logs import (
    BadRequestLines,
    JsonFormatter,
    NodeContext,
    TextFormatter,
    configure_logging,
)


def record(message: str = "hello %s", *args: object) -> logging.LogRecord:
    made = logging.LogRecord("raftkv.server", logging.INFO, __file__, 1, message, args, None)
    made.created = 0.25
    made.msecs = 250
    return made


def test_text_and_json_lines_name_the_node_and_its_term() -> None:
    context = NodeContext(7)
    context.term = lambda: 12
    line = record("hello %s", "world")
    assert context.filter(line)
    assert TextFormatter().format(line) == (
        "1970-01-01T00:00:00.250Z INFO node=7 term=12 raftkv.server: hello world"
    )
    assert json.loads(JsonFormatter().format(line)) == {
        "time": "1970-01-01T00:00:00.250Z",
        "level": "info",
        "node": 7,
        "term": 12,
        "logger": "raftkv.server",
        "message": "hello world",
    }


def test_a_failing_term_reader_does_not_break_logging() -> None:
    context = NodeContext(1)

    def broken() -> int:
        raise RuntimeError("node torn down")

    context.term = broken
    line = record()
    assert context.filter(line) and line.term == 0  # type: ignore[attr-defined]


def test_exceptions_are_kept_in_one_json_object() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = record("failed")
        line.exc_info = sys.exc_info()
    document = json.loads(JsonFormatter().format(line))
    assert document["message"] == "failed" and "ValueError: boom" in document["error"]


def test_configure_logging_installs_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        context = configure_logging("warning", "json", 3)
        context.term = lambda: 5
        logging.getLogger("raftkv.test").info("not shown")
        logging.getLogger("raftkv.test").warning("shown")
        lines = capsys.readouterr().err.strip().splitlines()
        assert [json.loads(line)["message"] for line in lines] == ["shown"]
        assert json.loads(lines[0])["node"] == 3 and json.loads(lines[0])["term"] == 5
        with pytest.raises(ValueError, match="log format"):
            configure_logging("info", "xml", 1)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_a_request_aiohttp_cannot_parse_is_one_info_line_at_most_once_a_second() -> None:
    clock = [0.0]
    lines = BadRequestLines(interval_s=1.0, clock=lambda: clock[0])

    def parse_error() -> logging.LogRecord:
        try:
            raise LineTooLong(b"aaaa" * 100, "8190")
        except LineTooLong:
            exc_info = sys.exc_info()
        return logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("127.0.0.1",),
            exc_info,
        )

    first = parse_error()
    assert lines.filter(first)
    assert (first.levelname, first.exc_info) == ("INFO", None)
    assert first.getMessage().startswith("Error handling request from 127.0.0.1: 400")
    assert "\n" not in TextFormatter().format(first)
    assert not lines.filter(parse_error())  # within the second: left out, counted
    clock[0] = 1.5
    later = parse_error()
    assert lines.filter(later)
    assert "(1 more since the last line)" in later.getMessage()
    # Anything else aiohttp logs keeps its level and traceback.
    other = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "boom", (), (ValueError, ValueError(), None)
    )
    assert lines.filter(other) and other.exc_info is not None
