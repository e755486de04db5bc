"""The driver on RocksStorage: restart from disk, and a corrupt record stops the node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from raftkv.raft.core.types import ConfState, HardState, NodeId, Snapshot, SnapshotMetadata
from raftkv.raft.driver.envelope import encode_snapshot
from raftkv.raft.driver.errors import NodeFailed
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.base import RaftStorage, StorageCorrupt
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.raft.transport.inprocess import InProcessNetwork
from raftkv.testing.local_cluster import LocalCluster
from raftkv.testing.state_machines import DurableDictStateMachine, encode_incr


def durable_dict(storage: RaftStorage) -> DurableDictStateMachine:
    return DurableDictStateMachine(storage.app_data())


def flip_a_byte_of_log_entry(path: Path, index: int) -> None:
    families = [
        name for name in Rdict.list_cf(str(path), Options(raw_mode=True)) if name != "default"
    ]
    database = Rdict(
        str(path),
        Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in families},
    )
    try:
        log = database.get_column_family("raft_log")
        key = index.to_bytes(8, "big")
        value = log.get(key)
        assert isinstance(value, bytes)
        log.put(key, value[:-1] + bytes([value[-1] ^ 0x01]))
        del log  # a live column family keeps the database open
    finally:
        database.close()


def test_restart_from_rocksdb_and_a_corrupt_entry_stops_the_node_naming_it(
    tmp_path: Path,
) -> None:
    def open_storage(node_id: NodeId) -> RaftStorage:
        return RocksStorage(tmp_path / f"node-{node_id}")

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=durable_dict, storage=open_storage)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        for _ in range(10):
            await cluster.complete(leader.propose(encode_incr("n")))
        victim = next(node for node in cluster.nodes.values() if node is not leader)
        await cluster.run_until(lambda: victim.status().applied_index >= 12)
        await cluster.crash(victim.id)
        cluster.storages[victim.id].close()

        # A clean restart recovers everything from disk.
        cluster.storages[victim.id] = open_storage(victim.id)
        restarted = await cluster.restart(victim.id)
        await cluster.run_until(lambda: restarted.status().applied_index >= 12)
        machine = restarted.state_machine
        assert isinstance(machine, DurableDictStateMachine)
        assert machine.get("n") == "10"
        assert restarted.status().term == leader.status().term

        # A damaged entry: the node refuses to go on, and says which record.
        await cluster.crash(victim.id)
        cluster.storages[victim.id].close()
        flip_a_byte_of_log_entry(tmp_path / f"node-{victim.id}", 5)
        cluster.storages[victim.id] = open_storage(victim.id)
        damaged = await cluster.restart(victim.id)
        await cluster.run_until(lambda: damaged.status().stopped)
        assert isinstance(damaged.failure, StorageCorrupt)
        assert "raft_log index 5" in str(damaged.failure)
        with pytest.raises(NodeFailed, match="raft_log index 5"):
            await damaged.wait_stopped()
        # The others keep serving.
        assert await cluster.complete(leader.propose(encode_incr("n"))) == "11"
        await cluster.stop()
        for storage in cluster.storages.values():
            storage.close()

    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())


def test_a_crash_between_storing_a_snapshot_and_restoring_it_recovers_on_restart(
    tmp_path: Path,
) -> None:
    """Installing a leader's snapshot is two atomic writes: the Raft storage takes the
    snapshot (one batch: log dropped, snapshot stored), then the state machine restores it
    (one batch: data and applied index). A crash between them leaves the storage ahead of
    the state machine; the restart finishes the restore from the stored snapshot."""
    # The state the leader's snapshot carries, made by another state machine.
    source = DurableDictStateMachine(MemoryAppData())
    source.apply([Command(index=9, term=2, data=encode_incr("hits", 5))], 9, 2)
    peers = {NodeId(1): "a", NodeId(2): "b", NodeId(3): "c"}
    snapshot = Snapshot(
        SnapshotMetadata(9, 2, ConfState(voters=frozenset(peers))),
        encode_snapshot(peers, source.snapshot()),
    )

    async def scenario() -> None:
        storage = RocksStorage(tmp_path / "db")
        machine = DurableDictStateMachine(storage.app_data())
        # The first write of the install landed; the crash came before the restore.
        storage.persist(HardState(term=2, commit=9), (), snapshot, sync=True)
        assert machine.applied_index() == 0
        node = Node(
            node_id=NodeId(2),
            storage=storage,
            transport=InProcessNetwork().transport("b"),
            state_machine=machine,
            peers=peers,
        )
        await node.start()
        try:
            assert machine.applied_index() == 9
            assert machine.get("hits") == "5"
        finally:
            await node.stop(transfer_leadership=False)
            storage.close()

    asyncio.run(scenario())
