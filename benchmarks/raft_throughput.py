"""Proposals per second and latency of a 3-node raftkv cluster, with fsync on.

For each transport (in-process, TCP and gRPC over loopback) and each concurrency (1, 16, 64, 256
proposers, all on the leader), run for `--seconds` and report proposals/s, p50/p99
latency, fsyncs/s on the leader and entries per fsync (group commit at work), then the
ratio of every concurrency to one proposer.

All three nodes run in this one process and event loop, each with its own RocksDB (synced
writes) in a temporary directory: the numbers include the followers' work on the same core.

    .venv/bin/python benchmarks/raft_throughput.py [--seconds 5] [--transports inprocess,tcp,grpc]
        [--batch-proposals]

With `--batch-proposals` the nodes batch the proposals that arrive together into one log
entry (NodeSettings.batch_proposals), and "entries/fsync" counts entries, not proposals.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from raftkv.raft import (
    Command,
    GrpcTransport,
    InProcessNetwork,
    Node,
    NodeId,
    NodeSettings,
    PeerTransportSettings,
    RocksStorage,
    TcpTransport,
)
from raftkv.raft.transport.base import Transport
from raftkv.testing.processes import free_port

PAYLOAD = b"x" * 100


class NullMachine:
    """Counts commands; the benchmark measures replication, not the state machine."""

    def __init__(self) -> None:
        self.applied = 0
        self.count = 0

    def applied_index(self) -> int:
        return self.applied

    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> list[object]:
        self.count += len(commands)
        self.applied = applied_index
        return [None] * len(commands)

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, data: bytes, index: int, term: int) -> None:
        self.count = int(data)
        self.applied = index


async def start_cluster(kind: str, directory: Path, batching: bool) -> list[Node]:
    ids = [NodeId(1), NodeId(2), NodeId(3)]
    if kind in ("tcp", "grpc"):
        addresses = {node_id: f"127.0.0.1:{free_port()}" for node_id in ids}
    else:
        addresses = {node_id: f"node-{node_id}" for node_id in ids}
    network = InProcessNetwork()
    settings = NodeSettings(
        tick_interval_s=0.05, snapshot_every_entries=50_000, batch_proposals=batching
    )
    nodes = []
    for node_id in ids:
        transport: Transport
        if kind == "inprocess":
            transport = network.transport(addresses[node_id])
        else:
            # Only a network transport has a listen address to check.
            peer_settings = PeerTransportSettings(cluster_id=1, listen_address=addresses[node_id])
            if kind == "grpc":
                transport = GrpcTransport(peer_settings)
            else:
                transport = TcpTransport(peer_settings)
        node = Node(
            node_id=node_id,
            storage=RocksStorage(directory / f"node-{node_id}"),
            transport=transport,
            state_machine=NullMachine(),
            settings=settings,
            peers=addresses,
            owns_storage=True,
        )
        node.bootstrap(addresses)
        nodes.append(node)
    for node in nodes:
        await node.start()
    await nodes[0].wait_for_leader(timeout=20)
    return nodes


async def measure(leader: Node, proposers: int, seconds: float, batching: bool) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def proposer() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await leader.propose(PAYLOAD, batchable=batching)
            latencies.append(time.perf_counter() - started)

    fsyncs_before = leader.stats.fsyncs
    entries_before = leader.stats.entries_persisted
    started = time.perf_counter()
    await asyncio.gather(*(proposer() for _ in range(proposers)))
    elapsed = time.perf_counter() - started
    fsyncs = leader.stats.fsyncs - fsyncs_before
    entries = leader.stats.entries_persisted - entries_before
    latencies.sort()
    return {
        "proposals_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "fsyncs_per_s": fsyncs / elapsed,
        "entries_per_fsync": entries / fsyncs if fsyncs else 0.0,
    }


async def run(kind: str, concurrencies: list[int], seconds: float, batching: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-") as directory:
        nodes = await start_cluster(kind, Path(directory), batching)
        try:
            leader = next(node for node in nodes if node.is_leader)
            await measure(leader, 16, min(seconds, 1.0), batching)  # warm up
            batched = ", batched" if batching else ""
            print(f"\n{kind}: 3 nodes, RocksDB with fsync, {len(PAYLOAD)}-byte proposals{batched}")
            print(
                f"{'proposers':>9} {'proposals/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'fsyncs/s':>9} {'entries/fsync':>13} {'vs 1':>6}"
            )
            base = 0.0
            for proposers in concurrencies:
                result = await measure(leader, proposers, seconds, batching)
                base = base or result["proposals_per_s"]
                print(
                    f"{proposers:>9} {result['proposals_per_s']:>12.0f} "
                    f"{result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} "
                    f"{result['fsyncs_per_s']:>9.0f} {result['entries_per_fsync']:>13.1f} "
                    f"{result['proposals_per_s'] / base:>5.1f}x"
                )
        finally:
            for node in nodes:
                await node.stop(transfer_leadership=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--transports", default="inprocess,tcp,grpc")
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument(
        "--batch-proposals", action="store_true", help="batch proposals into shared entries"
    )
    arguments = parser.parse_args()
    # Peers report each other unreachable while the clusters shut down; not news here.
    logging.basicConfig(level=logging.ERROR)
    concurrencies = [int(value) for value in arguments.concurrency.split(",")]
    for kind in arguments.transports.split(","):
        asyncio.run(run(kind, concurrencies, arguments.seconds, arguments.batch_proposals))


if __name__ == "__main__":
    main()
