"""How many keys are live: what lets a range with a `limit` answer its exact `count`
without scanning the rest of the range (issue 15's scale target).

A range's `count` is the number of live keys in it, however few it answers. Scanning the
rest of the range costs one index entry per key: a `limit=10` range over 10 million keys
scanned 10 million entries (23 s, and refused past `max_scan_entries`). Knowing the total T
of live keys, the count is also T minus the keys outside the range, so a read scans the
rest of its range and the keys outside it in turns and stops at whichever ends first
(`count_from_total`): it scans at most three times the smaller of the two. The turns
double in length (1, 2, 4, ... items), so the scans switch a few dozen times at most: on a
RocksDB read view both share one iterator, and each switch is a seek.

The total is kept in memory, never stored: a stored total would be a record that members
of an older raftkv neither keep up to date nor leave out of the hashes members compare
(hash_checks), so a rolling upgrade would raise false CORRUPT alarms. Instead, when the
store opens, a background thread counts the latest index in a read view taken then (O(live
keys), off the event loop), while the store counts every key its writes create or delete
from that moment (`change`, staged writes included, rolled back with them). Once the
thread is done, T = counted + change. Until then (and on an AppData without read views,
which is counted at once instead) `total()` is None and ranges count by scanning, as
before.

Invariant: while `total()` is not None, it equals the number of entries in the latest index
as the store sees it (committed and staged writes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator

from raftkv.kv.layout import INDEX_PREFIX, prefix_successor
from raftkv.kv.read_budget import ReadBudget
from raftkv.raft.storage.base import AppData, AppReadView, StorageClosed, SupportsReadView

logger = logging.getLogger(__name__)

# Below this many keys, a count that took a while is not worth a log line.
_QUIET_SECONDS = 1.0


class LiveKeyCount:
    """The store's count of live keys (see the module docstring). Its owner, MvccStore,
    calls `created`/`deleted` for every index entry its writes add or remove, sets
    `change` back when it rolls a request back, and calls `close` when it is done with the
    store."""

    def __init__(self, app: AppData) -> None:
        # Keys created minus keys deleted since the store opened (staged writes included).
        self.change = 0
        # The live keys when the store opened; None until counted. Written once, by the
        # counting thread (or here); an int assignment, read by the loop without a lock.
        self._counted: int | None = None
        self._view: AppReadView | None = None
        self._done = threading.Event()
        if isinstance(app, SupportsReadView):
            self._view = app.read_view()
            threading.Thread(target=self._count, name="raftkv-key-count", daemon=True).start()
        else:
            index = app.scan(INDEX_PREFIX, prefix_successor(INDEX_PREFIX))
            self._counted = sum(1 for _ in index)
            self._done.set()

    def total(self) -> int | None:
        """The live keys now (staged writes included), or None while not yet counted."""
        counted = self._counted
        return None if counted is None else counted + self.change

    def created(self, keys: int = 1) -> None:
        self.change += keys

    def deleted(self, keys: int) -> None:
        self.change -= keys

    def wait(self, timeout: float) -> bool:
        """Whether the count finished within `timeout` seconds (for tests and benchmarks;
        the store never waits)."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop the count if it is under way (it then stays unknown). Idempotent."""
        view, self._view = self._view, None
        if view is not None:
            view.close()

    def _count(self) -> None:
        view = self._view
        started = time.perf_counter()
        try:
            if view is not None:
                counted = view.count(INDEX_PREFIX, prefix_successor(INDEX_PREFIX))
                self._counted = counted
                elapsed = time.perf_counter() - started
                if elapsed >= _QUIET_SECONDS:
                    logger.info("counted %d live keys in %.1f s", counted, elapsed)
        except StorageClosed:
            pass  # the store was closed or replaced meanwhile: nobody needs the count
        except Exception as error:
            # A damaged index entry is reported by the reads that meet it; without a
            # count, ranges count by scanning, as they did before the count existed.
            logger.error("counting the live keys failed (%s); ranges count by scanning", error)
        finally:
            self.close()
            self._done.set()


def count_from_total(
    rest: Iterator[object],
    outside: Iterable[object],
    read: int,
    live_keys: int,
    budget: ReadBudget,
) -> int:
    """The live keys in a range at the current revision, `read` of them read already,
    `rest` the others and `outside` every live key outside the range: the two scanned in
    turns (each item counted against `budget`) until one ends, as the range holds
    `live_keys` less the keys outside it. Turns double, so at most twice the rest's items
    or three times the outside's (plus one) are scanned, with a few dozen switches."""
    outside_items = budget.scanning(iter(outside))
    inside, beyond, turn = read, 0, 1
    while True:
        # Turns of 1, 2, 4, ... items each: when the two scans share one iterator (a
        # RocksDB read view), every switch is a seek, and seeks cost more than steps.
        for _ in range(turn):
            if next(rest, None) is None:
                return inside
            inside += 1
        ended = False
        for _ in range(turn):
            if next(outside_items, None) is None:
                ended = True
                break
            beyond += 1
        if ended:
            break
        turn *= 2
    count = live_keys - beyond
    if count < inside:
        # The total is wrong (a bug in the bookkeeping above): never answer a count below
        # what was read; count the rest of the range instead.
        logger.error(
            "live key count %d less %d keys outside a range is below the %d keys read in "
            "it; counting the range by scanning",
            live_keys,
            beyond,
            inside,
        )
        return inside + sum(1 for _ in rest)
    return count
