"""What a node does with messages a peer should not have sent (issue 12, part A): an
unknown sender is not heard, numbers no correct peer sends are refused, and a member that
lags behind the change that added its leader still catches up. Deterministic LocalCluster
(ManualClock, in-process network)."""

from __future__ import annotations

from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario
from raftkv.testing.state_machines import DictStateMachine, encode_set

STRANGER = NodeId(99)


def memory_dict(_: RaftStorage) -> DictStateMachine:
    return DictStateMachine()


def data_of(node: Node) -> dict[str, str]:
    machine = node.state_machine
    assert isinstance(machine, DictStateMachine)
    return machine.data


def heartbeat(sender: NodeId, to: NodeId, term: int, commit: int = 0) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, sender=sender, term=term, commit=commit)


def test_a_stranger_with_a_newer_term_is_not_heard() -> None:
    """Issue 12 A3: a heartbeat from an id that is no member, with a newer term, made every
    node adopt the term (the leader stepped down; with 2**64-1 no election could ever
    succeed again). Messages from ids no trusted source names are dropped; asking the
    members about the id teaches nothing, since none knows it."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        term = leader.status().term
        rejected = {node.id: node.stats.messages_rejected for node in cluster.nodes.values()}
        for node in cluster.nodes.values():
            node.deliver([heartbeat(STRANGER, node.id, term=2**62, commit=10**6)])
        await cluster.run_until(
            lambda: all(
                node.stats.messages_rejected > rejected[node.id] for node in cluster.nodes.values()
            )
        )
        assert await cluster.complete(leader.propose(encode_set("a", "1"))) == "1"
        for node in cluster.nodes.values():
            status = node.status()
            assert (status.term, status.leader_id) == (term, leader.id)
            assert STRANGER not in status.peers
            assert STRANGER not in node.transport.peers()
        await cluster.stop()

    run_scenario(scenario)


def test_a_term_no_node_could_encode_the_successor_of_is_refused_from_a_member() -> None:
    """A member's id with term 2**64-1 (or anything past MAX_TERM) is refused as malformed
    before it reaches the core: the cluster keeps its term and its leader."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        term = leader.status().term
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        before = follower.stats.messages_rejected
        follower.deliver([heartbeat(leader.id, follower.id, term=2**64 - 1, commit=2**64 - 1)])
        leader.deliver([heartbeat(follower.id, leader.id, term=2**64 - 1)])
        await cluster.run_until(lambda: follower.stats.messages_rejected > before)
        assert await cluster.complete(leader.propose(encode_set("a", "1"))) == "1"
        assert {node.status().term for node in cluster.nodes.values()} == {term}
        assert leader.is_leader
        await cluster.stop()

    run_scenario(scenario)


def test_a_member_lagging_behind_the_change_that_added_the_leader_catches_up() -> None:
    """Why frames used to carry an address the receiver learnt: a member cut off while a
    new node joined and became leader knows neither the new leader's id nor its address.
    Frames' claims are not trusted any more (issue 12 A4); the lagging member drops the
    unknown leader's messages, asks the members it knows about it, learns its address
    from them, and catches up (found as driver simulator seeds 154 and 208)."""

    async def scenario() -> None:
        settings = NodeSettings(promote_max_lag_entries=0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        lagging = next(node for node in cluster.nodes.values() if node is not leader)
        cluster.network.isolate(address_of(lagging.id))
        joiner = await cluster.add_joiner(NodeId(4))
        await cluster.complete(leader.add_learner(joiner.id, address_of(joiner.id)))
        await cluster.complete(leader.propose(encode_set("a", "1")))
        await cluster.run_until(lambda: data_of(joiner).get("a") == "1")
        await cluster.complete(leader.promote(joiner.id))
        await cluster.run_until(lambda: joiner.id in joiner.status().voters)
        await cluster.complete(leader.transfer_leadership(joiner.id))
        await cluster.run_until(lambda: joiner.is_leader)
        await cluster.complete(joiner.propose(encode_set("b", "2")))
        assert joiner.id not in lagging.status().peers
        cluster.network.heal()
        await cluster.run_until(lambda: data_of(lagging).get("b") == "2")
        assert lagging.leader_id == joiner.id
        assert lagging.status().peers[joiner.id] == address_of(joiner.id)
        await cluster.stop()

    run_scenario(scenario)
