"""Shared helpers of the KV tests: log commands, a counting AppData, random workloads, and a
3-node LocalCluster over RocksDB with a KvService per node (`started`, `stop`)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from raftkv.kv import (
    Compact,
    DeleteRange,
    KvCommand,
    KvService,
    KvStateMachine,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRemaining,
    LeaseRevoke,
    Put,
    Range,
    ReadLimits,
    RequestOp,
    Txn,
    TxnCompare,
    WriteRequest,
    encode_command,
)
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.base import AppBatch, AppData, RaftStorage
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.testing.local_cluster import LocalCluster


def log_command(
    index: int, request: WriteRequest, client_id: str = "", sequence: int = 0
) -> Command:
    return Command(
        index=index, term=1, data=encode_command(KvCommand(request, client_id, sequence))
    )


class CountingAppData:
    """An AppData that counts the calls made to it."""

    def __init__(self, inner: AppData) -> None:
        self.inner = inner
        self.gets = 0
        self.scans = 0
        self.commits = 0

    def applied(self) -> tuple[int, int]:
        return self.inner.applied()

    def get(self, key: bytes) -> bytes | None:
        self.gets += 1
        return self.inner.get(key)

    def scan(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        self.scans += 1
        return self.inner.scan(start, end)

    def last(self, start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        self.scans += 1
        return self.inner.last(start, end)

    def commit(self, batch: AppBatch, applied_index: int, applied_term: int) -> None:
        self.commits += 1
        self.inner.commit(batch, applied_index, applied_term)

    def replace_all(
        self, items: Iterator[tuple[bytes, bytes]], applied_index: int, applied_term: int
    ) -> None:
        self.inner.replace_all(items, applied_index, applied_term)


def random_workload(seed: int, count: int) -> list[bytes]:
    """`count` encoded commands: puts, deletes, txns, compactions, exactly-once retries
    (some stale) and a few malformed ones, over a small key space."""
    rng = random.Random(seed)
    keys = [bytes([rng.choice(b"\x00a\xffb")]) * rng.randint(1, 3) for _ in range(12)]
    sequences: dict[str, int] = {}
    commands: list[bytes] = []
    revision_guess = 1

    def key() -> bytes:
        return rng.choice(keys)

    def range_end() -> bytes:
        return rng.choice([b"", b"\0", key()])

    def op() -> RequestOp:
        kind = rng.random()
        if kind < 0.5:
            return Put(key(), rng.randbytes(rng.randint(0, 5)), lease=rng.choice([0, 3]))
        if kind < 0.7:
            return DeleteRange(key(), range_end(), prev_kv=rng.random() < 0.5)
        return Range(key(), range_end(), limit=rng.randint(0, 3))

    commands.append(encode_command(KvCommand(LeaseGrant(3, 10))))
    for _ in range(count - 1):
        kind = rng.random()
        request: WriteRequest
        if kind < 0.45:
            request = Put(key(), rng.randbytes(rng.randint(0, 8)), prev_kv=rng.random() < 0.3)
        elif kind < 0.6:
            request = DeleteRange(key(), range_end(), prev_kv=rng.random() < 0.5)
        elif kind < 0.9:
            compares = [
                TxnCompare(key(), "version", rng.choice(["=", ">", "<", "!="]), rng.randint(0, 3))
                for _ in range(rng.randint(0, 2))
            ]
            request = Txn(
                compares,
                [op() for _ in range(rng.randint(0, 3))],
                [op() for _ in range(rng.randint(0, 3))],
            )
        elif kind < 0.93:
            request = Compact(rng.randint(0, revision_guess))
        elif kind < 0.95:
            # Lease 3 comes and goes (puts with it fail while it is gone); revokes delete
            # its keys, checkpoints and keep-alives move its countdown.
            request = rng.choice(
                [
                    LeaseGrant(3, rng.randint(1, 30)),
                    LeaseRevoke(3),
                    LeaseKeepAlive(3),
                    LeaseCheckpoint([LeaseRemaining(3, rng.randint(0, 5000), rng.randint(0, 5))]),
                ]
            )
        else:
            commands.append(rng.choice([b"\xc1", b"\x93\x01\x02\x03", rng.randbytes(6)]))
            continue
        revision_guess += 1
        client_id, sequence = "", 0
        if rng.random() < 0.5:
            client_id = rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"])
            step = rng.choice([1, 1, 1, 0, -1])  # mostly new writes, some retries and stale
            sequence = max(1, sequences.get(client_id, 0) + step)
            sequences[client_id] = max(sequence, sequences.get(client_id, 0))
        commands.append(encode_command(KvCommand(request, client_id, sequence)))
    return commands


def apply_in_batches(
    machine: KvStateMachine, commands: Sequence[bytes], batch_size: int, first_index: int = 1
) -> list[object]:
    """Apply `commands` at consecutive log indexes starting at `first_index`, `batch_size`
    per `apply` call. Returns every result."""
    results: list[object] = []
    for start in range(0, len(commands), batch_size):
        batch = [
            Command(index=first_index + start + offset, term=1, data=data)
            for offset, data in enumerate(commands[start : start + batch_size])
        ]
        results.extend(machine.apply(batch, batch[-1].index, 1))
    return results


def comparable(results: Sequence[object]) -> list[object]:
    """Results with each error replaced by (type, message): exceptions never compare equal."""
    return [
        (type(result), str(result)) if isinstance(result, Exception) else result
        for result in results
    ]


# -- a 3-node LocalCluster over RocksDB with a KvService per node ---------------------------


def kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


async def started(
    tmp_path: Path, limits: ReadLimits | None = None, settings: NodeSettings | None = None
) -> tuple[LocalCluster, dict[int, KvService]]:
    def storage(node_id: NodeId) -> RaftStorage:
        return RocksStorage(tmp_path / f"node-{node_id}")

    cluster = LocalCluster(3, state_machine=kv_machine, storage=storage, settings=settings)
    await cluster.start()
    await cluster.wait_for_leader()
    services: dict[int, KvService] = {}
    for node_id, node in cluster.nodes.items():
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        services[node_id] = KvService(node, machine, read_limits=limits)
    return cluster, services


async def stop(cluster: LocalCluster, services: dict[int, KvService]) -> None:
    for service in services.values():
        service.close()
    await cluster.stop()


def last_indexes(cluster: LocalCluster) -> list[int]:
    return [node.status().last_index for node in cluster.nodes.values()]
