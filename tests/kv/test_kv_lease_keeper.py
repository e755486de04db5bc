"""LeaseKeeper on a 3-node LocalCluster: the state machines count down on the cluster's
ManualClock, so expiry times below are simulated seconds, checked against the TTL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from raftkv.kv import KvService, KvStateMachine, LeaseKeeper, Range
from raftkv.kv.errors import LeaseNotFound
from raftkv.kv.lease_keeper import LeaseKeeperSettings
from raftkv.kv.validation import MAX_CHECKPOINT_LEASES
from raftkv.raft.core.types import MessageType, NodeId
from raftkv.raft.driver.node import Node
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario

T = TypeVar("T")

INTERVAL_S = 0.25
# One election timeout at most, with the default NodeSettings (2 × 10 ticks of 0.1 s).
ELECTION_TIMEOUT_S = 2.0


@dataclass
class Kv:
    cluster: LocalCluster
    keeper_settings: LeaseKeeperSettings
    services: dict[NodeId, KvService]
    keepers: dict[NodeId, LeaseKeeper]

    @property
    def now(self) -> float:
        return self.cluster.clock.now()

    def machine(self, node_id: NodeId) -> KvStateMachine:
        return self.services[node_id].machine

    def attach(self, node: Node) -> None:
        """A service and a keeper (not started) for the node's current state machine."""
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        assert machine.clock is self.cluster.clock
        self.services[node.id] = KvService(node, machine)
        self.keepers[node.id] = LeaseKeeper(self.services[node.id], self.keeper_settings)

    def leader(self) -> NodeId:
        leader = self.cluster.leader()
        assert leader is not None
        return leader.id

    def followers(self) -> list[NodeId]:
        return [node_id for node_id in self.services if node_id != self.leader()]

    def running(self) -> list[NodeId]:
        return [node.id for node in self.cluster.running()]

    def recorded_ms(self, node_id: NodeId, lease_id: int) -> int | None:
        """The remaining time the node's lease record holds (None: no such lease)."""
        record = self.machine(node_id).lease(lease_id)
        return None if record is None else record.remaining_ms

    def lease_gone(self, lease_id: int, nodes: list[NodeId] | None = None) -> bool:
        return all(
            self.machine(node_id).lease(lease_id) is None for node_id in nodes or self.running()
        )

    async def run(self, awaitable: Awaitable[T]) -> T:
        return await self.cluster.complete(awaitable)

    async def wait(self, seconds: float) -> None:
        """Let `seconds` of simulated time pass (the cluster and keepers keep running)."""
        until = self.now + seconds
        await self.cluster.run_until(lambda: self.now >= until, max_seconds=seconds + 1)

    async def stop(self) -> None:
        for keeper in self.keepers.values():
            await keeper.stop()
        await self.cluster.stop()


async def started(
    keeper_settings: LeaseKeeperSettings | None = None, *, start_keepers: bool = False
) -> Kv:
    def machine(storage: RaftStorage) -> KvStateMachine:
        return KvStateMachine(storage.app_data(), clock=cluster.clock)

    cluster = LocalCluster(3, state_machine=machine)
    await cluster.start()
    await cluster.wait_for_leader()
    kv = Kv(cluster, keeper_settings or LeaseKeeperSettings(interval_s=INTERVAL_S), {}, {})
    for node in cluster.nodes.values():
        kv.attach(node)
        if start_keepers:
            kv.keepers[node.id].start()
    return kv


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    run_scenario(scenario, timeout_s=120.0)


# -- expiry ---------------------------------------------------------------------------------


