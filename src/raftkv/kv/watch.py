"""Watches: ordered, gap-free change streams over a key range, resumable by revision.

Theory of operation (etcd's watch guarantees, ARCHITECTURE.md §2.5):
- A `Watch` pulls: it keeps the next revision it has to deliver and reads the events of
  revisions up to the store's current one from the history (`EventReader`), filters them,
  and hands them out whole revisions at a time. Nothing is pushed into per-watch buffers,
  so a slow watcher costs no memory: it just stays behind, reading from the history.
- The state machine calls `WatchHub.notify()` after each applied batch: it wakes the
  watches waiting for a new revision and does nothing else, so watch delivery never
  blocks the apply path.
- Guarantees that follow: events come in revision order; each revision once (the watch's
  next revision only moves forward, past what it handed out); all events of a revision
  together (a batch always ends on a revision boundary); no gaps within retained history
  (every revision from start to current is read); resumable from any revision above the
  compacted one.
- A watch whose next revision has been compacted away ends with `WatchCanceled("compacted")`
  carrying the oldest revision still available; a watch that would otherwise fall behind
  forever (its reader does not keep up) therefore ends this way rather than drop events.
  The HTTP layer also ends a watch whose writes block longer than a bound ("too_slow").
- `WatchHub.close()` (the node stopping) ends every watch with "stopping": its client
  resumes on another member from the last revision it saw.

Recent revisions are cached (bounded by revisions and bytes) so that many watchers of a
busy store read each revision's history once between them, not once each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.kv.commands import in_range
from raftkv.kv.events import Event, EventReader, RevisionEvents
from raftkv.raft.driver.clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class WatchSettings:
    # Watches served at once by one node; more are refused (each is an open connection).
    max_watches: int = 10_000
    # At most about this many events per message (a revision is never split, so one large
    # txn can exceed it).
    max_events_per_message: int = 1000
    # The shared cache of recent revisions' events.
    cache_revisions: int = 4096
    cache_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        for name in ("max_watches", "max_events_per_message", "cache_revisions", "cache_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"WatchSettings.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """What to watch: the key range (etcd convention: range_end b"" one key, b"\\0" every
    key >= key), whether to add previous values, and which event types to leave out."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False

    def matches(self, event: Event) -> bool:
        if event.type == "put" and self.no_put:
            return False
        if event.type == "delete" and self.no_delete:
            return False
        return in_range(event.kv.key, self.key, self.range_end)


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events of whole revisions; `revision` is the watermark: every matching event at or
    below it has been handed out."""

    revision: int
    events: list[Event]


@dataclass(frozen=True, slots=True)
class WatchProgress:
    revision: int


@dataclass(frozen=True, slots=True)
class WatchCanceled:
    revision: int
    code: str
    message: str
    compact_revision: int | None = None

    @property
    def oldest_revision(self) -> int | None:
        return None if self.compact_revision is None else self.compact_revision + 1


WatchOutcome = WatchBatch | WatchProgress | WatchCanceled


class TooManyWatches(Exception):
    code = "too_many_watches"


class WatchHub:
    """Shared by every watch of one node: wake-ups, the recent-revision cache, limits."""

    def __init__(
        self,
        reader: EventReader,
        current_revision: Callable[[], int],
        compacted_revision: Callable[[], int],
        settings: WatchSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.reader = reader
        self.current_revision = current_revision
        self.compacted_revision = compacted_revision
        self.settings = settings if settings is not None else WatchSettings()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.active = 0
        self.closed = False
        self._changed: asyncio.Future[None] | None = None
        # Invariant: the cache holds consecutive revisions, oldest first, all of them
        # applied; `_cache_bytes` is the sum of their sizes.
        self._cache: deque[RevisionEvents] = deque()
        self._cache_bytes = 0

    # -- called by the state machine (must stay O(1)) ---------------------------------------

    def notify(self) -> None:
        """New revisions may have been applied: wake the watches waiting for them."""
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def reset(self) -> None:
        """The state was replaced (snapshot restore): forget cached events."""
        self._cache.clear()
        self._cache_bytes = 0
        self.notify()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """End every watch (with "stopping") and refuse new ones."""
        self.closed = True
        self.notify()

    def open(self, spec: WatchSpec, start_revision: int) -> Watch:
        """A new watch from `start_revision` (0: the next revision). TooManyWatches beyond
        max_watches; the caller checks compaction (see `Watch.check_start`)."""
        if self.active >= self.settings.max_watches:
            raise TooManyWatches(
                f"{self.active} watches on this node (max_watches="
                f"{self.settings.max_watches}); watch through another member"
            )
        self.active += 1
        start = start_revision or self.current_revision() + 1
        return Watch(self, spec, start)

    # -- reading --------------------------------------------------------------------------

    async def wait_for_change(self, timeout: float | None) -> None:
        """Until `notify()` or `timeout` seconds on the hub's clock (None: no bound)."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        changed = asyncio.shield(self._changed)
        if timeout is None:
            await changed
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait([changed, sleeper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sleeper

    def read(self, start: int, end: int, max_events: int) -> list[RevisionEvents]:
        """The events of revisions start.. at most `end`, whole revisions, stopping once
        `max_events` are gathered (at least one revision when start <= end)."""
        result: list[RevisionEvents] = []
        gathered = 0
        revision = start
        if self._cache and self._cache[0].revision <= revision <= self._cache[-1].revision:
            offset = revision - self._cache[0].revision
            for index in range(offset, len(self._cache)):
                item = self._cache[index]
                if item.revision > end or (result and gathered >= max_events):
                    return result
                result.append(item)
                gathered += len(item.events)
                revision = item.revision + 1
        if revision > end or (result and gathered >= max_events):
            return result
        # Revisions past the cache's end go into it (starting it afresh if there is a gap:
        # the watchers have moved on); older ones, a lagging watcher's, do not displace it.
        extends_cache = not self._cache or self._cache[-1].revision < revision
        for item in self.reader.revisions(revision, end):
            result.append(item)
            gathered += len(item.events)
            if extends_cache:
                self._remember(item)
            if gathered >= max_events:
                break
        return result

    def _remember(self, item: RevisionEvents) -> None:
        if self._cache and self._cache[-1].revision + 1 != item.revision:
            self._cache.clear()
            self._cache_bytes = 0
        self._cache.append(item)
        self._cache_bytes += item.size()
        settings = self.settings
        while self._cache and (
            len(self._cache) > settings.cache_revisions or self._cache_bytes > settings.cache_bytes
        ):
            self._cache_bytes -= self._cache.popleft().size()

    def _released(self) -> None:
        self.active -= 1


@dataclass(slots=True)
class Watch:
    """One watch's position (see the module docstring). Use `next()` until it returns a
    WatchCanceled, then (or whenever the client goes away) `release()`."""

    hub: WatchHub
    spec: WatchSpec
    # Invariant: every matching event below it has been handed out, none at or above.
    next_revision: int
    released: bool = field(default=False)

    @property
    def watermark(self) -> int:
        return self.next_revision - 1

    def check_start(self) -> WatchCanceled | None:
        """A WatchCanceled("compacted") if the start revision is already compacted."""
        compacted = self.hub.compacted_revision()
        if self.next_revision <= compacted:
            return _compacted(self.watermark, self.next_revision, compacted)
        return None

    async def next(self, progress_interval: float | None = None) -> WatchOutcome:
        """The next batch of matching events; a WatchProgress if `progress_interval`
        seconds pass with none; a WatchCanceled when the watch is over."""
        hub = self.hub
        deadline = None if progress_interval is None else hub.clock.now() + progress_interval
        while True:
            if hub.closed:
                return WatchCanceled(
                    self.watermark, "stopping", "the node is stopping; resume on another member"
                )
            current = hub.current_revision()
            if self.next_revision <= current:
                compacted = hub.compacted_revision()
                if self.next_revision <= compacted:
                    return _compacted(self.watermark, self.next_revision, compacted)
                batch = hub.read(self.next_revision, current, hub.settings.max_events_per_message)
                # Empty only when no revision up to `current` changed anything: revision 1
                # of a fresh store (the first write makes revision 2).
                self.next_revision = batch[-1].revision + 1 if batch else current + 1
                events = self._matching(batch)
                if events:
                    return WatchBatch(self.watermark, events)
                if deadline is not None and hub.clock.now() >= deadline:
                    return self._progress()
                # Nothing matched: let other tasks run before reading on.
                await asyncio.sleep(0)
                continue
            if deadline is not None:
                remaining = deadline - hub.clock.now()
                if remaining <= 0:
                    return self._progress()
                await hub.wait_for_change(remaining)
            else:
                await hub.wait_for_change(None)

    def _progress(self) -> WatchProgress:
        # A watch started beyond the store's revision has a watermark the store has not
        # reached; a bookmark names only revisions the store has (a client may read at it).
        # Still a watermark: nothing at or below the store's revision matches unsent.
        return WatchProgress(min(self.watermark, self.hub.current_revision()))

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.hub._released()

    def _matching(self, batch: list[RevisionEvents]) -> list[Event]:
        spec = self.spec
        events: list[Event] = []
        for item in batch:
            for event in item.events:
                if not spec.matches(event):
                    continue
                if spec.prev_kv:
                    previous = self.hub.reader.previous(event.kv.key, item.revision)
                    events.append(Event(event.type, event.kv, previous))
                else:
                    events.append(event)
        return events


def _compacted(watermark: int, wanted: int, compacted: int) -> WatchCanceled:
    return WatchCanceled(
        watermark,
        "compacted",
        f"revision {wanted} is compacted (history starts after revision {compacted}); "
        f"watch from revision {compacted + 1} or later, after reading the current state",
        compact_revision=compacted,
    )
