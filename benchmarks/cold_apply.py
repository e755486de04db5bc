"""What one write costs when it comes alone: the same `KvStateMachine.apply` of one put,
back to back and after a gap in which the process slept or spun.

A member under one client at a time handles a write every few milliseconds and waits (for
the disk, for a peer) in between. This shows how much more the same Python work costs then
than in a tight loop: the caches it needs have gone cold in the gap (on this project's
virtual machine, spinning through the gap does not keep them warm either).

    .venv/bin/python benchmarks/cold_apply.py [--applies 800] [--gaps-ms 0 0.2 1 3]

Prints the median microseconds of one apply (the first tenth of each row is warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from raftkv.kv import KvCommand, KvStateMachine, Put, encode_command
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.rocks import RocksStorage

VALUE = b"x" * 256


def spin(seconds: float) -> None:
    """Stay on the CPU for `seconds` without sleeping."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def median_apply_us(
    machine: KvStateMachine, first_index: int, applies: int, gap_s: float, *, sleep: bool
) -> float:
    """Median microseconds of `applies` one-put applies, each after a gap of `gap_s`
    seconds, slept or spun."""
    durations = []
    for index in range(first_index, first_index + applies):
        if sleep and gap_s:
            time.sleep(gap_s)
        elif gap_s:
            spin(gap_s)
        command = Command(index, 1, encode_command(KvCommand(Put(b"key/%08d" % index, VALUE))))
        started = time.perf_counter_ns()
        machine.apply([command], index, 1)
        durations.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(durations[applies // 10 :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applies", type=int, default=800)
    parser.add_argument("--gaps-ms", type=float, nargs="+", default=[0.0, 0.2, 1.0, 3.0])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-cold-apply-") as directory:
        storage = RocksStorage(Path(directory))
        try:
            machine = KvStateMachine(storage.app_data())
            index = 1
            print("gap ms   slept: apply µs   spun: apply µs")
            for gap_ms in options.gaps_ms:
                gap_s = gap_ms / 1000
                slept = median_apply_us(machine, index, options.applies, gap_s, sleep=True)
                index += options.applies
                spun = median_apply_us(machine, index, options.applies, gap_s, sleep=False)
                index += options.applies
                print(f"{gap_ms:6.1f}   {slept:14.0f}   {spun:13.0f}")
        finally:
            storage.close()


if __name__ == "__main__":
    main()
