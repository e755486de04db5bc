"""Structured log lines of `raftkv serve` (`raftkv.server.logs`)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from raftkv.server.logs import JsonFormatter, NodeContext, TextFormatter, configure_logging


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
