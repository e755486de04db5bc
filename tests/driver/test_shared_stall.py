"""A stall every member shares (one big entry applied on every loop at once: the closing
delete of `etcdctl check perf`) costs no election, unless lease reads need the leader's
lease to expire (raftkv.raft.driver.ticker)."""

from __future__ import annotations

from driver_helpers import memory_dict

from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.testing.local_cluster import LocalCluster, run_scenario
from raftkv.testing.state_machines import encode_set


async def stalled_cluster(settings: NodeSettings) -> tuple[LocalCluster, Node, list[int]]:
    """3 members that wrote once and then all stalled at once for three election
    timeouts, right after the stall; with the leader before it and every member's term."""
    cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
    await cluster.start()
    leader = await cluster.wait_for_leader()
    await cluster.complete(leader.propose(encode_set("a", "1")))
    await cluster.run_until(
        lambda: all(node.status().applied_index >= 2 for node in cluster.nodes.values())
    )
    terms = [node.status().term for node in cluster.nodes.values()]
    # Every loop stalls at once: the clock moves, and no loop runs meanwhile.
    cluster.clock.advance(3 * settings.election_timeout_s)
    await cluster.settle()
    return cluster, leader, terms


def test_a_stall_every_member_shares_elects_no_one() -> None:
    async def scenario() -> None:
        settings = NodeSettings()
        cluster, leader, terms = await stalled_cluster(settings)
        assert leader.is_leader, "the leader stepped down for a stall its followers shared"
        end = cluster.clock.now() + 2 * settings.election_timeout_s
        await cluster.run_until(lambda: cluster.clock.now() >= end)
        assert cluster.leader() is leader
        assert [node.status().term for node in cluster.nodes.values()] == terms
        await cluster.complete(leader.propose(encode_set("a", "2")))
        await cluster.stop()

    run_scenario(scenario)


def test_with_lease_reads_a_stalled_leader_lets_its_lease_expire() -> None:
    """Lease reads rest on the leader's notion of time: the ticks missed while stalled
    count, so its lease is over when the stall is (test_node_review has the stale read
    this prevents)."""

    async def scenario() -> None:
        cluster, leader, _ = await stalled_cluster(NodeSettings(lease_reads=True))
        assert not leader.is_leader
        await cluster.wait_for_leader()
        await cluster.stop()

    run_scenario(scenario)
