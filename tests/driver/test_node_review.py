"""Regressions for the driver review (each test names what was wrong)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from typing import Any, TypeVar

import pytest
from driver_helpers import memory_dict

from raftkv.raft.core.types import Entry, Message, MessageType, NodeId
from raftkv.raft.driver.envelope import (
    EnvelopeError,
    RequestId,
    decode_proposal,
    encode_proposal,
)
from raftkv.raft.driver.errors import Removed
from raftkv.raft.driver.settings import NodeSettings
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario
from raftkv.testing.state_machines import DictStateMachine, encode_set

T = TypeVar("T")


def test_a_stalled_leader_counts_the_ticks_it_missed_so_its_lease_expires() -> None:
    """Was: after a stall the ticker fired one tick, so a lease-reading leader still
    believed its lease held and served a read older than a write another leader had
    acknowledged meanwhile."""

    async def scenario() -> None:
        cluster = LocalCluster(
            3, state_machine=memory_dict, settings=NodeSettings(lease_reads=True)
        )
        await cluster.start()
        old = await cluster.wait_for_leader()
        await cluster.complete(old.propose(encode_set("a", "1")))
        progress = old._core().raft.tracker.progress
        await cluster.run_until(
            lambda: all(
                item.lease_ack_tick > 0 for peer, item in progress.items() if peer != old.id
            )
        )
        # The old leader stalls: its ticker does not run and nothing reaches it.
        buffered: list[Message] = []
        deliver = old.deliver
        old.deliver = buffered.extend  # type: ignore[method-assign]
        old._tasks[1].cancel()
        await cluster.run_until(
            lambda: any(node.is_leader and node is not old for node in cluster.nodes.values())
        )
        new = next(node for node in cluster.nodes.values() if node.is_leader and node is not old)
        await cluster.complete(new.propose(encode_set("a", "2")))
        # The stall ends: the ticker resumes where it was, and a read comes in before the
        # new leader's messages are delivered.
        old._tasks[1] = asyncio.get_running_loop().create_task(old._ticker.run())
        await asyncio.sleep(0)  # the resumed ticker runs first
        read = asyncio.ensure_future(old.linearizable_read(lambda machine: machine.data["a"]))
        await cluster.settle()
        assert not (read.done() and not read.exception() and read.result() == "1"), "stale"
        old.deliver = deliver  # type: ignore[method-assign]
        deliver(buffered)
        await cluster.run_until(read.done)
        if read.exception() is None:
            assert read.result() == "2"
        await cluster.stop()

    run_scenario(scenario)


def test_two_nodes_joining_at_once_both_join() -> None:
    """Was: the second join hit "a membership change is not applied yet" and gave up."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        joiners = [await cluster.add_joiner(NodeId(4)), await cluster.add_joiner(NodeId(5))]
        joins = [asyncio.ensure_future(joiner.join([address_of(leader.id)])) for joiner in joiners]
        await cluster.run_until(lambda: all(join.done() for join in joins), max_seconds=120)
        for join, joiner in zip(joins, joiners, strict=True):
            assert joiner.id in join.result().voters
        await cluster.run_until(lambda: {4, 5} <= set(leader.status().voters))
        await cluster.stop()

    run_scenario(scenario)


def test_a_forwarded_proposal_without_an_envelope_is_refused_not_fatal() -> None:
    """Was: the leader appended it, and applying it stopped every node, on every restart."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        garbage = Entry(term=0, index=0, data=b"\x02not-an-envelope-of-this-version-xxxx")
        leader.deliver(
            [
                Message(
                    type=MessageType.PROPOSE, sender=follower.id, to=leader.id, entries=(garbage,)
                )
            ]
        )
        assert await cluster.complete(leader.propose(encode_set("k", "v"))) == "v"
        assert all(node.failure is None for node in cluster.nodes.values())
        assert leader.stats.messages_rejected == 1
        await cluster.stop()

    run_scenario(scenario)


def test_an_undecodable_entry_in_the_log_is_skipped_alike_by_every_node() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        # As if an older or newer peer had appended it: straight into the leader's core.
        leader._core().propose(b"\x09" + b"x" * 40)
        leader._wake.set()
        assert await cluster.complete(leader.propose(encode_set("after", "1"))) == "1"
        await cluster.run_until(
            lambda: all(
                isinstance(node.state_machine, DictStateMachine)
                and node.state_machine.data == {"after": "1"}
                for node in cluster.nodes.values()
            )
        )
        assert all(node.failure is None for node in cluster.nodes.values())
        await cluster.stop()

    run_scenario(scenario)


def test_proposals_parked_without_a_leader_do_not_pile_up() -> None:
    """Was: timed-out proposals stayed in the parked list with their commands."""

    async def scenario() -> None:
        settings = NodeSettings(proposal_timeout_s=0.5, max_pending_requests=100)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        cluster.network.isolate(address_of(follower.id))
        await cluster.run_until(lambda: follower.leader_id == 0)
        for _ in range(10):
            batch = [asyncio.ensure_future(follower.propose(b"x" * 1000)) for _ in range(100)]
            await cluster.run_until(lambda batch=batch: all(task.done() for task in batch))
            for task in batch:
                task.exception()
        # (Plus the driver's own format declaration, which waits for a leader too.)
        assert len(follower._requests._parked) <= 100 + 1
        await cluster.stop()

    run_scenario(scenario)


def test_a_removed_node_fails_requests_at_once_and_peers_forget_it() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        victim = next(node for node in cluster.nodes.values() if node is not leader)
        await cluster.complete(leader.remove_member(victim.id))
        await cluster.run_until(lambda: victim.removed)
        with pytest.raises(Removed):
            await victim.propose(encode_set("a", "1"))
        # Forgotten by the others (its transport entry may come back while the removed
        # node still talks, learned from its frames; the membership does not).
        assert victim.id not in leader.status().peers
        await cluster.stop()

    run_scenario(scenario)


def test_a_node_asked_to_remove_itself_reports_the_change_not_an_error() -> None:
    """Found end to end: a follower asked (by a client) to remove itself forwarded the
    change, the leader applied it, and then its own read of the result failed with Removed:
    the client saw 503, retried, and was told the node was not a member."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        victim = next(node for node in cluster.nodes.values() if node is not leader)
        conf_state = await cluster.complete(victim.remove_member(victim.id))
        assert victim.id not in conf_state.voters
        assert victim.removed
        await cluster.stop()

    run_scenario(scenario)


