"""The asyncio driver (`raftkv.raft.driver.Node`) on a deterministic LocalCluster:
ManualClock, inline persistence, in-process network."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import pytest
from driver_helpers import FailingStorages, memory_dict

from raftkv.raft.core.errors import InvalidArgument, NotLeader, ProposalDropped
from raftkv.raft.core.types import NO_NODE, Message, MessageType, NodeId, StateRole
from raftkv.raft.driver.errors import (
    LearnerNotCaughtUp,
    MembershipError,
    OutcomeUnknown,
    ProposalTimeout,
    ReadTimeout,
    Stopped,
)
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import StateMachine
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario
from raftkv.testing.state_machines import (
    BadCommand,
    DictStateMachine,
    DurableDictStateMachine,
    encode_incr,
    encode_set,
)

T = TypeVar("T")


def durable_dict(storage: RaftStorage) -> DurableDictStateMachine:
    return DurableDictStateMachine(storage.app_data())


def dict_of(cluster: LocalCluster, node_id: int) -> dict[str, str]:
    state_machine = cluster.nodes[NodeId(node_id)].state_machine
    if isinstance(state_machine, DictStateMachine):
        return state_machine.data
    assert isinstance(state_machine, DurableDictStateMachine)
    return state_machine.items()


def test_three_nodes_elect_one_leader_and_replicate() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        result = await cluster.complete(leader.propose(encode_set("a", "1")))
        assert result == "1"
        await cluster.run_until(lambda: all(dict_of(cluster, n) == {"a": "1"} for n in (1, 2, 3)))
        await cluster.stop()

    run_scenario(scenario)


def test_follower_proposal_is_forwarded_and_resolves_when_applied_locally() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        result = await cluster.complete(follower.propose(encode_incr("n", 5)))
        assert result == "5"
        # Resolved on apply *on the follower*: its own state already has it.
        assert dict_of(cluster, follower.id)["n"] == "5"
        await cluster.stop()

    run_scenario(scenario)


def test_forwarding_disabled_raises_not_leader_with_hint() -> None:
    async def scenario() -> None:
        settings = NodeSettings(forward_proposals=False)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        with pytest.raises(NotLeader) as raised:
            await cluster.complete(follower.propose(encode_set("a", "1")))
        assert raised.value.leader_hint == leader.id
        await cluster.stop()

    run_scenario(scenario)


def test_group_commit_many_proposals_share_few_fsyncs() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        before = leader.stats.fsyncs
        results = await cluster.complete(
            asyncio.gather(*(leader.propose(encode_incr("n")) for _ in range(200)))
        )
        assert sorted(int(str(value)) for value in results) == list(range(1, 201))
        fsyncs = leader.stats.fsyncs - before
        # All 200 were queued before the loop ran: one batch, a handful of syncs at most.
        assert fsyncs <= 3, fsyncs
        await cluster.stop()

    run_scenario(scenario)


def test_group_commit_respects_the_batch_limit() -> None:
    async def scenario() -> None:
        settings = NodeSettings(max_batch_entries=10)
        cluster = LocalCluster(1, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        before = leader.stats.fsyncs
        await cluster.complete(
            asyncio.gather(*(leader.propose(encode_incr("n")) for _ in range(100)))
        )
        assert leader.stats.fsyncs - before >= 10
        await cluster.stop()

    run_scenario(scenario)


def test_a_bad_command_fails_its_proposal_only() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        with pytest.raises(BadCommand):
            await cluster.complete(leader.propose(b"\xc1 not msgpack"))
        assert await cluster.complete(leader.propose(encode_set("k", "v"))) == "v"
        await cluster.stop()

    run_scenario(scenario)


def test_read_index_on_a_follower_sees_every_acknowledged_write() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        # Hold back the follower's appends so it lags, then read through it.
        cluster.network.drop_filter = lambda _source, destination, _message: (
            destination == address_of(follower.id)
        )
        await cluster.complete(leader.propose(encode_set("x", "1")))
        assert "x" not in dict_of(cluster, follower.id)
        cluster.network.drop_filter = None
        value = await cluster.complete(
            follower.linearizable_read(lambda machine: machine.data.get("x"))
        )
        assert value == "1"
        await cluster.stop()

    run_scenario(scenario)


def test_concurrent_reads_share_one_read_index_request() -> None:
    """Reads queued together ask the leader once (etcd's batched ReadIndex): 50 reads on a
    follower send far fewer than 50 MsgReadIndex, and each sees the write before it."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        await cluster.complete(leader.propose(encode_set("x", "1")))
        asked = 0

        def count(_source: str, _destination: str, message: Message) -> bool:
            nonlocal asked
            asked += message.type is MessageType.READ_INDEX
            return False

        cluster.network.drop_filter = count
        reads = [
            follower.linearizable_read(lambda machine: machine.data.get("x")) for _ in range(50)
        ]
        values = await cluster.complete(asyncio.gather(*reads))
        assert values == ["1"] * 50
        assert 1 <= asked <= 2
        await cluster.stop()

    run_scenario(scenario)


def test_read_without_a_quorum_times_out_and_reads_nothing() -> None:
    async def scenario() -> None:
        settings = NodeSettings(read_timeout_s=2.0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        cluster.network.isolate(address_of(leader.id))
        with pytest.raises(ReadTimeout):
            await cluster.complete(leader.read_index())
        await cluster.stop()

    run_scenario(scenario)


def test_proposal_to_an_isolated_leader_times_out() -> None:
    async def scenario() -> None:
        settings = NodeSettings(proposal_timeout_s=2.0, check_quorum=False)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        cluster.network.isolate(address_of(leader.id))
        with pytest.raises(ProposalTimeout):
            await cluster.complete(leader.propose(encode_set("a", "1")))
        await cluster.stop()

    run_scenario(scenario)


def test_an_overwritten_proposal_fails_fast_with_proposal_dropped() -> None:
    async def scenario() -> None:
        settings = NodeSettings(proposal_timeout_s=60.0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        old_leader = await cluster.wait_for_leader()
        cluster.network.isolate(address_of(old_leader.id))
        doomed = asyncio.ensure_future(old_leader.propose(encode_set("lost", "1")))
        await cluster.run_until(
            lambda: any(
                node.is_leader and node is not old_leader for node in cluster.nodes.values()
            )
        )
        new_leader = next(
            node for node in cluster.nodes.values() if node.is_leader and node is not old_leader
        )
        await cluster.complete(new_leader.propose(encode_set("kept", "1")))
        cluster.network.heal()
        await cluster.run_until(doomed.done, max_seconds=20)
        with pytest.raises(ProposalDropped):
            doomed.result()
        await cluster.run_until(lambda: dict_of(cluster, old_leader.id).get("kept") == "1")
        assert "lost" not in dict_of(cluster, old_leader.id)
        await cluster.stop()

    run_scenario(scenario)


def test_leader_crash_the_rest_elect_and_the_old_leader_catches_up() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        await cluster.crash(leader.id)
        new_leader = await cluster.wait_for_leader()
        assert new_leader.id != leader.id
        await cluster.complete(new_leader.propose(encode_set("b", "2")))
        restarted = await cluster.restart(leader.id)
        await cluster.run_until(lambda: dict_of(cluster, restarted.id) == {"a": "1", "b": "2"})
        # Rebuilt from the log on restart: every command applied exactly once.
        state_machine = restarted.state_machine
        assert isinstance(state_machine, DictStateMachine)
        assert len(state_machine.applied_commands) == len(set(state_machine.applied_commands))
        await cluster.stop()

    run_scenario(scenario)


def test_durable_state_machine_restarts_without_reapplying() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=durable_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        for number in range(20):
            await cluster.complete(leader.propose(encode_incr("count")))
            if number == 10:
                await cluster.crash(NodeId(1) if leader.id != 1 else NodeId(2))
        await cluster.stop()
        for node_id in cluster.founders:
            await cluster.restart(node_id)
        await cluster.wait_for_leader()
        # incr is not idempotent: a re-applied entry would show as a count above 20.
        await cluster.run_until(
            lambda: all(dict_of(cluster, n).get("count") == "20" for n in (1, 2, 3))
        )
        await cluster.stop()

    run_scenario(scenario)


def test_snapshot_compacts_the_log_and_catches_up_a_lagging_follower() -> None:
    async def scenario() -> None:
        settings = NodeSettings(snapshot_every_entries=20, snapshot_keep_entries=5)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        lagging = next(node for node in cluster.nodes.values() if node is not leader)
        await cluster.crash(lagging.id)
        for number in range(60):
            await cluster.complete(leader.propose(encode_set(f"k{number}", str(number))))
        assert leader.stats.snapshots_created >= 2
        assert leader.status().first_index > 30
        restarted = await cluster.restart(lagging.id)
        await cluster.run_until(lambda: len(dict_of(cluster, restarted.id)) == 60)
        assert restarted.stats.snapshots_installed >= 1
        await cluster.stop()

    run_scenario(scenario)


def test_snapshots_also_come_by_bytes_of_log() -> None:
    async def scenario() -> None:
        # By count alone it would never snapshot; big commands make it by bytes.
        settings = NodeSettings(
            snapshot_every_entries=1_000_000, snapshot_keep_entries=0, snapshot_every_bytes=40_000
        )
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        for number in range(8):
            await cluster.complete(leader.propose(encode_set(f"k{number}", "x" * 10_000)))
        # 80 KB of commands: two snapshots at ~40 KB each, and the log compacted after them.
        assert leader.stats.snapshots_created == 2
        assert leader.status().first_index > 4
        await cluster.stop()

    run_scenario(scenario)


class BackgroundDict(DurableDictStateMachine):
    """A BackgroundSnapshots state machine: captures its snapshot now, hands it out later."""

    def snapshot_later(self) -> Callable[[], bytes]:
        captured = self.snapshot()
        return lambda: captured


def test_a_node_lends_its_state_to_incoming_snapshots_when_it_snapshots_in_the_background() -> None:
    async def check(factory: Callable[[RaftStorage], StateMachine], lends: bool) -> None:
        cluster = LocalCluster(3, state_machine=factory)
        await cluster.start()
        node = cluster.nodes[NodeId(1)]
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        await cluster.run_until(lambda: dict_of(cluster, 1) == {"a": "1"})
        expected = node.state_machine.snapshot() if lends else None
        assert await node.local_snapshot_data() == expected
        await cluster.stop()
        assert await node.local_snapshot_data() is None

    async def scenario() -> None:
        await check(memory_dict, lends=False)
        await check(lambda storage: BackgroundDict(storage.app_data()), lends=True)

    run_scenario(scenario)


def test_membership_add_learner_promote_and_remove() -> None:
    async def scenario() -> None:
        settings = NodeSettings(promote_max_lag_entries=0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        for number in range(5):
            await cluster.complete(leader.propose(encode_set(f"k{number}", "v")))
        joiner = await cluster.add_joiner(NodeId(4))
        follower = next(node for node in cluster.nodes.values() if node.id not in (leader.id, 4))
        # Membership calls work from any member: a follower asks the leader.
        conf_state = await cluster.complete(follower.add_learner(NodeId(4), address_of(NodeId(4))))
        assert 4 in conf_state.learners
        await cluster.run_until(lambda: len(dict_of(cluster, 4)) == 5)
        conf_state = await cluster.complete(leader.promote(NodeId(4)))
        assert 4 in conf_state.voters
        await cluster.run_until(lambda: 4 in joiner.status().voters)
        conf_state = await cluster.complete(leader.remove_member(follower.id))
        assert follower.id not in conf_state.voters
        await cluster.run_until(lambda: follower.removed)
        assert await cluster.complete(leader.propose(encode_set("after", "1"))) == "1"
        await cluster.stop()

    run_scenario(scenario)


def test_a_removed_id_is_never_reused_and_a_zombie_is_not_heard() -> None:
    async def scenario() -> None:
        settings = NodeSettings(
            snapshot_every_entries=5, snapshot_keep_entries=0, promote_max_lag_entries=0
        )
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        zombie = next(node_id for node_id in cluster.nodes if node_id != leader.id)
        # Down when removed: it will never learn it was.
        await cluster.crash(zombie)
        await cluster.complete(leader.remove_member(zombie))
        with pytest.raises(MembershipError, match="never reused"):
            await cluster.complete(leader.add_learner(zombie, address_of(zombie)))
        for number in range(12):  # snapshots taken after the removal, the log compacted
            await cluster.complete(leader.propose(encode_set(f"k{number}", "v")))
        # A new member catches up from such a snapshot: it learns the removed id there.
        joiner = await cluster.add_joiner(NodeId(4))
        await cluster.complete(leader.add_learner(NodeId(4), address_of(NodeId(4))))
        await cluster.run_until(lambda: len(dict_of(cluster, 4)) == 12)
        assert joiner.stats.snapshots_installed >= 1
        assert zombie in joiner.removed_ids and zombie in leader.removed_ids
        # The zombie comes back believing it is a voter and campaigns: nobody hears it.
        others = [node for node_id, node in cluster.nodes.items() if node_id != zombie]
        rejected = {node.id: node.stats.messages_rejected for node in others}
        restarted = await cluster.restart(zombie)
        survivor = next(node for node in others if node.id not in (leader.id, 4))
        await cluster.run_until(
            lambda: (
                survivor.stats.messages_rejected > rejected[survivor.id]
                and leader.stats.messages_rejected > rejected[leader.id]
            )
        )
        assert not restarted.is_leader and leader.is_leader
        assert await cluster.complete(leader.propose(encode_set("after", "1"))) == "1"
        # A restart rebuilds the removed ids from the snapshot and the log.
        await cluster.crash(survivor.id)
        again = await cluster.restart(survivor.id)
        assert zombie in again.removed_ids
        await cluster.stop()

    run_scenario(scenario)


def test_promote_refuses_a_learner_that_lags() -> None:
    async def scenario() -> None:
        settings = NodeSettings(promote_max_lag_entries=0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.add_learner(NodeId(4), address_of(NodeId(4))))
        # Node 4 was never started: it cannot have caught up.
        await cluster.complete(leader.propose(encode_set("a", "1")))
        with pytest.raises(LearnerNotCaughtUp):
            await cluster.complete(leader.promote(NodeId(4)))
        await cluster.stop()

    run_scenario(scenario)


@pytest.mark.parametrize("voters", [1, 3])
def test_promote_refuses_a_learner_that_never_answered_however_short_the_log(
    voters: int,
) -> None:
    """Two requests used to brick a young cluster: its log is shorter than
    promote_max_lag_entries, so a learner that never answered (not started, or added at a
    mistyped address) passed as caught up and became a voter that cannot vote."""

    async def scenario() -> None:
        cluster = LocalCluster(voters, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        learner = NodeId(voters + 1)
        await cluster.complete(leader.add_learner(learner, "nowhere:1"))
        assert leader.status().last_index < leader.settings.promote_max_lag_entries
        with pytest.raises(LearnerNotCaughtUp, match="never been heard from"):
            await cluster.complete(leader.promote(learner))
        assert learner in leader.status().learners
        assert await cluster.complete(leader.propose(encode_set("a", "1"))) == "1"
        await cluster.stop()

    run_scenario(scenario)


def test_transfer_leadership_and_leader_change_observers() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        seen: list[tuple[int, int]] = []
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        follower.on_leader_change(lambda leader_id, term: seen.append((leader_id, term)))
        target = next(
            node for node in cluster.nodes.values() if node is not leader and node is not follower
        )
        new_leader = await cluster.complete(leader.transfer_leadership(target.id))
        assert new_leader == target.id
        await cluster.run_until(lambda: follower.leader_id == target.id)
        assert seen and seen[-1][0] == target.id
        await cluster.stop()

    run_scenario(scenario)


def test_leader_changes_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """An operator sees elections in the log without debug logging (issue 14 item 14)."""
    caplog.set_level(logging.INFO, logger="raftkv.node")

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        term = leader.status().term
        await cluster.run_until(
            lambda: all(node.leader_id == leader.id for node in cluster.nodes.values())
        )
        messages = [record.getMessage() for record in caplog.records]
        assert messages.count(f"this node is the leader at term {term}") == 1
        assert messages.count(f"node {leader.id} is the leader at term {term}") == 2
        await cluster.stop()

    run_scenario(scenario)


def test_a_follower_forwards_a_leadership_transfer_to_the_leader() -> None:
    """Any member transfers leadership, as any member changes the membership: a follower
    sends the request to the leader, and the leader's refusals come back as its errors."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower, other = (node for node in cluster.nodes.values() if node is not leader)
        # To another follower, asked on a follower.
        assert await cluster.complete(follower.transfer_leadership(other.id)) == other.id
        await cluster.run_until(lambda: follower.leader_id == other.id)
        # To the follower asked itself.
        assert await cluster.complete(follower.transfer_leadership(follower.id)) == follower.id
        await cluster.run_until(lambda: leader.leader_id == follower.id)
        # No target: the leader picks the most caught-up voter (not itself).
        new_leader = await cluster.complete(leader.transfer_leadership())
        assert new_leader in (leader.id, other.id)
        await cluster.run_until(lambda: follower.leader_id == new_leader)
        # A target that is no member is refused by the leader, as it would be there.
        asked = next(node for node in cluster.nodes.values() if node.id != new_leader)
        with pytest.raises(InvalidArgument, match="non-member"):
            await cluster.complete(asked.transfer_leadership(NodeId(9)))
        # A follower that knows no leader says so.
        isolated = asked
        cluster.network.isolate(address_of(isolated.id))
        await cluster.run_until(lambda: isolated.leader_id == NO_NODE)
        with pytest.raises(NotLeader):
            await cluster.complete(isolated.transfer_leadership(NodeId(new_leader)))
        await cluster.stop()

    run_scenario(scenario)


def test_graceful_stop_of_the_leader_hands_over_leadership() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        await cluster.complete(leader.stop())
        others = [node for node in cluster.nodes.values() if node is not leader]
        # Handed over: a successor leads at once, no election timeout needed.
        assert any(node.status().role is StateRole.LEADER for node in others)
        with pytest.raises(Stopped):
            await leader.propose(encode_set("b", "2"))
        await cluster.stop()

    run_scenario(scenario)


def test_a_stopping_leader_stops_waiting_for_a_successor_that_cannot_come() -> None:
    """Its hand-over is bounded by stop_transfer_timeout_s (3 s), but a whole cluster
    stopped at once, or a transferee already gone, must not cost all of it."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        others = [node for node in cluster.nodes.values() if node is not leader]
        election_timeout = cluster.settings.election_timeout_s
        assert cluster.settings.stop_transfer_timeout_s > 2 * election_timeout
        # Every member stopping at once: the successor stops mid-campaign.
        started = cluster.clock.now()
        await cluster.complete(asyncio.gather(*(node.stop() for node in cluster.nodes.values())))
        assert cluster.clock.now() - started <= 1.5 * election_timeout
        assert others  # the followers went at once
        # The transferee already gone: the core gives the transfer up.
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        for node in cluster.nodes.values():
            if node is not leader:
                await cluster.complete(node.stop(transfer_leadership=False))
        started = cluster.clock.now()
        await cluster.complete(leader.stop())
        assert cluster.clock.now() - started <= 1.5 * election_timeout
        await cluster.stop()

    run_scenario(scenario)


def test_pending_requests_end_on_stop() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        cluster.network.isolate(address_of(leader.id))
        pending = asyncio.ensure_future(leader.propose(encode_set("a", "1")))
        read = asyncio.ensure_future(leader.read_index())
        await cluster.settle()
        await leader.stop(transfer_leadership=False)
        # Appended to the leader's log: restarted and re-elected, it could still commit it.
        with pytest.raises(OutcomeUnknown):
            await pending
        with pytest.raises(Stopped):
            await read
        await cluster.stop()

    run_scenario(scenario)


def test_garbage_messages_are_dropped_not_fatal() -> None:
    from raftkv.raft.core.types import Entry, Message, MessageType

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        leader.deliver(
            [
                # Out-of-order entries: malformed.
                Message(
                    type=MessageType.APPEND,
                    to=leader.id,
                    sender=NodeId(2),
                    term=1,
                    entries=(Entry(term=1, index=9), Entry(term=1, index=3)),
                ),
                # Misrouted.
                Message(type=MessageType.HEARTBEAT, to=NodeId(77), sender=NodeId(2), term=1),
                # A response from a node that is not a member.
                Message(type=MessageType.APPEND_RESPONSE, to=leader.id, sender=NodeId(99), term=1),
            ]
        )
        assert await cluster.complete(leader.propose(encode_set("a", "1"))) == "1"
        assert leader.stats.messages_rejected == 3
        await cluster.stop()

    run_scenario(scenario)


def test_storage_failure_stops_the_node_and_names_the_error() -> None:
    async def scenario() -> None:
        storages = FailingStorages()
        cluster = LocalCluster(3, state_machine=memory_dict, storage=storages)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        storages.by_node[leader.id].fail = True
        # Sent to the followers before the leader's own write failed: it may apply.
        with pytest.raises(OutcomeUnknown, match="disk on fire"):
            await cluster.complete(leader.propose(encode_set("a", "1")))
        await cluster.run_until(lambda: leader.status().stopped)
        assert isinstance(leader.failure, OSError)
        with pytest.raises(Stopped, match="disk on fire"):
            await leader.wait_stopped()
        await cluster.stop()

    run_scenario(scenario)


def test_join_adds_a_learner_catches_it_up_and_promotes_it() -> None:
    async def scenario() -> None:
        settings = NodeSettings(snapshot_every_entries=10, snapshot_keep_entries=2)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        for number in range(30):
            await cluster.complete(leader.propose(encode_set(f"k{number}", "v")))
        joiner = await cluster.add_joiner(NodeId(4))
        follower = next(node for node in cluster.nodes.values() if node.id not in (leader.id, 4))
        # Any member's address will do: a follower redirects to the leader.
        conf_state = await cluster.complete(joiner.join([address_of(follower.id)]))
        assert 4 in conf_state.voters
        assert len(dict_of(cluster, 4)) == 30
        assert joiner.stats.snapshots_installed == 1
        await cluster.complete(joiner.propose(encode_set("from-joiner", "1")))
        # Joining twice is harmless.
        await cluster.complete(joiner.join([address_of(leader.id)]))
        await cluster.stop()

    run_scenario(scenario)


def test_adding_an_existing_member_again_is_idempotent_unless_the_address_differs() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        voter = NodeId(2) if leader.id != 2 else NodeId(3)
        conf_state = await cluster.complete(leader.add_learner(voter, address_of(voter)))
        assert voter in conf_state.voters  # unchanged: a retried join is harmless
        with pytest.raises(MembershipError, match="already a member"):
            await cluster.complete(leader.add_learner(voter, "elsewhere:1"))
        await cluster.stop()

    run_scenario(scenario)


def test_a_member_update_gives_every_member_its_new_address() -> None:
    """`update_member` through a follower: every member then knows the new address (the
    configuration unchanged); a retry changes nothing; a non-member, an empty address or
    another member's address is refused."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower = next(node for node in cluster.running() if node.id != leader.id)
        moved = next(NodeId(node) for node in (1, 2, 3) if node not in (leader.id, follower.id))
        before = leader.status()
        conf_state = await cluster.complete(follower.update_member(moved, "moved:7"))
        assert conf_state.voters == frozenset(before.voters)
        assert conf_state.learners == frozenset(before.learners)
        await cluster.run_until(
            lambda: all(node._membership.peers()[moved] == "moved:7" for node in cluster.running())
        )
        again = await cluster.complete(leader.update_member(moved, "moved:7"))
        assert again == conf_state
        for target, address, refusal in (
            (NodeId(9), "x:1", "not a member"),
            (moved, "", "needs its new address"),
            (moved, address_of(leader.id), f"address of member {leader.id}"),
        ):
            with pytest.raises(MembershipError, match=refusal):
                await cluster.complete(leader.update_member(target, address))
        await cluster.stop()

    run_scenario(scenario)


def test_a_command_over_the_limit_is_refused_before_anything_happens() -> None:
    from raftkv.raft.core.errors import InvalidArgument

    async def scenario() -> None:
        cluster = LocalCluster(
            1, state_machine=memory_dict, settings=NodeSettings(max_command_bytes=100)
        )
        await cluster.start()
        leader = await cluster.wait_for_leader()
        with pytest.raises(InvalidArgument, match="max_command_bytes"):
            await leader.propose(b"x" * 101)
        assert leader.status().pending_proposals == 0
        await cluster.stop()

    run_scenario(scenario)
