"""How long a `raftkv serve` process's event loop may wait for the GIL: its thread switch
interval.

Why shorten it. A node runs Python on worker threads beside its event loop: the key count
after start-up (raftkv.kv.key_count), scans on read threads, hash checks, snapshot
encoding. While one of them runs, the loop thread that wakes up (a message, a request)
waits for the GIL until the running thread is made to drop it, which CPython does after
the switch interval: 5 ms by default, so every loop turn then takes 5 ms longer. Measured
(a thread counting RocksDB keys beside a loop sleeping 1 ms at a time): loop lag p50 5.2 ms
at 5 ms, 1.2 ms at 1 ms. At 10 million keys, the key count running through a restart made
the first linearizable GET take 12 s instead of 3.4 s.

What it costs: when two threads both want to run, CPython switches between them every
SWITCH_INTERVAL_S instead of every 5 ms, a few microseconds each time.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["SWITCH_INTERVAL_S", "shorten_switch_interval"]

SWITCH_INTERVAL_S: Final = 0.001


def shorten_switch_interval() -> None:
    """Set the process's thread switch interval to SWITCH_INTERVAL_S (see the module doc).
    Process-wide: `raftkv serve` calls it; an application embedding the library decides
    its own."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
