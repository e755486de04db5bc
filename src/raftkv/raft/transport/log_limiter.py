"""Rate-limited log lines: what a misbehaving or unreachable peer makes the transport say,
at most once per interval per key, with a count of what was suppressed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

__all__ = ["LogLimiter", "suppressed_note"]

# Repeated log lines about one peer (or one remote host) are written at most this often;
# the next line says how many were suppressed.
_LOG_INTERVAL_SECONDS: Final = 10.0
# The rate limiter forgets everything past this many keys, so a flood of distinct remote
# addresses cannot grow it without bound.
_LOG_LIMITER_MAX_KEYS: Final = 1024


def suppressed_note(suppressed: int) -> str:
    """The end of a log line that `LogLimiter.allow` let through after `suppressed` others."""
    return f" ({suppressed} similar lines suppressed)" if suppressed else ""


@dataclass(slots=True)
class LogLimiter:
    """Allows one log line per key per _LOG_INTERVAL_SECONDS and counts the rest."""

    _next_allowed: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str) -> int | None:
        """None to stay quiet, else how many lines for `key` were suppressed since the last."""
        now = time.monotonic()
        if now < self._next_allowed.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._next_allowed) >= _LOG_LIMITER_MAX_KEYS:
            self._next_allowed.clear()
            self._suppressed.clear()
        self._next_allowed[key] = now + _LOG_INTERVAL_SECONDS
        return self._suppressed.pop(key, 0)
