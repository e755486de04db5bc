"""Watches: ordered, gap-free change streams over a key range, resumable by revision.

Theory of operation (etcd's watch guarantees, docs/architecture.md#watches):
- A `Watch` pulls: it keeps the next revision it has to deliver and reads the events of
  revisions up to the store's current one from the history (`EventReader`), filters them,
  and hands them out whole revisions at a time. Nothing is pushed into per-watch buffers:
  a watcher that stays behind costs no memory, it reads from the history when it asks.
- The state machine calls `WatchHub.notify()` after each applied batch: it wakes the
  watches waiting for a new revision and does nothing else, so watch delivery never
  blocks the apply path.
- Guarantees that follow: events come in revision order; each revision once (the watch's
  next revision only moves forward, past what it handed out); all events of a revision
  together (a batch always ends on a revision boundary); no gaps within retained history
  (every revision from start to current is read); resumable from any revision above the
  compacted one. Of the compacted revision itself the store keeps only the puts (the
  deletes' tombstones are compacted away): a watch whose spec says
  `from_compaction_revision` (etcd's API: etcd's rule) may start there and gets those,
  so one that reaches it only after the compaction misses the deletes made at it; any
  other watch (raftkv's own API) is ended as compacted there, and misses nothing.
- A watch whose next revision has been compacted away ends with `WatchCanceled("compacted")`
  carrying the compacted revision and the oldest one it can start from (the one after it,
  or with `from_compaction_revision` `MvccStore.oldest_watch_revision`: the compacted
  revision itself, but on a store compacted by an older raftkv); a watch that would
  otherwise fall behind forever (its reader does not keep up) therefore ends this way
  rather than drop events.
  The HTTP layer also ends a watch whose writes block longer than a bound ("too_slow").
- Byte budgets. What a watch has handed out and its consumer has not yet written (the
  last batch, until the next `next()` or `written()`) is *buffered*: the bytes of its
  events' keys, values and previous values. A batch is cut (at a revision boundary) to
  fit `max_buffered_bytes`; a single revision larger than that is handed out alone, as a
  revision is never split. The hub keeps the sum over its watches under
  `max_total_buffered_bytes`: when a batch would take it over, the watch buffering the
  most (the oldest, among equals) is ended with "too_slow" at once, its bytes forgotten,
  and its consumer told through `Watch.ended()`. A "too_slow" watch resumes elsewhere, or
  here, from its watermark: nothing is lost, only the memory its slow client held.
- `WatchHub.close()` ends every watch with a reason ("stopping": the node is stopping;
  "removed": it was removed from the cluster): its client resumes on another member from
  the last revision it saw.

Recent revisions are cached (bounded by revisions and bytes) so that many watchers of a
busy store read each revision's history once between them, not once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.kv.commands import MvccKeyValue, in_range
from raftkv.kv.events import Event, EventReader, RevisionEvents
from raftkv.raft.clock import Clock, SystemClock


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
    # The bytes (keys, values and previous values of events) one watch may hold between
    # handing them out and its consumer writing them: a message is cut to fit (a single
    # larger revision goes alone). Larger: fewer, bigger messages and faster catch-up;
    # smaller: less memory per watcher whose client is slow.
    max_buffered_bytes: int = 16 << 20
    # The same summed over every watch of the node; past it the watch buffering the most
    # is ended "too_slow". The memory ceiling of watch fan-out (the process holds about
    # twice this: each message also sits, encoded, in its connection's buffer). Too low
    # for a node's fan-out (watchers x message size) ends healthy watchers during bursts
    # (they resume, at the cost of a reconnection and a re-read).
    max_total_buffered_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        for name in (
            "max_watches",
            "max_events_per_message",
            "cache_revisions",
            "cache_bytes",
            "max_buffered_bytes",
            "max_total_buffered_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"WatchSettings.{name} must be a positive integer, got {value!r}")
        if self.max_total_buffered_bytes < self.max_buffered_bytes:
            raise ValueError(
                "WatchSettings.max_total_buffered_bytes must be at least max_buffered_bytes "
                f"({self.max_total_buffered_bytes} < {self.max_buffered_bytes})"
            )


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """What to watch: the key range (etcd convention: range_end b"" one key, b"\\0" every
    key >= key), whether to add previous values, and which event types to leave out."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    # etcd's rule (its API sets it): a watch may start at the compaction revision itself
    # and gets the puts compaction kept there, not the deletes made at it. Without it (raftkv's
    # own API) a watch starts after the compaction revision: nothing is ever skipped.
    from_compaction_revision: bool = False

    def matches(self, event: Event) -> bool:
        if event.type == "put" and self.no_put:
            return False
        if event.type == "delete" and self.no_delete:
            return False
        return in_range(event.kv.key, self.key, self.range_end)


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events of whole revisions; `revision` is the watermark: every matching event at or
    below it has been handed out. `buffered_bytes`: what it counts against the byte
    budgets (bookkeeping, not part of its value)."""

    revision: int
    events: list[Event]
    buffered_bytes: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class WatchProgress:
    revision: int


@dataclass(frozen=True, slots=True)
class WatchCanceled:
    """The watch is over; `revision` is its watermark. "compacted" carries the compacted
    revision and the oldest revision a watch can start from (see the module docstring)."""

    revision: int
    code: str
    message: str
    compact_revision: int | None = None
    oldest_revision: int | None = None


WatchOutcome = EventBatch | WatchProgress | WatchCanceled


class TooManyWatches(Exception):
    code = "too_many_watches"


# Bytes counted per event besides its keys and values (its revisions, type, framing).
_EVENT_OVERHEAD_BYTES = 64


def event_bytes(event: Event) -> int:
    """What an event counts against the byte budgets: its key and value, and its previous
    key and value when it carries them."""
    size = len(event.kv.key) + len(event.kv.value) + _EVENT_OVERHEAD_BYTES
    if event.prev_kv is not None:
        size += len(event.prev_kv.key) + len(event.prev_kv.value)
    return size


class WatchHub:
    """Shared by every watch of one node: wake-ups, the recent-revision cache, limits."""

    def __init__(
        self,
        reader: EventReader,
        current_revision: Callable[[], int],
        compacted_revision: Callable[[], int],
        oldest_watch_revision: Callable[[], int],
        *,
        settings: WatchSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.reader = reader
        self.current_revision = current_revision
        self.compacted_revision = compacted_revision
        self.oldest_watch_revision = oldest_watch_revision
        self.settings = settings if settings is not None else WatchSettings()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.closed = False
        # Why the hub closed (code, message): every watch opened since ends with it.
        self._close_reason: tuple[str, str] | None = None
        # Invariant: the watches opened and not released; `buffered_bytes` is the sum of
        # their `buffered_bytes`.
        self._watches: set[Watch] = set()
        self.buffered_bytes = 0
        # Watches ended "too_slow" because the total was over max_total_buffered_bytes.
        self.total_budget_cancels = 0
        # Orders watches by when they started buffering (the oldest goes first among
        # equals when the total is over its budget).
        self._charges = 0
        # The holders, most bytes first (then oldest): a heap of (-bytes, since, watch)
        # pushed at each charge, the watch by weak reference (the heap keeps no watch
        # alive). An entry no longer matching its watch's bytes and start is stale and
        # skipped; the heap is rebuilt once stale entries outnumber the open watches, so
        # finding the largest holder stays O(log n), never a scan.
        self._holders: list[tuple[int, int, weakref.ref[Watch]]] = []
        self._changed: asyncio.Future[None] | None = None
        # Invariant: the cache holds consecutive revisions, oldest first, all of them
        # applied, none of them compacted once `read` has run (see there); `_previous`
        # holds previous values looked up for events of cached revisions only;
        # `_cache_bytes` is the sum of the sizes of both.
        self._cache: deque[RevisionEvents] = deque()
        self._previous: dict[int, dict[bytes, MvccKeyValue | None]] = {}
        self._cache_bytes = 0

    @property
    def active(self) -> int:
        """Watches opened and not released."""
        return len(self._watches)

    # -- called by the state machine (must stay O(1)) ---------------------------------------

    def notify(self) -> None:
        """New revisions may have been applied: wake the watches waiting for them."""
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def reset(self) -> None:
        """The state was replaced (snapshot restore): forget cached events."""
        self._forget_cache()
        self.notify()

    # -- lifecycle ------------------------------------------------------------------------

    def close(
        self,
        code: str = "stopping",
        message: str = "the node is stopping; resume on another member",
    ) -> None:
        """End every watch with `code` (at once, even one whose consumer is busy writing:
        see `Watch.ended`) and every watch opened later too. The first reason stays."""
        if self._close_reason is None:
            self._close_reason = (code, message)
        self.closed = True
        code, message = self._close_reason
        for watch in list(self._watches):
            watch.end(code, message)
        self.notify()

    def open(self, spec: WatchSpec, start_revision: int) -> Watch:
        """A new watch from `start_revision` (0: the next revision). TooManyWatches beyond
        max_watches; the caller checks compaction (see `Watch.check_start`)."""
        if self.active >= self.settings.max_watches:
            raise TooManyWatches(
                f"{self.active} watches on this node (max_watches="
                f"{self.settings.max_watches}); watch through another member"
            )
        start = start_revision or self.current_revision() + 1
        watch = Watch(self, spec, start)
        self._watches.add(watch)
        if self._close_reason is not None:
            watch.end(*self._close_reason)
        return watch

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
        # Compacted revisions leave the cache: the one compacted at, the oldest a watch can
        # read, is read back as the store keeps it (its puts, not the events cached before).
        compacted = self.compacted_revision()
        while self._cache and self._cache[0].revision <= compacted:
            self._drop_oldest()
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

    def previous(self, key: bytes, revision: int) -> MvccKeyValue | None:
        """The key just before `revision` (see EventReader.previous); for a cached revision
        looked up once and shared by every watch that asks (prev_kv fan-out)."""
        cached = (
            bool(self._cache) and self._cache[0].revision <= revision <= self._cache[-1].revision
        )
        if not cached:
            return self.reader.previous(key, revision)
        known = self._previous.setdefault(revision, {})
        if key not in known:
            found = known[key] = self.reader.previous(key, revision)
            self._cache_bytes += _previous_bytes(key, found)
            self._trim_cache()
        return known.get(key)

    def _remember(self, item: RevisionEvents) -> None:
        if self._cache and self._cache[-1].revision + 1 != item.revision:
            self._forget_cache()
        self._cache.append(item)
        self._cache_bytes += item.size()
        self._trim_cache()

    def _trim_cache(self) -> None:
        settings = self.settings
        while self._cache and (
            len(self._cache) > settings.cache_revisions or self._cache_bytes > settings.cache_bytes
        ):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        oldest = self._cache.popleft()
        self._cache_bytes -= oldest.size()
        for key, found in self._previous.pop(oldest.revision, {}).items():
            self._cache_bytes -= _previous_bytes(key, found)

    def _forget_cache(self) -> None:
        self._cache.clear()
        self._previous.clear()
        self._cache_bytes = 0

    # -- byte budgets ---------------------------------------------------------------------
    # A Watch calls charge when it hands out a batch, discharge once it is written, remove
    # when it is released: the hub owns the total and the order of the holders.

    def charge(self, watch: Watch, size: int) -> WatchCanceled | None:
        """`watch` hands out `size` more bytes; then, while the total is over its budget,
        end the watch buffering the most. The cancel if that was `watch` itself."""
        if watch.buffered_bytes == 0:
            self._charges += 1
            watch.buffering_since = self._charges
        watch.buffered_bytes += size
        self.buffered_bytes += size
        if len(self._holders) > 2 * len(self._watches) + 64:
            self._holders = [
                (-held.buffered_bytes, held.buffering_since, weakref.ref(held))
                for held in self._watches
                if held.buffered_bytes
            ]
            heapq.heapify(self._holders)
        else:
            entry = (-watch.buffered_bytes, watch.buffering_since, weakref.ref(watch))
            heapq.heappush(self._holders, entry)
        limit = self.settings.max_total_buffered_bytes
        while self.buffered_bytes > limit and self._holders:
            negated, since, reference = heapq.heappop(self._holders)
            victim = reference()
            if (
                victim is None
                or -negated != victim.buffered_bytes
                or since != victim.buffering_since
            ):
                continue  # stale: the watch wrote, ended or went away since
            self.total_budget_cancels += 1
            victim.end(
                "too_slow",
                f"this node's watches hold {self.buffered_bytes} bytes not yet written to "
                f"their clients, over watch_max_total_buffered_bytes ({limit}), and this one "
                f"the most ({victim.buffered_bytes}): resume from revision + 1",
            )
        return watch.canceled

    def discharge(self, watch: Watch, size: int) -> None:
        size = min(size, watch.buffered_bytes)
        watch.buffered_bytes -= size
        self.buffered_bytes -= size

    def remove(self, watch: Watch) -> None:
        self.discharge(watch, watch.buffered_bytes)
        self._watches.discard(watch)


def _previous_bytes(key: bytes, found: MvccKeyValue | None) -> int:
    return len(key) + _EVENT_OVERHEAD_BYTES + (0 if found is None else len(found.value))


@dataclass(slots=True, eq=False, weakref_slot=True)
class Watch:
    """One watch's position (see the module docstring). Use `next()` until it returns a
    WatchCanceled, then (or whenever the client goes away) `release()`."""

    hub: WatchHub
    spec: WatchSpec
    # Invariant: every matching event below it has been handed out, none at or above.
    next_revision: int
    released: bool = field(default=False)
    # Bytes handed out and not yet written (the last batch, until the next `next()` or
    # `written()`); 0 once ended or released.
    buffered_bytes: int = 0
    # Set once the watch is over (the hub closed, or it was ended at a byte budget);
    # `next()` returns it from then on. Its revision is the watermark when it ended.
    _canceled: WatchCanceled | None = None
    _ended: asyncio.Future[WatchCanceled] | None = None
    # Stamped by the hub's budget when the watch begins holding bytes: among watches holding
    # as much, the one holding them longest is ended first.
    buffering_since: int = 0

    @property
    def canceled(self) -> WatchCanceled | None:
        """The cancel `next()` returns once the watch is over; None before."""
        return self._canceled

    @property
    def watermark(self) -> int:
        return self.next_revision - 1

    def check_start(self) -> WatchCanceled | None:
        """A WatchCanceled("compacted") if the next revision (at first, the start one)
        is below the oldest revision a watch can read."""
        hub = self.hub
        compacted = hub.compacted_revision()
        oldest = (
            hub.oldest_watch_revision() if self.spec.from_compaction_revision else compacted + 1
        )
        if self.next_revision >= oldest:
            return None
        return WatchCanceled(
            self.watermark,
            "compacted",
            f"revision {self.next_revision} is compacted (compacted at revision {compacted}); "
            f"watch from revision {oldest} or later, after reading the current state",
            compact_revision=compacted,
            oldest_revision=oldest,
        )

    def ended(self) -> asyncio.Future[WatchCanceled]:
        """Done (with the cancel `next()` will return) once the watch is ended from outside
        while its consumer may be busy elsewhere (writing the last batch): the hub closed,
        or the total byte budget ended it."""
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
            if self._canceled is not None:
                self._ended.set_result(self._canceled)
        return self._ended

    def written(self) -> None:
        """The consumer has written the last batch out: its bytes no longer count."""
        self.hub.discharge(self, self.buffered_bytes)

    async def next(self, progress_interval: float | None = None) -> WatchOutcome:
        """The next batch of matching events; a WatchProgress if `progress_interval`
        seconds pass with none; a WatchCanceled when the watch is over. Calling it again
        means the previous batch was written out (see `written`)."""
        hub = self.hub
        self.written()
        deadline = None if progress_interval is None else hub.clock.now() + progress_interval
        while True:
            if self._canceled is not None:
                return self._canceled
            current = hub.current_revision()
            if self.next_revision <= current:
                refused = self.check_start()
                if refused is not None:
                    return refused
                batch = hub.read(self.next_revision, current, hub.settings.max_events_per_message)
                # Empty only when no revision up to `current` changed anything: revision 1
                # of a fresh store (the first write makes revision 2).
                if not batch:
                    self.next_revision = current + 1
                    continue
                events, last, size = self._take(batch)
                if events:
                    # Charged before the watermark moves: a watch ended here names only
                    # what it handed out before.
                    ended = hub.charge(self, size)
                    if ended is not None:
                        return ended
                    self.next_revision = last + 1
                    return EventBatch(self.watermark, events, size)
                self.next_revision = last + 1
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
            self.hub.remove(self)

    def end(self, code: str, message: str) -> None:
        """End the watch from outside (see `ended`): forget its bytes, wake its consumer."""
        if self._canceled is not None or self.released:
            return
        self._canceled = WatchCanceled(self.watermark, code, message)
        self.hub.discharge(self, self.buffered_bytes)
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(self._canceled)

    def _take(self, batch: list[RevisionEvents]) -> tuple[list[Event], int, int]:
        """The matching events of the first revisions of `batch` that fit the watch's
        byte budget (at least the first revision with any), the last revision taken, and
        their bytes."""
        limit = self.hub.settings.max_buffered_bytes
        events: list[Event] = []
        size = 0
        last = batch[0].revision - 1
        for item in batch:
            matching = self._matching(item)
            added = sum(event_bytes(event) for event in matching)
            if events and size + added > limit:
                break
            events += matching
            size += added
            last = item.revision
        return events, last, size

    def _matching(self, item: RevisionEvents) -> list[Event]:
        spec = self.spec
        events: list[Event] = []
        for event in item.events:
            if not spec.matches(event):
                continue
            if spec.prev_kv:
                previous = self.hub.previous(event.kv.key, item.revision)
                events.append(Event(event.type, event.kv, previous))
            else:
                events.append(event)
        return events
