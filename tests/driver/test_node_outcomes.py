"""A proposal's outcome is never misreported: once it has left its node (forwarded to the
leader, or appended as leader) and the node then stops, fails, is removed or loses its
leadership, the proposal ends with OutcomeUnknown, never with Stopped/Removed, which say
"nothing applied, retry" — in each test below the write was in fact applied.

Each scenario runs on a LocalCluster (ManualClock, in-process network, inline persistence),
cutting single directions of the network with a drop filter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from driver_helpers import FailingStorages, memory_dict

from raftkv.raft.core.types import Message, MessageType
from raftkv.raft.driver.errors import OutcomeUnknown, Stopped
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario
from raftkv.testing.state_machines import DictStateMachine, encode_set

# Long enough that no request of these tests ends by its deadline.
SETTINGS = NodeSettings(proposal_timeout_s=120.0)


def data_of(node: Node) -> dict[str, str]:
    machine = node.state_machine
    assert isinstance(machine, DictStateMachine)
    return machine.data


def cut(
    cluster: LocalCluster, source: Node, destination: Node, kinds: set[MessageType]
) -> Callable[[], None]:
    """Drop messages of `kinds` from `source` to `destination`; returns the undo."""

    def drop(from_address: str, to_address: str, message: Message) -> bool:
        return (
            from_address == address_of(source.id)
            and to_address == address_of(destination.id)
            and message.type in kinds
        )

    cluster.network.drop_filter = drop

    def undo() -> None:
        cluster.network.drop_filter = None

    return undo


def roles(cluster: LocalCluster, leader: Node) -> tuple[Node, Node]:
    follower, other = (node for node in cluster.nodes.values() if node is not leader)
    return follower, other


def test_a_forwarded_write_whose_follower_stops_is_outcome_unknown() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict, settings=SETTINGS)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower, _ = roles(cluster, leader)
        # The follower never hears that its write committed.
        cut(cluster, leader, follower, {MessageType.APPEND})
        write = asyncio.ensure_future(follower.propose(encode_set("w", "1")))
        await cluster.run_until(lambda: data_of(leader).get("w") == "1")
        assert not write.done()
        await follower.stop(transfer_leadership=False)
        with pytest.raises(OutcomeUnknown) as raised:
            await write
        assert isinstance(raised.value.__cause__, Stopped)
        await cluster.stop()

    run_scenario(scenario)


def test_a_forwarded_write_whose_follower_fails_is_outcome_unknown() -> None:
    async def scenario() -> None:
        storages = FailingStorages("no space left on device")
        cluster = LocalCluster(3, state_machine=memory_dict, settings=SETTINGS, storage=storages)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower, _ = roles(cluster, leader)
        undo = cut(cluster, leader, follower, {MessageType.APPEND})
        write = asyncio.ensure_future(follower.propose(encode_set("w", "1")))
        await cluster.run_until(lambda: data_of(leader).get("w") == "1")
        # The disk fills up: the follower fails on the write that would have told it.
        storages.by_node[follower.id].fail = True
        undo()
        await cluster.run_until(lambda: follower.status().stopped)
        with pytest.raises(OutcomeUnknown, match="no space left on device"):
            await write
        await cluster.stop()

    run_scenario(scenario)


def test_a_forwarded_write_whose_follower_is_removed_is_outcome_unknown() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict, settings=SETTINGS)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower, other = roles(cluster, leader)
        removal = asyncio.ensure_future(leader.remove_member(follower.id))
        write = asyncio.ensure_future(follower.propose(encode_set("w", "1")))
        await cluster.run_until(lambda: removal.done() and write.done())
        await removal
        assert follower.removed
        # The write was appended after the removal: the follower applied its removal
        # first and lost track of it; the others applied it.
        await cluster.run_until(lambda: data_of(other).get("w") == "1")
        assert data_of(leader).get("w") == "1"
        with pytest.raises(OutcomeUnknown) as raised:
            await write
        assert isinstance(raised.value.__cause__, Stopped)
        assert "removed" in str(raised.value)
        await cluster.stop()

    run_scenario(scenario)


def test_a_write_of_a_leader_that_lost_leadership_and_stopped_is_outcome_unknown() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict, settings=SETTINGS)
        await cluster.start()
        old_leader = await cluster.wait_for_leader()
        follower, other = roles(cluster, old_leader)

        # The write reaches one follower only, and its acknowledgement never comes back:
        # the old leader cannot commit it.
        def drop(from_address: str, to_address: str, message: Message) -> bool:
            return (from_address, to_address, message.type) in {
                (address_of(follower.id), address_of(old_leader.id), MessageType.APPEND_RESPONSE),
                (address_of(old_leader.id), address_of(other.id), MessageType.APPEND),
            }

        cluster.network.drop_filter = drop
        before = old_leader.status().last_index
        write = asyncio.ensure_future(old_leader.propose(encode_set("w", "1")))
        await cluster.run_until(lambda: follower.status().last_index > before)
        assert not write.done()
        cluster.network.drop_filter = None
        cluster.network.isolate(address_of(old_leader.id))
        # The follower (the longer log) is elected and commits the write in its term.
        await cluster.run_until(lambda: data_of(other).get("w") == "1", max_seconds=60)
        assert not write.done()
        await old_leader.stop(transfer_leadership=False)
        with pytest.raises(OutcomeUnknown):
            await write
        await cluster.stop()

    run_scenario(scenario)


def test_a_write_that_never_left_its_node_is_stopped() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict, settings=SETTINGS)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower, _ = roles(cluster, leader)
        # No leader known: the write is parked on the follower, never sent.
        cluster.network.isolate(address_of(follower.id))
        await cluster.run_until(lambda: follower.leader_id == 0, max_seconds=60)
        write = asyncio.ensure_future(follower.propose(encode_set("w", "1")))
        await cluster.settle()
        await follower.stop(transfer_leadership=False)
        with pytest.raises(Stopped):
            await write
        await cluster.stop()

    run_scenario(scenario)
