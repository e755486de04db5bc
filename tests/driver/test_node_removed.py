"""How a node learns, and tells, that it was removed from the cluster: `Node.on_removed`
observers run when the removal applies (the server ends its watches there), and a restart
from a snapshot taken after the removal still knows it."""

from __future__ import annotations

import pytest
from driver_helpers import memory_dict

from raftkv.raft.driver.errors import Removed
from raftkv.raft.driver.settings import NodeSettings
from raftkv.testing.local_cluster import LocalCluster, run_scenario
from raftkv.testing.state_machines import encode_set


def test_removal_observers_run_once_when_the_removal_applies() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        victim = next(node for node in cluster.nodes.values() if node is not leader)
        calls: list[tuple[str, bool]] = []
        victim.on_removed(lambda: calls.append(("observer", victim.removed)))
        unsubscribe = victim.on_removed(lambda: calls.append(("unsubscribed", True)))
        unsubscribe()
        leader.on_removed(lambda: calls.append(("leader", True)))
        await cluster.complete(leader.remove_member(victim.id))
        await cluster.run_until(lambda: victim.removed)
        # Called as the change applied, with the node already saying it is removed.
        assert calls == [("observer", True)]
        # An observer that comes later is told at once.
        victim.on_removed(lambda: calls.append(("late", victim.removed)))
        assert calls == [("observer", True), ("late", True)]
        await cluster.stop()

    run_scenario(scenario)


def test_a_removed_node_restarted_from_a_later_snapshot_knows_it_was_removed() -> None:
    """Was: `removed` was only set when the removal entry applied, so a node restarting
    from a snapshot that already held its removal believed itself a member and served
    its stale state."""

    async def scenario() -> None:
        settings = NodeSettings(snapshot_every_entries=1, snapshot_keep_entries=0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        victim = next(node for node in cluster.nodes.values() if node is not leader)
        await cluster.complete(leader.remove_member(victim.id))
        await cluster.run_until(lambda: victim.removed)
        removal = victim.status().applied_index
        await cluster.run_until(lambda: victim.status().snapshot_index >= removal)
        await cluster.crash(victim.id)
        restarted = await cluster.restart(victim.id)
        assert restarted.removed and restarted.status().removed
        with pytest.raises(Removed):
            await restarted.propose(encode_set("b", "2"))
        told: list[bool] = []
        restarted.on_removed(lambda: told.append(True))
        assert told == [True]
        await cluster.stop()

    run_scenario(scenario)


def test_a_member_that_missed_its_removal_learns_it_from_the_members() -> None:
    """The leader sends a removed member nothing once it applied the removal, so a member
    that missed the commit would never learn it and go on serving stale reads. Leaderless
    for two election timeouts, it asks the members; one that knows it was removed says so."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        victim = next(node for node in cluster.nodes.values() if node is not leader)
        victim_address = f"node-{victim.id}"
        # No Raft message reaches the victim any more (member requests still do).
        cluster.network.drop_filter = lambda _source, destination, _message: (
            destination == victim_address
        )
        calls: list[str] = []
        victim.on_removed(lambda: calls.append("removed"))
        await cluster.complete(leader.remove_member(victim.id))
        assert not victim.removed
        await cluster.run_until(lambda: victim.removed, max_seconds=60)
        assert calls == ["removed"]
        with pytest.raises(Removed):
            await victim.read_index()
        await cluster.stop()

    run_scenario(scenario)
