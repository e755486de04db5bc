"""The event trace of one run: a running hash, and optionally the lines themselves.

Two runs of the same seed must produce the same trace hash; a different hash means some
nondeterminism leaked in (wall clock, global random, set iteration over str, ...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

__all__ = ["Trace"]


class Trace:
    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        self._hash = hashlib.sha256()
        self._sink = sink
        self.lines = 0

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    def event(self, line: str) -> None:
        self.lines += 1
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if self._sink is not None:
            self._sink(line)

    def note(self, line: str) -> None:
        """A line for the reader only (status lines): printed, not hashed."""
        if self._sink is not None:
            self._sink(line)

    def digest(self) -> str:
        return self._hash.hexdigest()[:16]
