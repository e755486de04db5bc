"""KvService on a real 3-node cluster (LocalCluster: real Nodes, manual clock)."""

from __future__ import annotations

from pathlib import Path
from random import Random
from typing import Any, TypeVar

import pytest
from kv_helpers import started as started_on_rocks
from kv_helpers import stop as stop_on_rocks

from raftkv.kv import EmptyKey, KvService, KvStateMachine, Put, Range, Txn, TxnCompare
from raftkv.kv.errors import Compacted, FutureRevision
from raftkv.kv.service import COMPACT_STEP_REVISIONS
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.errors import ReadTimeout
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario

T = TypeVar("T")


def kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


async def started(
    settings: NodeSettings | None = None,
) -> tuple[LocalCluster, dict[int, KvService]]:
    cluster = LocalCluster(3, state_machine=kv_machine, settings=settings)
    await cluster.start()
    await cluster.wait_for_leader()
    services: dict[int, KvService] = {}
    for node_id, node in cluster.nodes.items():
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        services[node_id] = KvService(node, machine)
    return cluster, services


def test_writes_through_any_node_and_linearizable_reads_on_every_node() -> None:
    async def scenario() -> None:
        cluster, services = await started()
        first = await cluster.complete(services[2].put(b"greeting", b"hello"))
        assert first.header.revision == 2
        second = await cluster.complete(services[3].put(b"greeting", b"hi", prev_kv=True))
        assert second.prev_kv is not None and second.prev_kv.value == b"hello"
        for service in services.values():
            result = await cluster.complete(service.get(b"greeting"))
            assert [kv.value for kv in result.kvs] == [b"hi"]
            assert result.kvs[0].version == 2
        await cluster.stop()

    run_scenario(scenario)


def test_a_retried_write_with_the_same_client_sequence_applies_once() -> None:
    async def scenario() -> None:
        cluster, services = await started()
        first = await cluster.complete(
            services[1].put(b"k", b"v", client_id="client-a", sequence=1)
        )
        again = await cluster.complete(
            services[2].put(b"k", b"v", client_id="client-a", sequence=1)
        )
        assert again == first
        result = await cluster.complete(services[3].get(b"k"))
        assert result.kvs[0].version == 1  # applied once
        await cluster.stop()

    run_scenario(scenario)


def test_a_refused_request_costs_no_log_entry() -> None:
    async def scenario() -> None:
        cluster, services = await started()
        leader = cluster.leader()
        assert leader is not None
        before = leader.status().last_index
        with pytest.raises(EmptyKey):
            await services[leader.id].put(b"", b"v")
        assert leader.status().last_index == before
        await cluster.stop()

    run_scenario(scenario)


def test_txn_and_compaction() -> None:
    async def scenario() -> None:
        cluster, services = await started()
        service = services[1]
        await cluster.complete(service.put(b"lock", b"free"))
        take = Txn(
            compares=[TxnCompare(key=b"lock", target="value", op="=", value=b"free")],
            success=[Put(key=b"lock", value=b"taken")],
        )
        assert (await cluster.complete(service.txn(take))).succeeded
        assert not (await cluster.complete(service.txn(take))).succeeded
        revision = (await cluster.complete(service.get(b"lock"))).header.revision
        await cluster.complete(service.compact(revision))
        with pytest.raises(Compacted):
            await cluster.complete(service.range(Range(key=b"lock", revision=revision - 1)))
        await cluster.stop()

    run_scenario(scenario)


def test_a_large_compaction_goes_through_the_log_in_steps() -> None:
    """Each step covers at most COMPACT_STEP_REVISIONS revisions (one log entry, a bounded
    stretch of every member's loop); the whole is refused before any step when the
    revision is in the future, or already compacted."""

    async def scenario() -> None:
        cluster, services = await started()
        service = services[2]
        for index in range(2 * COMPACT_STEP_REVISIONS + 500):
            await cluster.complete(service.put(b"k%d" % index, b"v"))
        revision = service.current_revision()
        with pytest.raises(FutureRevision):
            await cluster.complete(service.compact(revision + 10))
        assert service.compacted_revision() == 0
        before = cluster.nodes[NodeId(1)].status().last_index
        result = await cluster.complete(service.compact(revision))
        assert result.header.revision == revision
        assert cluster.nodes[NodeId(1)].status().last_index - before == 3  # three steps
        for node in services.values():
            await cluster.run_until(lambda node=node: node.compacted_revision() == revision)
        with pytest.raises(Compacted):
            await cluster.complete(service.compact(revision - 5))
        await cluster.stop()

    run_scenario(scenario)


