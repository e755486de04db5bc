"""A replicated counter: the smallest useful raftkv application.

Run three processes (each in its own terminal), then type `incr`, `incr 5` or `get` in any:

    CLUSTER=1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103
    .venv/bin/python examples/counter.py --id 1 --cluster $CLUSTER
    .venv/bin/python examples/counter.py --id 2 --cluster $CLUSTER
    .venv/bin/python examples/counter.py --id 3 --cluster $CLUSTER

Every node accepts `incr` (followers forward to the leader) and `get` is linearizable.
State lives in memory and is rebuilt from the node's RocksDB log and snapshots on restart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from raftkv.raft import Command, NodeBuilder


class Counter:
    """The state machine: an integer. Commands are decimal increments, e.g. b"5"."""

    def __init__(self) -> None:
        self.value = 0
        self._applied = 0

    def applied_index(self) -> int:
        return self._applied

    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> list[object]:
        results: list[object] = []
        for command in commands:
            self.value += int(command.data)
            results.append(self.value)
        self._applied = applied_index
        return results

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes, index: int, term: int) -> None:
        self.value = int(data)
        self._applied = index


def parse_cluster(text: str) -> dict[int, str]:
    members = {}
    for item in text.split(","):
        node_id, _, address = item.partition("=")
        members[int(node_id)] = address
    return members


async def main() -> None:
    parser = argparse.ArgumentParser(description="A replicated counter on raftkv")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--cluster", required=True, help="1=host:port,2=host:port,...")
    parser.add_argument("--data-dir", default=None, help="default: data/counter/<id>")
    arguments = parser.parse_args()
    counter = Counter()
    node = await (
        NodeBuilder(arguments.id)
        .peers(parse_cluster(arguments.cluster))
        .data_dir(arguments.data_dir or f"data/counter/{arguments.id}")
        .state_machine(counter)
        .bootstrap()
    )
    print(f"node {arguments.id} started; commands: incr [n], get, quit", flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not line or words == ["quit"]:
                break
            try:
                if words and words[0] == "incr":
                    by = int(words[1]) if len(words) > 1 else 1
                    print(await node.propose(str(by).encode()), flush=True)
                elif words == ["get"]:
                    print(await node.linearizable_read(lambda machine: machine.value), flush=True)
                elif words:
                    print("commands: incr [n], get, quit", flush=True)
            except Exception as error:  # show the error and keep serving
                print(f"error: {type(error).__name__}: {error}", flush=True)
    finally:
        await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
