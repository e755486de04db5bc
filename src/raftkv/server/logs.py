"""Structured logs for `raftkv serve`: one line per event, each naming the node and its term.

Two formats (setting `log_format`):
- `text`: `2026-11-22T08:10:06.537Z INFO node=2 term=3 raftkv.server: published client URL ...`
- `json`: one JSON object per line: `{"time", "level", "node", "term", "logger", "message"}`
  (plus `"error"` with the traceback when an exception is logged), for log shippers.

The node id is known from the settings before the node starts; the term is read from the
running node when the line is written (0 before it starts), through `NodeContext`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

from raftkv.server.native_stderr import NativeStderr

LOG_FORMATS = ("text", "json")


class NodeContext(logging.Filter):
    """Adds `node` and `term` to every record passing through the handler."""

    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.node_id = node_id
        # Returns the running node's current term; replaced once the node exists.
        self.term: Callable[[], int] = lambda: 0

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        try:
            record.term = self.term()
        except Exception:  # a node being torn down must not break logging
            record.term = 0
        return True


def _utc(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_utc(record)} {record.levelname} node={getattr(record, 'node', 0)} "
            f"term={getattr(record, 'term', 0)} {record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": _utc(record),
            "level": record.levelname.lower(),
            "node": getattr(record, "node", 0),
            "term": getattr(record, "term", 0),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class BadRequestLines(logging.Filter):
    """aiohttp logs a request it cannot parse (a header line over 8 KiB, garbage bytes) as
    an ERROR with the parser's traceback, and answers it 400. It is the client's fault and
    says nothing about the server: one INFO line each, at most one a second (the next line
    counts those left out), so a client sending garbage cannot flood the log."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._last = -float("inf")
        self._skipped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        now = self._clock()
        if now - self._last < self._interval_s:
            self._skipped += 1
            return False
        detail = " ".join(str(error).split())[:200]
        skipped = f" ({self._skipped} more since the last line)" if self._skipped else ""
        record.msg, record.args = f"%s: {detail}{skipped}", (record.getMessage(),)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        self._last, self._skipped = now, 0
        return True


def configure_logging(
    level: str, log_format: str, node_id: int, *, native: NativeStderr | None = None
) -> NodeContext:
    """Send every log record to stderr in `log_format` at `level` and above; returns the
    context filter, whose `term` the server points at its node. With `native`, what native
    code writes to descriptor 2 is logged too (see raftkv.server.native_stderr): started
    here, before the handler takes `sys.stderr`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    if native is not None:
        native.start()
    context = NodeContext(node_id)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(context)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # aiohttp's access log is one line per request: too much at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    for old_filter in [f for f in server_log.filters if isinstance(f, BadRequestLines)]:
        server_log.removeFilter(old_filter)
    server_log.addFilter(BadRequestLines())
    return context
