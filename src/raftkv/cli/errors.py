"""How a verb fails: one line on stderr, `raftkv: <code>: <message>`, and the exit code.

The exit codes themselves are `raftkv.cli`'s (EXIT_USAGE, EXIT_REFUSED, ...). A verb
either returns `fail(...)` or raises `UsageError`, which the verb runner
(`raftkv.cli.running`) turns into the same line with EXIT_USAGE.
"""

from __future__ import annotations

import sys

__all__ = ["UsageError", "fail"]


class UsageError(Exception):
    """A mistake in the command line or its input, found before or after the call."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fail(exit_code: int, error_code: str, message: str) -> int:
    """Print the error line (the message on one line, whatever it held) and return
    `exit_code`, for the verb to return."""
    print(f"raftkv: {error_code}: {' '.join(message.split())}", file=sys.stderr)
    return exit_code
