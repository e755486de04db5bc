"""Batch entries (NodeSettings.batch_proposals): batchable commands proposed together share
one log entry, and still apply in order, each once, each with its own result; the envelope
that carries them refuses anything malformed."""

from __future__ import annotations

import asyncio
import re
import struct

import pytest
from driver_helpers import memory_dict

from raftkv.raft.core.errors import ProposalDropped
from raftkv.raft.core.types import EntryKind, NodeId
from raftkv.raft.driver.envelope import (
    MAX_BATCH_COMMANDS,
    EnvelopeError,
    RequestId,
    decode_proposals,
    encode_batch,
    encode_proposal,
    is_declaration,
)
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario
from raftkv.testing.lossy_storage import LossyMemoryStorage
from raftkv.testing.state_machines import (
    DictStateMachine,
    DurableDictStateMachine,
    encode_incr,
    encode_set,
)

BATCHING = NodeSettings(batch_proposals=True)


def durable_dict(storage: RaftStorage) -> DurableDictStateMachine:
    return DurableDictStateMachine(storage.app_data())


async def started(settings: NodeSettings = BATCHING) -> tuple[LocalCluster, Node]:
    """A 3-node cluster of DictStateMachines with `settings`, and its leader, once every
    member has declared it reads batch entries (log_formats.py)."""
    cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
    await cluster.start()
    leader = await cluster.wait_for_leader()
    await cluster.wait_for_batching()
    return cluster, leader


async def leader_besides(cluster: LocalCluster, old_leader: Node) -> Node:
    """The leader the others elect once `old_leader` is cut off."""

    def elected() -> Node | None:
        nodes = cluster.nodes.values()
        return next((node for node in nodes if node.is_leader and node is not old_leader), None)

    await cluster.run_until(lambda: elected() is not None)
    new_leader = elected()
    assert new_leader is not None
    return new_leader


def request(sequence: int) -> RequestId:
    return RequestId(NodeId(2), 77, sequence)


# -- the envelope ------------------------------------------------------------------------------


def test_a_batch_decodes_to_its_proposals_in_order_and_a_single_one_as_before() -> None:
    proposals = [(request(1), b"first"), (request(2), b""), (request(3), b"\x02third")]
    assert decode_proposals(encode_batch(proposals)) == proposals
    assert decode_proposals(encode_proposal(request(9), b"\x02alone")) == [
        (request(9), b"\x02alone")
    ]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"\x02\x00\x00", "shorter than its header"),
        (struct.pack(">BI", 2, 0), "batch of 0 commands"),
        (struct.pack(">BI", 2, 1) + struct.pack(">QQQI", 1, 1, 1, 0), "batch of 1 commands"),
        (struct.pack(">BI", 2, MAX_BATCH_COMMANDS + 1), "commands (2 to"),
        (struct.pack(">BI", 2, 2) + struct.pack(">QQQI", 1, 1, 1, 0), "cut short"),
        (
            struct.pack(">BI", 2, 2)
            + struct.pack(">QQQI", 1, 1, 1, 0)
            + struct.pack(">QQQI", 1, 1, 2, 9)
            + b"short",
            "runs past the entry's end",
        ),
        (encode_batch([(request(1), b"a"), (request(2), b"b")]) + b"x", "bytes after"),
        (b"\x03" + bytes(40), "version 3 is unknown"),
    ],
)
def test_a_malformed_batch_is_refused(data: bytes, complaint: str) -> None:
    with pytest.raises(EnvelopeError, match=re.escape(complaint)):
        decode_proposals(data)


def test_a_batch_holds_two_to_max_batch_commands() -> None:
    with pytest.raises(ValueError, match="2 to"):
        encode_batch([(request(1), b"a")])


# -- a cluster that batches ---------------------------------------------------------------------


def entries_of(cluster: LocalCluster, node_id: NodeId) -> list[list[tuple[RequestId, bytes]]]:
    """The proposals of each command entry in `node_id`'s log."""
    storage = cluster.storages[node_id]
    entries = storage.entries(storage.first_index(), storage.last_index() + 1, 1 << 30)
    return [
        decode_proposals(entry.data)
        for entry in entries
        if entry.kind is EntryKind.NORMAL and entry.data and not is_declaration(entry.data)
    ]


