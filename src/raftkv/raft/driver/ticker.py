"""`Ticker`: the node's clock turned into the core's ticks.

Its task (`run`) counts the ticks due; the node's loop takes them (`take`) and ticks the
core that many times. Invariants:
- one tick per `tick_interval_s` of the node's clock, from `start` on;
- with lease reads on (`NodeSettings.lease_reads`), a stall (a long apply or snapshot, a
  GC pause) does not stretch the core's notion of time: a leader's lease is counted in
  ticks, so every tick missed while stalled is delivered afterwards, capped at two
  election timeouts (enough to expire any lease or timeout). The loop steps the messages
  that did arrive during the stall before these ticks, so they count first;
- with lease reads off (the default), no safety rests on ticks, and a stall is time that
  did not pass for the core: at most one tick is pending. A member is then judged by the
  time it ran. Delivered whole, a stall every member shares (one big entry, applied on
  every loop at once) made the leader fail its quorum check at once, with no message
  from its stalled followers since, and the followers campaign: an election for nothing.
  A leader that really lost its quorum during the stall still steps down one election
  timeout later, and a stalled follower whose leader died campaigns one timeout later;
- at most that cap of ticks is ever pending.
"""

from __future__ import annotations

from collections.abc import Callable

from raftkv.raft.clock import Clock
from raftkv.raft.driver.settings import NodeSettings


class Ticker:
    def __init__(self, *, clock: Clock, settings: NodeSettings, wake: Callable[[], None]) -> None:
        """`wake` tells the node's loop ticks are due."""
        self._clock = clock
        self._interval_s = settings.tick_interval_s
        self._burst_limit = 2 * settings.election_ticks if settings.lease_reads else 1
        self._wake = wake
        # Ticks due and not taken yet; when (the node's clock) the next one is due.
        self._pending = 0
        self._next_tick = 0.0

    def start(self) -> None:
        """The first tick is due one interval from now."""
        self._next_tick = self._clock.now() + self._interval_s

    async def run(self) -> None:
        """Count the ticks as they fall due, until cancelled."""
        clock, interval = self._clock, self._interval_s
        while True:
            await clock.sleep(self._next_tick - clock.now())
            missed = int((clock.now() - self._next_tick) // interval) + 1
            self._next_tick += missed * interval
            self._pending = min(self._pending + missed, self._burst_limit)
            self._wake()

    def take(self) -> int:
        """The ticks due since the last take."""
        ticks, self._pending = self._pending, 0
        return ticks
