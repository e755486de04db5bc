"""`Reconnect`: what happens to one peer's outgoing stream when it fails and when it works
again, shared by the transports' senders: the report, the dropped queue, the log lines
and the backoff.

When a stream fails the sender gives it up (`give_up`): the peer is reported unreachable
once, what was queued for it is dropped (Raft retransmits what matters), one rate-limited
warning says why, and the sender rests. After the n-th consecutive failure the rest is
uniform(0, min(max, initial * 2**n)) ("full jitter": peers that failed together do not
retry together). Hearing from the peer (a frame it sent us) proves it is up: the count
starts over and a rest in progress ends, so a follower restarted after a long outage is
redialled as soon as it speaks, not when a backoff grown while it was down runs out. The
first write that succeeds after a failure says the peer is reachable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from random import Random
from typing import Final

from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport.log_limiter import LogLimiter, suppressed_note
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats

__all__ = ["Reconnect"]

# Hearing from a peer ends a rest, but no sooner than this after the rest began: a peer
# that reaches us while we cannot reach it (a one-way partition, an address that changed)
# is redialled at most this often, not at the rate it sends.
_MIN_REST_SECONDS: Final = 0.05


class Reconnect:
    """Invariant: `failures` counts the stream failures since the last success or the
    last time the peer was heard from; `heard` is set only while a rest may end early;
    `unreachable` is whether the last stream failed and no write has succeeded since."""

    def __init__(
        self,
        settings: PeerTransportSettings,
        rng: Random,
        *,
        stats: PeerTransportStats,
        report_unreachable: Callable[[NodeId], None],
        log: logging.Logger,
        peer: NodeId,
        address: str,
    ) -> None:
        self._settings = settings
        self._rng = rng
        self._stats = stats
        self._report_unreachable = report_unreachable
        self._log = log
        self._peer = peer
        self._address = address
        self._log_limiter = LogLimiter()
        self.failures = 0
        self.unreachable = False
        # Set by heard_from while failures > 0: ends the rest.
        self.heard = asyncio.Event()

    def succeeded(self) -> None:
        """A write to the peer succeeded."""
        if self.unreachable:
            self._log.info("peer %d at %s is reachable again", self._peer, self._address)
            self.unreachable = False
        self.failures = 0

    def heard_from(self) -> None:
        if self.failures:
            self.failures = 0
            self.heard.set()

    async def give_up(self, queue: deque[Message], reason: str) -> None:
        """The stream failed (`reason`, for the log; the caller has closed it): report the
        peer once, drop `queue`, say so, and rest before the next attempt."""
        dropped = len(queue)
        queue.clear()
        stats = self._stats
        stats.messages_dropped += dropped
        stats.stream_failures += 1
        self._report_unreachable(self._peer)
        delay = self._next_delay()
        self.unreachable = True
        suppressed = self._log_limiter.allow("failure")
        if suppressed is not None:
            self._log.warning(
                "peer %d at %s unreachable: %s; dropped %d queued messages; retrying in %.2fs%s",
                self._peer,
                self._address,
                reason,
                dropped,
                delay,
                suppressed_note(suppressed),
            )
        await self._rest(delay)

    def _next_delay(self) -> float:
        """Count a failure; the rest before the next attempt."""
        settings = self._settings
        ceiling = min(
            settings.reconnect_backoff_max_seconds,
            settings.reconnect_backoff_initial_seconds * 2 ** min(self.failures, 32),
        )
        self.failures += 1
        self.heard.clear()
        return self._rng.uniform(0, ceiling)

    async def _rest(self, delay: float) -> None:
        """Wait `delay` seconds, or until the peer is heard from, but at least
        _MIN_REST_SECONDS (or `delay` if shorter)."""
        floor = min(delay, _MIN_REST_SECONDS)
        await asyncio.sleep(floor)
        if self.heard.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay - floor):
                await self.heard.wait()