def test_commands_proposed_together_share_entries_apply_in_order_each_with_its_result() -> None:
    async def scenario() -> None:
        cluster, leader = await started()
        increments = [leader.propose(encode_incr("n"), batchable=True) for _ in range(50)]
        results = await cluster.complete(asyncio.gather(*increments))
        # Each caller has the value its own increment made, in the order they proposed.
        assert results == [str(value) for value in range(1, 51)]
        assert leader.stats.proposals_batched > 0
        batches = entries_of(cluster, leader.id)
        assert sum(len(batch) for batch in batches) == 50 and len(batches) < 50
        await cluster.run_until(
            lambda: all(
                isinstance(machine := node.state_machine, DictStateMachine)
                and machine.data.get("n") == "50"
                for node in cluster.nodes.values()
            )
        )
        for node in cluster.nodes.values():
            machine = node.state_machine
            assert isinstance(machine, DictStateMachine)
            applied = machine.applied_commands
            assert len(applied) == len(set(applied)) == 50 and applied == sorted(applied)
        await cluster.stop()

    run_scenario(scenario)


def test_a_command_not_batchable_keeps_an_entry_of_its_own_in_its_place() -> None:
    async def scenario() -> None:
        cluster, leader = await started()
        proposals = [
            leader.propose(encode_incr("n"), batchable=number % 5 != 0) for number in range(30)
        ]
        results = await cluster.complete(asyncio.gather(*proposals))
        assert results == [str(value) for value in range(1, 31)]
        batches = entries_of(cluster, leader.id)
        assert any(len(batch) > 1 for batch in batches)
        # The six not batchable (every fifth) are each alone in an entry.
        alone = [batch for batch in batches if len(batch) == 1]
        assert len(alone) >= 6
        await cluster.stop()

    run_scenario(scenario)


def test_batches_from_a_follower_are_forwarded_and_applied() -> None:
    async def scenario() -> None:
        cluster, leader = await started()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        sets = [follower.propose(encode_set(f"k{n}", "v"), batchable=True) for n in range(40)]
        assert await cluster.complete(asyncio.gather(*sets)) == ["v"] * 40
        assert follower.stats.proposals_batched > 0
        assert any(len(batch) > 1 for batch in entries_of(cluster, leader.id))
        await cluster.stop()

    run_scenario(scenario)


def test_a_batch_stays_within_max_command_bytes() -> None:
    async def scenario() -> None:
        cluster, leader = await started(NodeSettings(batch_proposals=True, max_command_bytes=200))
        sets = [leader.propose(encode_set(f"k{n:02}", "v"), batchable=True) for n in range(40)]
        await cluster.complete(asyncio.gather(*sets))
        storage = cluster.storages[leader.id]
        entries = storage.entries(storage.first_index(), storage.last_index() + 1, 1 << 30)
        assert all(len(entry.data) <= 200 for entry in entries)
        assert max(len(batch) for batch in entries_of(cluster, leader.id)) > 1
        await cluster.stop()

    run_scenario(scenario)


def test_an_overwritten_batch_fails_every_proposal_in_it_with_proposal_dropped() -> None:
    async def scenario() -> None:
        settings = NodeSettings(batch_proposals=True, proposal_timeout_s=60.0)
        cluster, old_leader = await started(settings)
        cluster.network.isolate(address_of(old_leader.id))
        doomed = [
            asyncio.ensure_future(old_leader.propose(encode_set(f"lost{n}", "1"), batchable=True))
            for n in range(5)
        ]
        await cluster.run_until(lambda: old_leader.stats.proposals_batched > 0)
        new_leader = await leader_besides(cluster, old_leader)
        await cluster.complete(new_leader.propose(encode_set("kept", "1")))
        cluster.network.heal()
        await cluster.run_until(lambda: all(future.done() for future in doomed), max_seconds=20)
        for future in doomed:
            with pytest.raises(ProposalDropped):
                future.result()
        await cluster.stop()

    run_scenario(scenario)


def test_a_batch_whose_apply_a_crash_lost_applies_whole_and_once_from_the_log() -> None:
    """The state machine's writes are not fsynced (the log is): every node crashes after
    the batch committed, losing its applies, and replays the batch from the log."""

    async def scenario() -> None:
        cluster = LocalCluster(
            3,
            state_machine=durable_dict,
            settings=BATCHING,
            storage=lambda _: LossyMemoryStorage(),
        )
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.wait_for_batching()
        increments = [leader.propose(encode_incr("n"), batchable=True) for _ in range(20)]
        assert await cluster.complete(asyncio.gather(*increments)) == [
            str(value) for value in range(1, 21)
        ]
        assert leader.stats.proposals_batched > 0
        leader = await cluster.crash_all_and_restart()
        assert await cluster.complete(leader.propose(encode_incr("n"))) == "21"

        def replayed() -> bool:
            values = []
            for node in cluster.nodes.values():
                machine = node.state_machine
                assert isinstance(machine, DurableDictStateMachine)
                values.append(machine.get("n"))
            return values == ["21"] * 3

        await cluster.run_until(replayed)
        await cluster.stop()

    run_scenario(scenario)