def test_a_compaction_bounds_each_step_and_the_whole_apart() -> None:
    """etcd's clients give a compaction their own deadline (etcdctl's check perf: 30 s for
    every key it wrote); raftkv bounds each step by its request timeout, and the whole only
    by that deadline, so a long compaction is not cut at one request's timeout."""

    async def scenario() -> None:
        cluster, services = await started()
        service = services[1]
        for index in range(2 * COMPACT_STEP_REVISIONS + 500):
            await cluster.complete(service.put(b"k%d" % index, b"v"))
        limits: list[float | None] = []
        write = service._write

        async def recording(*arguments: Any) -> Any:
            limits.append(arguments[-1])
            return await write(*arguments)

        service._write = recording  # type: ignore[method-assign]
        revision = service.current_revision()
        await cluster.complete(service.compact(revision - 1000, step_timeout=2.0))
        assert limits == [2.0, 2.0]  # no whole: each step alone is bounded
        limits.clear()
        await cluster.complete(service.compact(revision, timeout=60.0, step_timeout=2.0))
        assert limits == [2.0]  # the whole leaves more than a step
        await cluster.complete(service.put(b"more", b"v"))
        limits.clear()
        await cluster.complete(service.compact(revision + 1, timeout=1.5, step_timeout=2.0))
        assert len(limits) == 1 and limits[0] is not None and limits[0] <= 1.5
        await cluster.stop()

    run_scenario(scenario)


def test_serializable_reads_answer_without_a_quorum_linearizable_ones_do_not() -> None:
    async def scenario() -> None:
        cluster, services = await started(NodeSettings(read_timeout_s=2.0))
        await cluster.complete(services[1].put(b"x", b"1"))
        await cluster.run_until(
            lambda: all(service.machine.current_revision() == 2 for service in services.values())
        )
        cluster.network.isolate(address_of(NodeId(3)))
        local = await cluster.complete(services[3].get(b"x", serializable=True))
        assert [kv.value for kv in local.kvs] == [b"1"]
        with pytest.raises(ReadTimeout):
            await cluster.complete(services[3].get(b"x"))
        await cluster.stop()

    run_scenario(scenario)


def test_a_lease_granted_without_an_id_takes_it_from_the_services_rng() -> None:
    """Lease ids came from `secrets`, which no seed controls; a simulation passes a seeded
    rng (production keeps the OS's randomness)."""

    async def scenario() -> None:
        cluster, _ = await started()
        node = cluster.nodes[NodeId(1)]
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        granted = []
        for _ in range(2):
            service = KvService(node, machine, rng=Random(5))
            result = await cluster.complete(service.lease_grant(10))
            granted.append(result.id)
            await cluster.complete(service.lease_revoke(result.id))
        assert granted[0] == granted[1] == Random(5).randint(1, (1 << 63) - 1)
        await cluster.stop()

    run_scenario(scenario)


def test_defragment_gives_back_the_space_of_deleted_and_compacted_keys(tmp_path: Path) -> None:
    """KvService.defragment compacts the node's RocksDB files whole (on a worker thread):
    after a delete of every key and a compaction of their history, the storage shrinks."""

    async def scenario() -> None:
        cluster, services = await started_on_rocks(tmp_path)
        try:
            leader = cluster.leader()
            assert leader is not None
            service = services[int(leader.id)]
            value = b"v" * 4096
            for index in range(0, 2000, 50):
                txn = Txn(success=[Put(b"k%05d" % key, value) for key in range(index, index + 50)])
                await cluster.complete(service.txn(txn))
            await cluster.complete(service.delete_range(b"k", b"l"))
            await cluster.complete(service.compact(service.current_revision()))
            # Awaited on its own, not through cluster.complete: it needs no Raft progress,
            # only its worker thread, which simulated time racing ahead would outrun.
            before, after = await service.defragment()
            assert after < before, (before, after)
            assert before - after > 4_000_000  # most of the 8 MB of values
        finally:
            await stop_on_rocks(cluster, services)

    run_scenario(scenario)
