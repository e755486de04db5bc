"""How long one big entry holds a member's event loop: `KvStateMachine.apply` of a
DeleteRange of N keys, then of a Compact of their history, on RocksDB, in-process.

Every member applies each entry on its one event loop, so an entry that takes longer than
an election timeout (1 s by default) stalls heartbeats and acknowledgements on every member
at once: the leader then steps down (check-quorum) and the members hold an election.
`etcdctl check perf` ends its run with such a delete (every key it wrote, 48,000 at load m)
and a compaction of them.

    .venv/bin/python benchmarks/kv_apply.py [--keys 48000] [--value-bytes 64] [--repeat 3]

Prints the median seconds of each apply over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from raftkv.kv import Compact, DeleteRange, KvCommand, KvStateMachine, Put, encode_command
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.rocks import RocksStorage

PREFIX = b"/etcdctl-check-perf/"
# Puts per apply call while loading (a follower applies what one append carried).
LOAD_BATCH = 500


def once(directory: Path, keys: int, value_bytes: int) -> tuple[float, float]:
    """Seconds of the DeleteRange's apply and of the Compact's, on a fresh store."""
    storage = RocksStorage(directory)
    try:
        machine = KvStateMachine(storage.app_data())
        index = 0

        def apply(*requests: Put | DeleteRange | Compact) -> float:
            nonlocal index
            commands = []
            for request in requests:
                index += 1
                commands.append(Command(index, 1, encode_command(KvCommand(request))))
            started = time.perf_counter()
            machine.apply(commands, index, 1)
            return time.perf_counter() - started

        value = b"x" * value_bytes
        for first in range(0, keys, LOAD_BATCH):
            apply(
                *(
                    Put(PREFIX + b"%08d" % key, value)
                    for key in range(first, min(first + LOAD_BATCH, keys))
                )
            )
        deleted = apply(DeleteRange(PREFIX, PREFIX[:-1] + b"0"))
        compacted = apply(Compact(machine.current_revision()))
        return deleted, compacted
    finally:
        storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=48_000)
    parser.add_argument("--value-bytes", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    deletes, compactions = [], []
    for _ in range(options.repeat):
        with tempfile.TemporaryDirectory(prefix="raftkv-kv-apply-") as directory:
            deleted, compacted = once(Path(directory), options.keys, options.value_bytes)
        deletes.append(deleted)
        compactions.append(compacted)
    print(f"keys {options.keys}, values {options.value_bytes} bytes, median of {options.repeat}:")
    print(f"  DeleteRange of all of them: {statistics.median(deletes):.3f} s")
    print(f"  Compact of their history:   {statistics.median(compactions):.3f} s")


if __name__ == "__main__":
    main()
