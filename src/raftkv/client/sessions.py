"""Session lanes: exactly-once bookkeeping that concurrent writes cannot break.

The server keeps, per client id, only the LAST sequence applied and its result (Raft thesis
§6.3): a repeat of that sequence gets the stored result, an older one is refused as stale
(409), a newer one is applied. One client id with one counter would break under
concurrency: writes 7 and 8 sent at once may apply 8 first, and then 7, or a retry of 7,
is refused as stale.

So each write takes a lane for its whole call, retries included, and gives it back after:
a lane is a client id of its own ("<base>-<lane number>") with its own counter, and holds
at most one write at a time, so its sequences reach the server in order. A write that
ended with an unknown outcome has used its number; if that request still arrives after
the lane's next write applied, the server refuses it as stale instead of applying it late.

Lanes are created on demand up to `max_concurrent_writes`; the lowest free lane is taken
first, so the server keeps as few sessions as the client's peak concurrency needs.

The server keeps a bounded number of sessions (KvSettings.max_exactly_once_clients) and
forgets the one whose last write is oldest; it refuses a later sequence of a forgotten
session (`session_expired`). A lane refused that way on a call's first attempt is renewed
(`renew`: a new client id, numbering from 1) and the write sent again: nothing was applied.
Limit: a lane's FIRST write (sequence 1), retried after its session was forgotten within
the same call, applies again; that needs `max_exactly_once_clients` other sessions to
write within one call's deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from raftkv.client.protocol import Session

__all__ = ["AsyncSessions", "LanePool", "ThreadSessions"]


class _Lane:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        # The last sequence handed out (0: none); each write gets the next one.
        self.sequence = 0
        # How many times the lane was started afresh (renew): part of its client id.
        self.generation = 0


class LanePool:
    """The lanes and which are free; the caller guarantees a free slot (a semaphore of
    `size`) and serializes calls (one event loop, or a lock)."""

    def __init__(self, base_id: str, size: int) -> None:
        self.base_id = base_id
        self.size = size
        self._lanes: list[_Lane] = []
        # Numbers of lanes created and not taken (a min-heap: lowest first).
        self._free: list[int] = []

    def take(self) -> tuple[int, Session]:
        """A free lane's number and the session for the write it will carry."""
        if self._free:
            number = heapq.heappop(self._free)
        else:
            number = len(self._lanes)
            if number >= self.size:
                raise RuntimeError(f"more than {self.size} lanes taken at once")
            self._lanes.append(_Lane(f"{self.base_id}-{number}"))
        lane = self._lanes[number]
        lane.sequence += 1
        return number, Session(lane.client_id, lane.sequence)

    def renew(self, session: Session) -> Session:
        """Start the (taken) lane of `session` afresh, after the server refused it as
        expired: a new client id, so its writes number from 1 again."""
        number = next(
            index for index, lane in enumerate(self._lanes) if lane.client_id == session.client_id
        )
        lane = self._lanes[number]
        lane.generation += 1
        lane.client_id = f"{self.base_id}-{number}.{lane.generation}"
        lane.sequence = 1
        return Session(lane.client_id, lane.sequence)

    def give_back(self, number: int) -> None:
        heapq.heappush(self._free, number)

    def lanes_created(self) -> int:
        return len(self._lanes)


class AsyncSessions:
    """Lanes for one event loop's tasks."""

    def __init__(self, base_id: str, size: int) -> None:
        self.pool = LanePool(base_id, size)
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A session for one write call; its lane is busy until the block exits."""
        async with self._slots:
            number, session = self.pool.take()
            try:
                yield session
            finally:
                self.pool.give_back(number)

    def renew(self, session: Session) -> Session:
        return self.pool.renew(session)


class ThreadSessions:
    """Lanes for threads."""

    def __init__(self, base_id: str, size: int) -> None:
        self.pool = LanePool(base_id, size)
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._slots:
            with self._lock:
                number, session = self.pool.take()
            try:
                yield session
            finally:
                with self._lock:
                    self.pool.give_back(number)

    def renew(self, session: Session) -> Session:
        with self._lock:
            return self.pool.renew(session)
