"""`NativeStderr`: what native code (gRPC's C core above all) writes to the process's
standard error, turned into log records, so every line `raftkv serve` prints is in its
`log_format` (issue 14 item 14).

gRPC's C core logs TLS handshake failures and the like itself, straight to file descriptor
2, in its own format: `I1206 15:05:41.241488   15221 ssl_transport_security.cc:2563]
Handshake failed ...`. `NativeStderr.start()` points descriptor 2 at a pipe and gives
Python's `sys.stderr` a duplicate of the real standard error (so the log handler, created
after it, writes there); a daemon thread reads the pipe a line at a time and logs each
line to the `grpc` logger at the level its first letter names (I info, W warning, E and F
error), or a line in no known format to the `stderr` logger at WARNING.

Invariants:
- the thread drains the pipe until it is closed, whatever a line holds: native code that
  writes to a full pipe would block;
- at most `max_lines_per_second` lines a second are logged (a port scanner makes a
  handshake failure per connection); the next line logged says how many were left out;
- `stop()` puts descriptor 2 and `sys.stderr` back and logs what was still in the pipe.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

__all__ = ["NativeStderr", "parse_native_line"]

# gRPC's C core (absl) format: level letter, MMDD, time, thread id, file:line] message.
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.ERROR}
# The longest line logged; the rest of a longer one is cut (and said to be).
_MAX_LINE_CHARS = 2000


def parse_native_line(line: str) -> tuple[str, int, str]:
    """The logger name, level and message of one line of native standard error."""
    match = _NATIVE_LINE.match(line)
    if match is None:
        return "stderr", logging.WARNING, line
    letter, where, message = match.groups()
    return "grpc", _LEVELS[letter], f"{message} ({where})"


class NativeStderr:
    def __init__(
        self,
        *,
        max_lines_per_second: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_lines_per_second = max_lines_per_second
        self._clock = clock
        self._saved_fd: int | None = None
        self._saved_stderr: IO[str] | None = None
        self._thread: threading.Thread | None = None
        self._window_start = -float("inf")
        self._in_window = 0
        self._skipped = 0

    def start(self) -> None:
        """From now on descriptor 2 goes through the pipe; `sys.stderr` to the real one."""
        if self._thread is not None:
            return
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._saved_stderr = sys.stderr
        sys.stderr = open(  # noqa: SIM115 -- lives as long as the process serves
            self._saved_fd,
            "w",
            buffering=1,
            encoding="utf-8",
            errors="backslashreplace",
            closefd=False,
        )
        self._thread = threading.Thread(
            target=self._drain, args=(read_end,), name="native-stderr", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Descriptor 2 back to the real standard error; the pipe's last lines logged."""
        if self._thread is None or self._saved_fd is None:
            return
        os.dup2(self._saved_fd, 2)  # closes the pipe's only write end: the thread ends
        self._thread.join(timeout_s)
        sys.stderr.flush()
        if self._saved_stderr is not None:
            sys.stderr = self._saved_stderr
        os.close(self._saved_fd)
        self._thread = self._saved_fd = self._saved_stderr = None

    def _drain(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                try:
                    self.log_line(raw.decode("utf-8", "backslashreplace").rstrip("\r\n"))
                except Exception:  # never stop draining: see the invariants
                    continue

    def log_line(self, line: str) -> None:
        """Log one line of native standard error, within the rate limit."""
        if not line.strip():
            return
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.max_lines_per_second:
            self._skipped += 1
            return
        self._in_window += 1
        name, level, message = parse_native_line(line)
        if len(message) > _MAX_LINE_CHARS:
            message = message[:_MAX_LINE_CHARS] + " (cut)"
        if self._skipped:
            message += f" ({self._skipped} more lines left out)"
            self._skipped = 0
        logging.getLogger(name).log(level, "%s", message)
