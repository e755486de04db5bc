"""The event loop `raftkv serve` runs on (`ServerSettings.event_loop`).

The standard library's by default. uvloop (libuv's loop: its sockets, timers and callback
queue in C) is the other choice: a node's one loop thread carries the HTTP API, Raft and the
peers, and on uvloop it takes less CPU per request, so it serves more of them; but with
aiohttp on it, a few requests wait up to a second or two when hundreds of clients connect
at once (measured, with an aiohttp server that does nothing else too), which the standard
loop does not do. docs/performance.md has the numbers. Nothing in raftkv depends on which
loop runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["loop_factory"]


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of new event loops of `kind` (setting_values.EVENT_LOOP_KINDS)."""
    if kind == "uvloop":
        import uvloop  # noqa: PLC0415  (loaded only by a node that runs on it)

        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"no event loop {kind!r}: uvloop or asyncio")
