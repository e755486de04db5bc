"""`LeaseTimers`: each lease's countdown on this node's monotonic clock.

Every node keeps one, fed by the state machine as it applies lease entries: a grant, a
keep-alive or a checkpoint sets the lease's deadline to `now + remaining` where `now` is
when this node applies the entry; a revoke or an expiry removes it. Opening the store (a
restart, a snapshot restore) starts every lease's countdown afresh from its stored
remaining time.

Why this is safe (the guarantee in docs/http-api.md#lease-guarantee): a node applies an
entry no earlier than the entry was committed, and a client's keep-alive is committed after the
client sent it. So on every node the deadline of a lease is at least `sent + TTL` for the
last keep-alive the client sent: whichever node leads, it never expires a lease earlier
than the TTL after a keep-alive that was applied. A node that was running all along has a
deadline later than the true one by only its apply delay; a node that restarted starts
from the last checkpoint, so it may grant up to one checkpoint interval (plus its
downtime, if the whole cluster was down) of extra life — bounded, never "full TTL again
on every leader change".

Only differences of `now()` matter, so a ManualClock drives it in tests. Memory: one dict
entry and (until it is stale) one heap entry per lease.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LeaseTimer:
    deadline: float
    ttl: int
    # The log index of the lease's grant or last keep-alive: a LeaseExpire must name it.
    renewed_index: int


class LeaseTimers:
    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self._timers: dict[int, LeaseTimer] = {}
        # (deadline, lease id): a min-heap with stale entries left in it; an entry is
        # current iff the lease's timer has that deadline.
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._timers

    def set(self, lease_id: int, remaining_ms: int, ttl: int, renewed_index: int) -> None:
        deadline = self.now() + remaining_ms / 1000
        previous = self._timers.get(lease_id)
        self._timers[lease_id] = LeaseTimer(deadline, ttl, renewed_index)
        # Invariant: at most one heap entry per (deadline, lease): a renewal that computes
        # the deadline already in the heap must not add a second entry, or expired() would
        # see the lease twice.
        if previous is None or previous.deadline != deadline:
            heapq.heappush(self._heap, (deadline, lease_id))
        self._compact_heap()

    def remove(self, lease_id: int) -> None:
        self._timers.pop(lease_id, None)

    def clear(self) -> None:
        self._timers.clear()
        self._heap.clear()

    def get(self, lease_id: int) -> LeaseTimer | None:
        return self._timers.get(lease_id)

    def remaining_s(self, lease_id: int) -> float | None:
        """Seconds until this node's deadline for the lease (>= 0), None if unknown."""
        timer = self._timers.get(lease_id)
        return None if timer is None else max(0.0, timer.deadline - self.now())

    def remaining_whole_s(self, lease_id: int) -> int | None:
        remaining = self.remaining_s(lease_id)
        return None if remaining is None else math.floor(remaining)

    def expired(self, limit: int) -> list[tuple[int, LeaseTimer]]:
        """Up to `limit` leases whose deadline has passed, earliest first (they stay until
        their expiry is applied and `remove`d)."""
        now = self.now()
        found: list[tuple[int, LeaseTimer]] = []
        stale: list[tuple[float, int]] = []
        seen: set[int] = set()
        while self._heap and self._heap[0][0] <= now and len(found) < limit:
            deadline, lease_id = heapq.heappop(self._heap)
            timer = self._timers.get(lease_id)
            if timer is None or timer.deadline != deadline or lease_id in seen:
                continue  # stale (renewed or removed since) or a duplicate entry
            seen.add(lease_id)
            found.append((lease_id, timer))
            stale.append((deadline, lease_id))
        # Still live until the expiry applies: keep them findable.
        for entry in stale:
            heapq.heappush(self._heap, entry)
        return found

    def remaining_all_ms(self) -> list[tuple[int, int, int]]:
        """(lease id, ms left, renewed_index) of every lease: what a checkpoint records."""
        now = self.now()
        return [
            (lease_id, max(0, int((timer.deadline - now) * 1000)), timer.renewed_index)
            for lease_id, timer in self._timers.items()
        ]

    def _compact_heap(self) -> None:
        # Stale entries pile up with renewals; rebuild when they are most of the heap.
        if len(self._heap) > 2 * len(self._timers) + 64:
            self._heap = [(timer.deadline, lease_id) for lease_id, timer in self._timers.items()]
            heapq.heapify(self._heap)