def test_a_lease_without_keep_alives_expires_about_its_ttl_after_the_grant() -> None:
    async def scenario() -> None:
        kv = await started(start_keepers=True)
        leader = kv.leader()
        service = kv.services[leader]
        sent = kv.now
        await kv.run(service.lease_grant(3, 42))
        granted = kv.now
        await kv.run(service.put(b"session/a", b"1", lease=42))
        await kv.run(service.put(b"kept", b"1"))
        await kv.cluster.run_until(lambda: kv.machine(leader).lease(42) is None)
        expired_at = kv.now
        assert expired_at - sent >= 3.0  # never before the TTL
        assert expired_at - granted <= 3.0 + 2 * INTERVAL_S
        await kv.cluster.run_until(lambda: kv.lease_gone(42))
        for node_id in kv.services:
            kvs = kv.machine(node_id).range(Range(b"\0", b"\0")).kvs
            assert [kv_.key for kv_ in kvs] == [b"kept"]
            assert 42 not in kv.machine(node_id).lease_timers
        keeper = kv.keepers[leader]
        assert keeper.expired == 1
        assert 0 <= keeper.expiry_delays[0] <= 2 * INTERVAL_S
        assert all(kv.keepers[node_id].expired == 0 for node_id in kv.followers())
        await kv.stop()

    run(scenario)


def test_a_lease_kept_alive_every_third_of_its_ttl_survives_then_expires() -> None:
    async def scenario() -> None:
        kv = await started(start_keepers=True)
        service = kv.services[kv.followers()[0]]  # keep-alives forwarded to the leader
        await kv.run(service.lease_grant(3, 7))
        await kv.run(service.put(b"k", b"v", lease=7))
        last_sent = kv.now
        for _ in range(12):  # 12 s: four TTLs
            await kv.wait(1.0)
            last_sent = kv.now
            await kv.run(service.lease_keep_alive(7))
            assert not kv.lease_gone(7, [kv.leader()])
        for node_id in kv.running():
            assert kv.machine(node_id).lease_keys(7) == [b"k"]
        assert all(keeper.expired == 0 for keeper in kv.keepers.values())
        # Once nobody keeps it alive it goes, TTL after the last keep-alive.
        await kv.cluster.run_until(lambda: kv.lease_gone(7, [kv.leader()]))
        assert 3.0 <= kv.now - last_sent <= 3.0 + 2 * INTERVAL_S + 0.2
        await kv.stop()

    run(scenario)


def test_an_expiry_naming_an_earlier_renewal_is_a_no_op() -> None:
    async def scenario() -> None:
        kv = await started()
        service = kv.services[kv.leader()]
        await kv.run(service.lease_grant(5, 3))
        await kv.run(service.put(b"k", b"v", lease=3))
        granted = kv.machine(kv.leader()).lease(3)
        assert granted is not None
        await kv.run(service.lease_keep_alive(3))
        renewed = kv.machine(kv.leader()).lease(3)
        assert renewed is not None and renewed.renewed_index > granted.renewed_index
        stale = await kv.run(service.lease_expire(3, granted.renewed_index))
        assert not stale.revoked
        assert kv.machine(kv.leader()).lease_keys(3) == [b"k"]
        current = await kv.run(service.lease_expire(3, renewed.renewed_index))
        assert current.revoked and current.deleted == 1
        await kv.cluster.run_until(lambda: kv.lease_gone(3))
        await kv.stop()

    run(scenario)


def test_a_keep_alive_committed_before_the_keepers_expiry_wins() -> None:
    """The leader decides (its countdown ran out) while a keep-alive is already on its way
    into the log: the keep-alive is applied first, so the expiry names a stale renewal."""

    async def scenario() -> None:
        kv = await started(LeaseKeeperSettings(interval_s=INTERVAL_S, checkpoint_interval_s=0))
        leader = kv.leader()
        service, keeper = kv.services[leader], kv.keepers[leader]
        await kv.run(service.lease_grant(2, 9))
        await kv.run(service.put(b"k", b"v", lease=9))
        granted = kv.machine(leader).lease(9)
        assert granted is not None
        assert await kv.run(keeper.run_once()) == 0  # ready for this term; nothing expired
        timers = kv.machine(leader).lease_timers
        await kv.cluster.run_until(lambda: bool(timers.expired(10)))
        keep_alive = asyncio.ensure_future(service.lease_keep_alive(9))
        assert await keeper.run_once() == 1  # the expiry is proposed after the keep-alive
        await kv.run(keep_alive)
        await kv.cluster.run_until(lambda: not keeper._tasks and not keeper._in_flight)
        assert keeper.expired == 0
        for node_id in kv.services:
            record = kv.machine(node_id).lease(9)
            assert record is not None and record.renewed_index > granted.renewed_index
            assert kv.machine(node_id).lease_keys(9) == [b"k"]
        await kv.stop()

    run(scenario)


