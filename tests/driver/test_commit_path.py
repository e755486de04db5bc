"""The leader's path from a quorum's acknowledgement to the answer: a Ready that only moves
the commit index is written on the loop (no fsync, nothing ahead of it on the writer), its
entries are applied in the same turn, and the new commit index goes to the followers before
that apply, so that they apply with the leader (docs/performance.md). The writer thread is
stood in for by an executor that runs each write at once: seeded, simulated time, no
sleeps."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any

from driver_helpers import memory_dict

from raftkv.raft.core.types import Entry, HardState, Message, MessageType, Snapshot
from raftkv.raft.driver.envelope import RequestId
from raftkv.raft.driver.settings import NodeSettings
from raftkv.testing.local_cluster import LocalCluster, run_scenario
from raftkv.testing.state_machines import encode_set


class ImmediateExecutor(concurrent.futures.Executor):
    """A writer thread that is never busy: runs each write at once, saying so meanwhile."""

    def __init__(self) -> None:
        self.running = False

    def submit(self, function: Any, /, *arguments: Any, **keywords: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.running = True
        try:
            future.set_result(function(*arguments, **keywords))
        finally:
            self.running = False
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def recorded_persists(node: Any) -> list[tuple[Any, ...]]:
    """Give `node` a writer thread (an ImmediateExecutor) and record each of its storage
    writes: ("persist", sync, on the writer?, snapshot?)."""
    executor = ImmediateExecutor()
    node._writer._executor = executor
    events: list[tuple[Any, ...]] = []
    persist = node.storage.persist

    def recording_persist(
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        events.append(("persist", sync, executor.running, snapshot is not None))
        persist(hard_state, entries, snapshot, sync=sync)

    node.storage.persist = recording_persist
    return events


def record_sent(
    node: Any, events: list[tuple[Any, ...]], describe: Callable[[Message], tuple[Any, ...] | None]
) -> None:
    """Add to `events` what `describe` makes of each message `node` sends (None: nothing)."""
    send = node.transport.send

    def recording_send(messages: Sequence[Message]) -> None:
        for message in messages:
            event = describe(message)
            if event is not None:
                events.append(event)
        send(messages)

    node.transport.send = recording_send


def test_a_commit_index_move_is_written_on_the_loop_and_sent_before_the_apply() -> None:
    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict, seed=7)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        events = recorded_persists(leader)
        record_sent(
            leader,
            events,
            lambda message: (
                ("append", message.commit, len(message.entries))
                if message.type is MessageType.APPEND
                else None
            ),
        )

        complete = leader._requests.complete

        def recording_complete(request: RequestId, outcome: object) -> None:
            events.append(("answered",))
            complete(request, outcome)

        leader._requests.complete = recording_complete  # type: ignore[method-assign]

        await cluster.complete(leader.propose(encode_set("b", "2")))
        index = leader.status().commit_index
        await cluster.stop()

        persists = [event for event in events if event[0] == "persist"]
        # The entry is fsynced on the writer; the commit index moves unsynced, on the loop.
        assert ("persist", True, True, False) in persists
        assert ("persist", False, False, False) in persists
        assert all(running for _, sync, running, _ in persists if sync)
        answered = events.index(("answered",))
        # The entry went out before the answer, and so did the news that it is committed:
        # the followers apply it while the leader does (a long apply stalls every loop at
        # once, which costs no election).
        assert any(event[0] == "append" and event[2] for event in events[:answered])
        announce = next(
            position
            for position, event in enumerate(events)
            if event[0] == "append" and event[1] >= index
        )
        assert announce < answered

    run_scenario(scenario)


def test_a_commit_index_move_behind_a_write_under_way_waits_for_the_writer() -> None:
    """The writer keeps order: with a write queued on it, the commit-only write queues
    too (and its messages go at once, as before)."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict, seed=7)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        writer = leader._writer
        writer._executor = ImmediateExecutor()
        # Pretend a write is under way: submit_inline must not run inline.
        writer._under_way += 1
        future = writer.submit_inline(lambda: "late")
        assert not future.done()
        writer._under_way -= 1
        await cluster.run_until(future.done)
        assert future.result()[0] == "late"
        await cluster.stop()

    run_scenario(scenario)


def test_a_follower_fsyncs_its_entries_on_the_loop_and_acknowledges_after() -> None:
    """On a follower the thread would overlap nothing (rocksdict holds the GIL through the
    fsync): the entries are written on the loop, and the acknowledgement follows the
    write."""

    async def scenario() -> None:
        cluster = LocalCluster(3, state_machine=memory_dict, seed=7)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        await cluster.complete(leader.propose(encode_set("a", "1")))
        follower = next(node for node in cluster.running() if node is not leader)
        events = recorded_persists(follower)
        record_sent(
            follower,
            events,
            lambda message: (
                ("acknowledged", message.index)
                if message.type is MessageType.APPEND_RESPONSE and not message.reject
                else None
            ),
        )
        await cluster.complete(leader.propose(encode_set("b", "2")))
        index = leader.status().commit_index
        await cluster.run_until(lambda: follower.status().applied_index >= index)
        await cluster.stop()

        synced = [
            position for position, event in enumerate(events) if event[:2] == ("persist", True)
        ]
        assert synced, events
        assert all(not events[position][2] for position in synced)
        acknowledged = next(
            position
            for position, event in enumerate(events)
            if event[0] == "acknowledged" and event[1] >= index
        )
        assert synced[0] < acknowledged

    run_scenario(scenario)


def test_a_follower_writes_a_snapshot_it_receives_on_the_writer() -> None:
    async def scenario() -> None:
        settings = NodeSettings(snapshot_every_entries=20, snapshot_keep_entries=5)
        cluster = LocalCluster(3, state_machine=memory_dict, settings=settings, seed=7)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        lagging = next(node for node in cluster.running() if node is not leader)
        await cluster.crash(lagging.id)
        for number in range(60):
            await cluster.complete(leader.propose(encode_set(f"k{number}", str(number))))
        assert leader.status().first_index > 30
        restarted = await cluster.restart(lagging.id)
        events = recorded_persists(restarted)
        await cluster.run_until(lambda: restarted.stats.snapshots_installed >= 1)
        await cluster.stop()

        snapshots = [event for event in events if event[3]]
        assert snapshots and all(event[2] for event in snapshots)
        # Once caught up by the snapshot, it writes what follows on the loop again.
        assert any(event[1] and not event[2] and not event[3] for event in events)

    run_scenario(scenario)
