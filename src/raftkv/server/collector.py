"""The garbage collector of a `raftkv serve` process: its settings, and its pauses.

Why tune it. A node's objects mostly die by reference counting; the cyclic collector only
finds them late, yet by default it runs a young collection every 700 net allocations and
a full one (every object the process holds: modules, the Raft log caches, the watch hub)
now and then. Measured on a leader under 64 concurrent writers: ~5 % of its time in the
collector and full collections stopping everything for 30-80 ms, which every request then
waiting on the loop carries.

So, once, after start-up (`tune_collector`):
- `gc.freeze()`: everything alive then (the imported modules, the settings) is moved out
  of the collector's sight for good: full collections stop walking it;
- the young generation's threshold rises from 700 to YOUNG_THRESHOLD net allocations: the
  cyclic garbage a node makes between collections is small (measured: a few collections
  a second turn into a few a minute), and memory stays bounded by the threshold.

Every collection's pause is observed into `raftkv_gc_pause_seconds{generation}` (a
`gc.callbacks` hook: `GcPauses`), so a tail that comes from the collector shows.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client import Histogram as PrometheusHistogram

__all__ = ["GC_PAUSE_BUCKETS_S", "YOUNG_THRESHOLD", "GcPauses", "tune_collector"]

# Net allocations between young collections (CPython's default is 700). The older
# generations keep their defaults: one middle collection per 10 young ones, and a full
# one per 10 middle ones when the long-lived objects grew by a quarter.
YOUNG_THRESHOLD: Final = 10_000
GC_PAUSE_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def tune_collector() -> None:
    """Freeze what start-up made and raise the young threshold (see the module doc). Call
    once, after the imports and before the event loop runs."""
    gc.collect()  # what start-up left as garbage is not frozen with the rest
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


class GcPauses:
    """Observes every collection's pause, by generation, while `observing()` is active.

    The callback runs on whichever thread triggered the collection (the collector stops
    them all); the histogram is thread-safe.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._pauses = PrometheusHistogram(
            "raftkv_gc_pause_seconds",
            "How long each collection of the cyclic garbage collector stopped the process.",
            ("generation",),
            buckets=GC_PAUSE_BUCKETS_S,
            registry=registry,
        )
        self._started = 0.0

    @contextmanager
    def observing(self) -> Iterator[None]:
        callback: Callable[[str, dict[str, int]], None] = self._on_collection
        gc.callbacks.append(callback)
        try:
            yield
        finally:
            gc.callbacks.remove(callback)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        # A collection runs with the GIL held from "start" to "stop": they pair up.
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self._pauses.labels(generation=str(info["generation"])).observe(pause)
