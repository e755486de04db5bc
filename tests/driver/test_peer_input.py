"""What a node does with messages a peer should not have sent (issue 12, part A): an
unknown sender is not heard, numbers no correct peer sends are refused, and a member that
lags behind the change that added its leader still catches up. Deterministic LocalCluster
(ManualClock, in-process network)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import zstandard
from driver_helpers import memory_dict

from raftkv.kv import KvCommand, KvStateMachine, Put, Range
from raftkv.kv.commands import encode_command
from raftkv.raft.core.types import (
    ConfState,
    HardState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.driver.envelope import encode_snapshot
from raftkv.raft.driver.errors import StateUnusable
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.snapshot_chunks import encode_container
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.transport.base import MemberAction, MemberRequest
from raftkv.raft.transport.inprocess import InProcessNetwork
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario
from raftkv.testing.state_machines import DictStateMachine, encode_set

STRANGER = NodeId(99)


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
            # Nor does it take a place among the peers' "last contact" times.
            assert STRANGER not in status.last_contact_s
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


def kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


def put(key: bytes) -> bytes:
    return encode_command(KvCommand(Put(key, b"v"), "", 0))


def garbage_state() -> bytes:
    """KV snapshot bytes that decode (chunked, compressed, checksummed) but hold a record
    the store cannot open."""
    compressed = zstandard.ZstdCompressor().compress(
        msgspec.msgpack.encode([3, [[b"meta:mvcc", b"\xc1"]]])
    )
    return encode_container([compressed], prefix=b"RAFTKVS3")


@pytest.mark.parametrize(
    "data",
    [
        b"garbage with correct checksums",
        encode_snapshot({NodeId(1): address_of(NodeId(1))}, garbage_state()),
    ],
    ids=["envelope", "state"],
)
def test_a_snapshot_that_cannot_be_installed_is_refused_before_it_is_stored(data: bytes) -> None:
    """Issue 12 A5: a snapshot with garbage content (checksums correct) was installed and
    persisted; the node stopped, and failed the same way at every start. The receiving
    transport asks the node (check_snapshot: the envelope, then the KV state machine's
    validate_snapshot) before delivering it: refused, the transfer fails, nothing is
    stored, and the node keeps serving."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=kv_machine)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(put(b"a")))
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        status = follower.status()
        forged = Message(
            MessageType.SNAPSHOT,
            to=follower.id,
            sender=leader.id,
            term=status.term,
            snapshot=Snapshot(
                SnapshotMetadata(
                    status.commit_index + 100,
                    status.term,
                    ConfState(voters=frozenset(status.voters)),
                ),
                data,
            ),
        )
        stored_before = cluster.storages[follower.id].snapshot().metadata.index
        leader.transport.send([forged])
        await cluster.complete(leader.propose(put(b"b")))
        await cluster.run_until(
            lambda: all(value_of(node, b"b") == b"v" for node in cluster.nodes.values())
        )
        assert follower.failure is None and follower.stats.snapshots_installed == 0
        assert cluster.storages[follower.id].snapshot().metadata.index == stored_before
        # It restarts from what it stored.
        await cluster.crash(follower.id)
        restarted = await cluster.restart(follower.id)
        await cluster.complete(leader.propose(put(b"c")))
        await cluster.run_until(lambda: value_of(restarted, b"c") == b"v")
        await cluster.stop()

    run_scenario(scenario)


def value_of(node: Node, key: bytes) -> bytes | None:
    machine = node.state_machine
    assert isinstance(machine, KvStateMachine)
    found = machine.range(Range(key)).kvs
    return found[0].value if found else None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"junk", "snapshot envelope is malformed"),
        (encode_snapshot({NodeId(1): "a:1"}, b"junk"), "KV snapshot does not decode"),
    ],
    ids=["envelope", "state"],
)
def test_a_stored_snapshot_that_cannot_be_used_stops_the_start_with_one_clear_error(
    data: bytes, reason: str
) -> None:
    """A node that stored such a snapshot before refusing them: it fails to start with an
    error naming the snapshot and what to do, which `raftkv serve` prints as one line."""

    async def scenario() -> None:
        storage = MemoryStorage()
        storage.apply_snapshot(
            Snapshot(SnapshotMetadata(5, 2, ConfState(voters=frozenset({NodeId(1)}))), data)
        )
        node = Node(
            node_id=NodeId(1),
            storage=storage,
            transport=InProcessNetwork().transport("a:1"),
            state_machine=kv_machine(storage),
        )
        with pytest.raises(StateUnusable, match=f"index 5 cannot be used \\({reason}") as error:
            await node.start()
        assert "remove the node from the cluster" in str(error.value)
        assert "\n" not in str(error.value)

    asyncio.run(scenario())


def test_a_stored_term_past_the_largest_stops_the_start_naming_the_recovery() -> None:
    async def scenario() -> None:
        storage = MemoryStorage()
        storage.apply_snapshot(
            Snapshot(SnapshotMetadata(1, 1, ConfState(voters=frozenset({NodeId(1)}))))
        )
        storage.set_hard_state(HardState(term=2**64 - 1, commit=1))
        node = Node(
            node_id=NodeId(1),
            storage=storage,
            transport=InProcessNetwork().transport("a:1"),
            state_machine=DictStateMachine(),
        )
        with pytest.raises(StateUnusable, match="recover --force-new-cluster"):
            await node.start()

    asyncio.run(scenario())


def test_a_requester_that_is_not_a_member_may_only_join_as_itself() -> None:
    """Member requests name who asked when a certificate says so (peer_identity): a node
    that is not a member may ask what the members are, and to be added or promoted as
    itself, never to change another node or move leadership."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        try:
            leader = await cluster.wait_for_leader()
            follower = next(node for node in cluster.running() if node is not leader)
            for action, target in (
                (MemberAction.REMOVE, follower.id),
                (MemberAction.ADD_LEARNER, NodeId(8)),
                (MemberAction.PROMOTE, follower.id),
                (MemberAction.TRANSFER_LEADER, follower.id),
            ):
                request = MemberRequest(action, target, "127.0.0.1:1", requester=STRANGER)
                answer = await cluster.complete(leader.handle_member_request(request))
                assert (answer.ok, answer.error) == (False, "invalid"), action
                assert f"node {STRANGER} is not a member" in answer.message
            assert len(leader.status().voters) == 3
            members = MemberRequest(MemberAction.MEMBERS, STRANGER, requester=STRANGER)
            assert (await cluster.complete(leader.handle_member_request(members))).ok
            # A member (forwarding an operator's change, say) may ask anything.
            transfer = MemberRequest(
                MemberAction.TRANSFER_LEADER, follower.id, requester=follower.id
            )
            assert (await cluster.complete(leader.handle_member_request(transfer))).ok
            # The stranger asking to join as itself gets past the check: it is added.
            join = MemberRequest(
                MemberAction.ADD_LEARNER, STRANGER, address_of(STRANGER), requester=STRANGER
            )
            new_leader = await cluster.wait_for_leader()
            assert (await cluster.complete(new_leader.handle_member_request(join))).ok
            assert STRANGER in new_leader.status().learners
        finally:
            await cluster.stop()

    run_scenario(scenario)