def test_followers_never_propose_expiries() -> None:
    async def scenario() -> None:
        kv = await started()
        leader = kv.leader()
        await kv.run(kv.services[leader].lease_grant(2, 5))
        await kv.wait(3.0)
        for node_id in kv.services:
            assert [lease_id for lease_id, _ in kv.machine(node_id).lease_timers.expired(10)] == [5]
        before = kv.cluster.nodes[leader].status().last_index
        for node_id in kv.followers():
            assert await kv.run(kv.keepers[node_id].run_once()) == 0
        await kv.wait(0.5)
        assert kv.cluster.nodes[leader].status().last_index == before
        assert not kv.lease_gone(5, kv.running())
        assert await kv.run(kv.keepers[leader].run_once()) == 1
        await kv.cluster.run_until(lambda: kv.lease_gone(5))
        assert kv.keepers[leader].expired == 1
        await kv.stop()

    run(scenario)


# -- leader changes -------------------------------------------------------------------------


def test_after_the_leader_crashes_the_new_leader_expires_the_lease_on_time() -> None:
    async def scenario() -> None:
        checkpoint_interval = 1.0
        kv = await started(
            LeaseKeeperSettings(interval_s=INTERVAL_S, checkpoint_interval_s=checkpoint_interval),
            start_keepers=True,
        )
        ttl = 4
        old_leader = kv.leader()
        service = kv.services[old_leader]
        await kv.run(service.lease_grant(ttl, 11))
        await kv.run(service.put(b"k", b"v", lease=11))
        for _ in range(5):
            await kv.wait(1.0)
            last_sent = kv.now
            await kv.run(service.lease_keep_alive(11))
        old_timer = kv.machine(old_leader).lease_timers.get(11)
        assert old_timer is not None
        await kv.keepers[old_leader].stop()
        await kv.cluster.crash(old_leader)
        survivors = kv.running()
        await kv.cluster.run_until(lambda: kv.lease_gone(11, survivors), max_seconds=30)
        removed_at = kv.now
        new_leader = kv.leader()
        assert new_leader != old_leader
        assert kv.keepers[new_leader].expired == 1
        # Not early: after the old leader's own deadline, itself TTL after the keep-alive.
        assert removed_at >= old_timer.deadline >= last_sent + ttl
        # Not late: within TTL + a checkpoint interval + a few election timeouts.
        assert removed_at - last_sent <= ttl + checkpoint_interval + 3 * ELECTION_TIMEOUT_S
        for node_id in survivors:
            assert kv.machine(node_id).range(Range(b"k")).kvs == []
        await kv.stop()

    run(scenario)


def test_a_new_leader_that_had_not_applied_the_last_keep_alive_does_not_expire_early() -> None:
    """The old leader commits a keep-alive and crashes before telling the followers: their
    countdowns still run from the keep-alive before, and have run out by the time one of
    them leads. Its keeper must first apply what the old leader committed."""

    async def scenario() -> None:
        kv = await started(
            LeaseKeeperSettings(interval_s=INTERVAL_S, checkpoint_interval_s=0),
            start_keepers=True,
        )
        ttl = 2
        old_leader = kv.leader()
        service = kv.services[old_leader]
        await kv.run(service.lease_grant(ttl, 5))
        await kv.run(service.put(b"k", b"v", lease=5))
        for _ in range(3):
            await kv.wait(1.0)
            await kv.run(service.lease_keep_alive(5))
        await kv.wait(1.0)
        # The next entry is the last keep-alive: the followers receive it, but hear of no
        # commit index covering it.
        last_index = kv.cluster.nodes[old_leader].status().last_index + 1
        old_address = address_of(old_leader)
        kv.cluster.network.drop_filter = lambda sender, _, message: (
            sender == old_address
            and message.type in (MessageType.APPEND, MessageType.HEARTBEAT)
            and message.commit >= last_index
        )
        last_sent = kv.now
        await kv.run(service.lease_keep_alive(5))
        old_timer = kv.machine(old_leader).lease_timers.get(5)
        assert old_timer is not None and old_timer.renewed_index == last_index
        await kv.keepers[old_leader].stop()
        await kv.cluster.crash(old_leader)
        kv.cluster.network.drop_filter = None
        survivors = kv.running()
        for node_id in survivors:
            stale = kv.machine(node_id).lease_timers.get(5)
            assert stale is not None and stale.deadline < old_timer.deadline
        await kv.cluster.run_until(lambda: kv.lease_gone(5, survivors), max_seconds=30)
        removed_at = kv.now
        assert removed_at >= old_timer.deadline >= last_sent + ttl
        assert removed_at - last_sent <= ttl + 3 * ELECTION_TIMEOUT_S + 2 * INTERVAL_S
        assert sum(kv.keepers[node_id].expired for node_id in survivors) == 1
        await kv.stop()

    run(scenario)


