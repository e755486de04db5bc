"""`AutoCompactor` on a 3-node LocalCluster (manual clock): the leader keeps the last
`retention` revisions; followers propose nothing; every member compacts at the same point."""

from __future__ import annotations

import pytest

from raftkv.kv import KvService, KvStateMachine
from raftkv.raft.storage.base import RaftStorage
from raftkv.server.compactor import AutoCompactor
from raftkv.testing.local_cluster import LocalCluster, run_scenario


def kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


def test_the_leader_compacts_to_the_retention_and_followers_do_nothing() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=kv_machine)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        services = {}
        for node_id, node in cluster.nodes.items():
            machine = node.state_machine
            assert isinstance(machine, KvStateMachine)
            services[node_id] = KvService(node, machine)
        for index in range(30):
            await cluster.complete(services[leader.id].put(b"k%d" % (index % 3), b"v"))
        assert services[leader.id].machine.current_revision() == 31
        follower = next(node for node in cluster.nodes if node != leader.id)
        assert await AutoCompactor(services[follower], 10, 1.0).compact_once() == 0

        compactor = AutoCompactor(services[leader.id], 10, 1.0)
        compactor.start()
        await cluster.run_until(
            lambda: all(s.machine.compacted_revision() == 21 for s in services.values())
        )
        assert compactor.compactions == 1
        # Nothing new written: nothing more to compact.
        assert await cluster.complete(compactor.compact_once()) == 0
        await cluster.complete(services[leader.id].put(b"k0", b"w"))
        assert await cluster.complete(compactor.compact_once()) == 22
        await compactor.stop()
        await cluster.run_until(
            lambda: len({s.machine.state_hash() for s in services.values()}) == 1
        )
        await cluster.stop()

    run_scenario(scenario)


def test_retention_and_interval_are_checked() -> None:
    with pytest.raises(ValueError, match="retention >= 1"):
        AutoCompactor(None, 0, 1.0)  # type: ignore[arg-type]