def test_status_after_stop_does_not_touch_closed_storage() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(1, state_machine=memory_dict)
        await cluster.start()
        node = await cluster.wait_for_leader()
        await cluster.complete(node.propose(encode_set("a", "1")))
        await node.stop()
        cluster.storages[node.id].close()
        status = node.status()
        assert status.stopped and status.applied_index >= 3
        await cluster.stop()

    run_scenario(scenario)


def test_the_proposal_envelope_round_trips_and_refuses_other_versions() -> None:
    request = RequestId(NodeId(1), 7, 9)
    data = encode_proposal(request, b"cmd")
    assert decode_proposal(data) == (request, b"cmd")
    with pytest.raises(EnvelopeError, match="version 2"):
        decode_proposal(b"\x02" + data[1:])


class HeldWriter(concurrent.futures.Executor):
    """A one-thread writer stand-in: FIFO, runs at once unless held."""

    def __init__(self) -> None:
        self.hold = False
        self.queue: collections.deque[tuple[concurrent.futures.Future[Any], Any]] = (
            collections.deque()
        )

    def submit(self, function: Any, /, *arguments: Any, **keywords: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.queue.append((future, function))
        if not self.hold:
            self.pump()
        return future

    def holds_snapshot_install(self) -> bool:
        """A queued persist installs a snapshot (the driver submits a closure over
        storage.persist(hard_state, entries, snapshot, sync=...))."""
        for _, call in self.queue:
            cells = dict(zip(call.__code__.co_freevars, call.__closure__ or (), strict=True))
            function = cells["function"].cell_contents
            arguments = cells["arguments"].cell_contents
            if function.__name__ == "persist" and arguments[2] is not None:
                return True
        return False

    def pump(self) -> None:
        while self.queue:
            future, call = self.queue.popleft()
            try:
                future.set_result(call())
            except BaseException as error:
                future.set_exception(error)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pump()


def test_the_leaders_snapshot_landing_during_our_own_does_not_stop_the_node() -> None:
    """Was: our own snapshot finished after the leader's newer one was installed, moved
    the snapshot index backwards, and the next snapshot attempt failed as out of date,
    which stopped the node."""

    async def scenario() -> None:
        settings = NodeSettings(snapshot_every_entries=5, snapshot_keep_entries=0)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        # The members' format declarations (log_formats.py) are in the log first.
        await cluster.wait_for_batching()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        writer = HeldWriter()
        follower._writer._executor = writer
        # Index 6 ("a") is a snapshot point; the follower has applied past its snapshot.
        await cluster.complete(leader.propose(encode_set("a", "1")))
        await cluster.complete(leader.propose(encode_set("b", "1")))
        cluster.network.isolate(address_of(follower.id))
        # 24 more entries end the leader's log at index 31, where it also snapshots: the
        # follower installs a snapshot with nothing after it.
        for number in range(24):
            await cluster.complete(leader.propose(encode_set(f"k{number}", "v")))
        # The follower starts a (slow) snapshot of its own just as the leader's arrives.
        follower._applier._snapshot_wanted = True
        writer.hold = True
        cluster.network.heal()
        await cluster.run_until(
            lambda: (
                follower._applier._snapshot_write is not None and writer.holds_snapshot_install()
            )
        )
        writer.hold = False
        writer.pump()
        follower._wake.set()
        await cluster.run_until(lambda: len(follower.state_machine.data) == 26)  # type: ignore[attr-defined]
        index_after_install = follower.status().snapshot_index
        # Heartbeats come and go with nothing new to apply: a snapshot attempt at exactly
        # the installed index would be refused by the storage.
        resume_at = cluster.clock.now() + 2.0
        await cluster.run_until(lambda: cluster.clock.now() >= resume_at)
        assert follower.failure is None
        for number in range(10):
            await cluster.complete(leader.propose(encode_set(f"more{number}", "v")))
        await cluster.run_until(lambda: len(follower.state_machine.data) == 36)  # type: ignore[attr-defined]
        assert follower.failure is None
        assert follower.status().snapshot_index >= index_after_install
        await cluster.stop()

    run_scenario(scenario)