# -- checkpoints ----------------------------------------------------------------------------


def test_a_checkpoint_records_the_remaining_ttl_on_every_node() -> None:
    async def scenario() -> None:
        kv = await started()
        leader = kv.leader()
        service = kv.services[leader]
        await kv.run(service.lease_grant(10, 1))
        await kv.run(service.lease_grant(30, 2))
        await kv.wait(6.0)
        assert await kv.run(kv.keepers[leader].checkpoint_once()) == 2
        assert kv.keepers[leader].checkpoints == 1

        await kv.cluster.run_until(
            lambda: all((kv.recorded_ms(node_id, 1) or 10_000) < 10_000 for node_id in kv.services)
        )
        for node_id in kv.services:
            assert 3_700 <= (kv.recorded_ms(node_id, 1) or 0) <= 4_000
            assert 23_700 <= (kv.recorded_ms(node_id, 2) or 0) <= 24_000
            # Replicated: every node holds what the leader read.
            assert kv.recorded_ms(node_id, 1) == kv.recorded_ms(leader, 1)
        await kv.stop()

    run(scenario)


def test_a_checkpoint_of_more_leases_than_one_command_holds_is_split() -> None:
    async def scenario() -> None:
        kv = await started()
        leader = kv.leader()
        service = kv.services[leader]
        count = MAX_CHECKPOINT_LEASES + 5
        await kv.run(
            asyncio.gather(*(service.lease_grant(60, lease_id) for lease_id in range(1, count + 1)))
        )
        await kv.wait(10.0)
        before = kv.cluster.nodes[leader].status().last_index
        assert await kv.run(kv.keepers[leader].checkpoint_once()) == count
        assert kv.cluster.nodes[leader].status().last_index == before + 2  # two commands
        await kv.cluster.run_until(
            lambda: all(
                (kv.recorded_ms(node_id, lease_id) or 60_000) <= 50_000
                for node_id in kv.services
                for lease_id in (1, count)
            )
        )
        assert all((kv.recorded_ms(leader, i) or 60_000) <= 50_000 for i in range(1, count + 1))
        await kv.stop()

    run(scenario)


def test_a_restarted_node_counts_down_from_the_checkpoint() -> None:
    async def scenario() -> None:
        kv = await started()
        leader = kv.leader()
        await kv.run(kv.services[leader].lease_grant(10, 1))
        await kv.wait(6.0)
        await kv.run(kv.keepers[leader].checkpoint_once())
        follower = kv.followers()[0]
        await kv.cluster.run_until(lambda: (kv.recorded_ms(follower, 1) or 10_000) < 10_000)
        checkpointed = kv.recorded_ms(follower, 1)
        assert checkpointed is not None and checkpointed <= 4_000
        await kv.cluster.crash(follower)
        await kv.wait(1.0)  # downtime is not counted: the countdown starts at the restart
        kv.attach(await kv.cluster.restart(follower))
        remaining = kv.machine(follower).lease_timers.remaining_s(1)
        assert remaining == pytest.approx(checkpointed / 1000, abs=0.001)
        await kv.stop()

    run(scenario)


