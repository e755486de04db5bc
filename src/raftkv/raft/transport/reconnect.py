"""`Reconnect`: the backoff of one peer's outgoing stream, shared by the transports.

After the n-th consecutive failure a sender rests uniform(0, min(max, initial * 2**n))
("full jitter": peers that failed together do not retry together). Hearing from the peer
(a frame it sent us) proves it is up: the count starts over and a rest in progress ends,
so a follower restarted after a long outage is redialled as soon as it speaks, not when a
backoff grown while it was down runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from random import Random
from typing import Final

from raftkv.raft.transport.settings import PeerTransportSettings

__all__ = ["Reconnect"]

# Hearing from a peer ends a rest, but no sooner than this after the rest began: a peer
# that reaches us while we cannot reach it (a one-way partition, an address that changed)
# is redialled at most this often, not at the rate it sends.
_MIN_REST_SECONDS: Final = 0.05


class Reconnect:
    """Invariant: `failures` counts the stream failures since the last success or the
    last time the peer was heard from; `heard` is set only while a rest may end early."""

    def __init__(self, settings: PeerTransportSettings, rng: Random) -> None:
        self._settings = settings
        self._rng = rng
        self.failures = 0
        # Set by heard_from while failures > 0: ends the rest.
        self.heard = asyncio.Event()

    def succeeded(self) -> None:
        self.failures = 0

    def heard_from(self) -> None:
        if self.failures:
            self.failures = 0
            self.heard.set()

    def next_delay(self) -> float:
        """Count a failure; the rest before the next attempt."""
        settings = self._settings
        ceiling = min(
            settings.reconnect_backoff_max_seconds,
            settings.reconnect_backoff_initial_seconds * 2 ** min(self.failures, 32),
        )
        self.failures += 1
        self.heard.clear()
        return self._rng.uniform(0, ceiling)

    async def rest(self, delay: float) -> None:
        """Wait `delay` seconds, or until the peer is heard from, but at least
        _MIN_REST_SECONDS (or `delay` if shorter)."""
        floor = min(delay, _MIN_REST_SECONDS)
        await asyncio.sleep(floor)
        if self.heard.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay - floor):
                await self.heard.wait()
