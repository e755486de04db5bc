"""How much Python the event loop's thread gets done while the writer thread persists
synced entries: the reason a synced `persist` fsyncs with `flush_wal` (which releases the
GIL) instead of a synced RocksDB write (which rocksdict runs holding it).

A thread counts in a Python loop for `--seconds`, alone and then beside a thread that
persists one synced entry after another through `RocksStorage.persist` (what the leader's
writer thread does), once as raftkv does it and once with the old synced write. Prints each
count as a share of the solo count (1.0: the writer cost the counter nothing) and the
writer's persists per second, and how often the counter stopped for more than 2 ms. The
switch interval is raftkv's (1 ms).

    .venv/bin/python benchmarks/sync_gil.py [--seconds 3]

A fast disk hides the difference (its fsyncs take ~0.2 ms). To see a slow one, delay every
fsync by 10 ms with strace's fault injection:

    strace -f -qq -o /dev/null -e trace=fdatasync,fsync \\
        -e inject=fdatasync:delay_exit=10000 -e inject=fsync:delay_exit=10000 \\
        .venv/bin/python benchmarks/sync_gil.py --seconds 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rocksdict import WriteBatch, WriteOptions

from raftkv.raft.core.types import Entry, HardState, NodeId
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.raft.storage.rocks_database import RocksDatabase

SWITCH_INTERVAL_S = 0.001
# A gap the switch interval alone does not explain.
STALL_S = 0.002


@dataclass(frozen=True, slots=True)
class Counted:
    turns: int  # loop turns of plain Python
    stalls: int  # gaps between two turns longer than STALL_S
    longest_s: float  # the longest gap


def count_for(seconds: float) -> Counted:
    """A thread's loop of plain Python for `seconds`, as the event loop's thread."""
    turns = stalls = 0
    longest = 0.0
    now = time.perf_counter()
    end = now + seconds
    while now < end:
        previous, now = now, time.perf_counter()
        gap = now - previous
        if gap > STALL_S:
            stalls += 1
            longest = max(longest, gap)
        turns += 1
    return Counted(turns, stalls, longest)


@contextmanager
def synced_writes_held_under_the_gil(database: RocksDatabase) -> Iterator[None]:
    """The old way: every write synced by RocksDB itself (rocksdict keeps the GIL), and no
    flush_wal after it. Only the writer thread writes here, and all its writes are synced."""
    synced = WriteOptions()
    synced.sync = True

    def write(batch: WriteBatch, *, sync: bool) -> None:
        database.handles().database.write(batch, synced)

    database.write = write  # type: ignore[method-assign]
    database.sync_log = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del database.write, database.sync_log


def persists_beside(storage: RocksStorage, seconds: float) -> tuple[Counted, int]:
    """(the counter, the writer's persists) with a writer persisting meanwhile."""
    stop = threading.Event()
    persists = 0

    def writer() -> None:
        nonlocal persists
        index = storage.last_index()
        while not stop.is_set():
            index += 1
            entry = Entry(term=1, index=index, data=b"x" * 256)
            storage.persist(None, [entry], None, sync=True)
            persists += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        count = count_for(seconds)
    finally:
        stop.set()
        thread.join()
    return count, persists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    options = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    with tempfile.TemporaryDirectory(prefix="raftkv-sync-gil-") as directory:
        storage = RocksStorage(Path(directory))
        try:
            storage.persist(HardState(1, NodeId(1), 0), [], None, sync=True)
            solo = count_for(options.seconds)
            for name in ("flush_wal (raftkv)", "synced write (before)"):
                if name.startswith("flush_wal"):
                    count, persists = persists_beside(storage, options.seconds)
                else:
                    with synced_writes_held_under_the_gil(storage.database):
                        count, persists = persists_beside(storage, options.seconds)
                print(
                    f"{name:22} counter {count.turns / solo.turns:.2f} of solo, "
                    f"{count.stalls} stalls over {STALL_S * 1000:.0f} ms "
                    f"(longest {count.longest_s * 1000:.1f} ms; solo {solo.stalls}), "
                    f"writer {persists / options.seconds:,.0f} synced persists/s"
                )
        finally:
            storage.close()


if __name__ == "__main__":
    main()