def test_after_the_whole_cluster_restarts_a_lease_expires_from_its_checkpoint() -> None:
    """Not its full TTL again: the countdown resumes from the last checkpoint."""

    async def scenario() -> None:
        kv = await started(LeaseKeeperSettings(interval_s=INTERVAL_S, checkpoint_interval_s=0))
        leader = kv.leader()
        await kv.run(kv.services[leader].lease_grant(20, 1))
        await kv.run(kv.services[leader].put(b"k", b"v", lease=1))
        await kv.wait(15.0)
        await kv.run(kv.keepers[leader].checkpoint_once())
        await kv.cluster.run_until(
            lambda: all((kv.recorded_ms(node_id, 1) or 20_000) < 20_000 for node_id in kv.services)
        )
        recorded = kv.recorded_ms(leader, 1)
        assert recorded is not None and recorded <= 5_000
        checkpointed_s = recorded / 1000
        for node_id in list(kv.services):
            await kv.keepers[node_id].stop()
            await kv.cluster.crash(node_id)
        restarted_at = kv.now
        for node_id in list(kv.services):
            kv.attach(await kv.cluster.restart(node_id))
            kv.keepers[node_id].start()
        await kv.cluster.run_until(lambda: kv.lease_gone(1), max_seconds=30)
        elapsed = kv.now - restarted_at
        assert elapsed >= checkpointed_s
        assert elapsed <= checkpointed_s + 2 * INTERVAL_S + 3 * ELECTION_TIMEOUT_S
        assert elapsed < 20 - 5  # far from a full TTL again
        await kv.stop()

    run(scenario)


def test_lease_status_reads_this_nodes_countdown() -> None:
    async def scenario() -> None:
        kv = await started()
        leader = kv.leader()
        await kv.run(kv.services[leader].lease_grant(10, 4))
        await kv.run(kv.services[leader].put(b"k", b"v", lease=4))
        await kv.wait(2.0)
        for node_id in kv.services:
            status = await kv.run(kv.services[node_id].lease_status(4, keys=True))
            assert (status.granted_ttl, status.keys) == (10, [b"k"])
            assert 7.5 <= status.remaining_s <= 8.0
        await kv.run(kv.services[leader].lease_revoke(4))
        with pytest.raises(LeaseNotFound):
            await kv.run(kv.services[leader].lease_status(4))
        await kv.stop()

    run(scenario)


def test_a_slow_checkpoint_does_not_hold_up_expiries() -> None:
    async def scenario() -> None:
        kv = await started(LeaseKeeperSettings(interval_s=INTERVAL_S, checkpoint_interval_s=1.0))
        leader = kv.leader()
        service = kv.services[leader]
        keeper = kv.keepers[leader]
        stuck = asyncio.Event()
        checkpoints: list[object] = []

        async def hanging_checkpoint(*arguments: object, **options: object) -> None:
            checkpoints.append(arguments)
            await stuck.wait()

        service.lease_checkpoint = hanging_checkpoint  # type: ignore[method-assign,assignment]
        await kv.run(service.lease_grant(2, 7))
        await kv.run(keeper.run_once())  # ready for this term; starts counting to a checkpoint
        await kv.wait(1.5)
        await kv.run(keeper.run_once())  # starts the checkpoint, which hangs
        assert len(checkpoints) == 1
        await kv.wait(1.0)  # the lease's TTL has passed
        await kv.run(keeper.run_once())  # still expires it, and starts no second checkpoint
        await kv.cluster.run_until(lambda: kv.lease_gone(7))
        assert keeper.expired == 1 and len(checkpoints) == 1
        stuck.set()
        await kv.stop()

    run(scenario)


def test_stop_cancels_the_keepers_tasks_in_the_order_they_started() -> None:
    """They were kept in a set, whose order follows memory addresses: the order in which
    cancelled expiries resumed changed from one run of a seeded simulation to the next."""

    async def scenario() -> None:
        kv = await started()
        keeper = kv.keepers[NodeId(1)]
        cancelled: list[int] = []

        async def pending(number: int) -> None:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                cancelled.append(number)
                raise

        for number in range(20):
            keeper._spawn(pending(number))
        await asyncio.sleep(0)
        await keeper.stop()
        assert cancelled == list(range(20))
        await kv.stop()

    run(scenario)
