"""LocalCluster: several real `Node`s in one event loop, on an InProcessNetwork.

With the default ManualClock and inline persistence the run is deterministic: time moves
only in `run_until`, in steps of a fraction of a tick, and between steps the event loop runs
every callback that is ready. Tests wait on conditions (`run_until(lambda: ...)`) with a
bound on simulated time, never on wall-clock sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from random import Random
from typing import TypeVar

from raftkv.raft.clock import ManualClock
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import StateMachine
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.transport.inprocess import InProcessNetwork
from raftkv.testing.lossy_storage import LossyMemoryStorage

T = TypeVar("T")

# Event-loop turns allowed per clock step: enough for a message to be delivered, stepped,
# persisted (inline) and answered several times over.
_TURNS_PER_STEP = 8
# Steps past a wait's budget that give worker threads real time (run_until), and how much.
_GRACE_STEPS = 200
_REAL_SECONDS_PER_GRACE_STEP = 0.001


def run_scenario(scenario: Callable[[], Awaitable[T]], *, timeout_s: float = 60.0) -> T:
    """Run `scenario()` in a fresh event loop, failing it after `timeout_s` of wall-clock
    time: a bound for a test that hangs, not a timing it relies on."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await scenario()

    return asyncio.run(bounded())


class ConditionNotMet(AssertionError):
    """`run_until` reached its bound on simulated time."""


def address_of(node_id: NodeId) -> str:
    return f"node-{node_id}"


class LocalCluster:
    def __init__(
        self,
        size: int = 3,
        *,
        state_machine: Callable[[RaftStorage], StateMachine],
        settings: NodeSettings | None = None,
        seed: int = 0,
        storage: Callable[[NodeId], RaftStorage] | None = None,
    ) -> None:
        self.clock = ManualClock()
        self.rng = Random(seed)
        self.network = InProcessNetwork(clock=self.clock, rng=Random(self.rng.getrandbits(64)))
        self.settings = replace(settings or NodeSettings(), persist_in_thread=False)
        self._make_state_machine = state_machine
        self._make_storage = storage or (lambda _: MemoryStorage())
        self.founders = [NodeId(number) for number in range(1, size + 1)]
        self.storages: dict[NodeId, RaftStorage] = {}
        self.nodes: dict[NodeId, Node] = {}
        self._given_peers: dict[NodeId, dict[NodeId, str]] = {}

    def _node(self, node_id: NodeId) -> Node:
        storage = self.storages[node_id]
        return Node(
            # What the node was told at its first start; a restart is told the same.
            peers=self._given_peers.get(node_id),
            node_id=node_id,
            storage=storage,
            transport=self.network.transport(address_of(node_id)),
            state_machine=self._make_state_machine(storage),
            settings=self.settings,
            clock=self.clock,
            rng=Random(self.rng.getrandbits(64)),
        )

    async def start(self) -> None:
        voters = {node_id: address_of(node_id) for node_id in self.founders}
        for node_id in self.founders:
            self.storages[node_id] = self._make_storage(node_id)
            node = self._node(node_id)
            node.bootstrap(voters)
            self.nodes[node_id] = node
        for node in self.nodes.values():
            await node.start()

    async def add_joiner(self, node_id: NodeId) -> Node:
        """Start a node with empty storage that waits to be added (not yet a member). It
        knows its own address and the founders', as an operator would tell it."""
        self.storages[node_id] = self._make_storage(node_id)
        self._given_peers[node_id] = {peer: address_of(peer) for peer in [*self.founders, node_id]}
        node = self._node(node_id)
        self.nodes[node_id] = node
        await node.start()
        return node

    async def crash(self, node_id: NodeId) -> None:
        """Stop a node abruptly (no leadership hand-over). Its storage keeps what it
        persisted durably: a LossyMemoryStorage forgets its unsynced writes."""
        await self.nodes[node_id].stop(transfer_leadership=False)
        storage = self.storages[node_id]
        if isinstance(storage, LossyMemoryStorage):
            storage.lose_unsynced()

    async def restart(self, node_id: NodeId) -> Node:
        node = self._node(node_id)
        self.nodes[node_id] = node
        await node.start()
        return node

    async def wait_for_batching(self) -> None:
        """Until every node writes batch entries: the members' format declarations
        (raftkv.raft.driver.log_formats) have applied everywhere."""
        await self.run_until(lambda: all(node.batching for node in self.nodes.values()))

    async def crash_all_and_restart(self) -> Node:
        """Crash every node (see crash), restart them all; the leader they then agree on."""
        for node_id in list(self.nodes):
            await self.crash(node_id)
        for node_id in list(self.nodes):
            await self.restart(node_id)
        return await self.wait_for_leader()

    async def stop(self) -> None:
        for node in self.nodes.values():
            await node.stop(transfer_leadership=False)

    # -- driving time ----------------------------------------------------------------------

    async def settle(self) -> None:
        for _ in range(_TURNS_PER_STEP):
            await asyncio.sleep(0)

    async def run_until(self, condition: Callable[[], bool], *, max_seconds: float = 30.0) -> None:
        """Advance simulated time until `condition()` holds; raise ConditionNotMet after
        `max_seconds` of simulated time (and _GRACE_STEPS more steps given to worker
        threads)."""
        step = self.settings.tick_interval_s / 2
        waited = 0.0
        grace = _GRACE_STEPS
        await self.settle()
        while not condition():
            if waited >= max_seconds:
                # Worker threads (a node's read threads, its store's key count) do not run
                # on simulated time, and the loop's turns seldom let them have the GIL: a
                # condition waiting on one could see the whole budget pass in a few
                # milliseconds. So before giving up, a few more steps each let them run
                # for a moment of real time (a condition met in time never pays for it).
                if grace == 0:
                    raise ConditionNotMet(f"condition not met within {max_seconds}s simulated")
                grace -= 1
                await asyncio.sleep(_REAL_SECONDS_PER_GRACE_STEP)
            self.clock.advance(step)
            waited += step
            await self.settle()

    async def complete(self, awaitable: Awaitable[T], *, max_seconds: float = 30.0) -> T:
        """Run `awaitable` to completion while advancing simulated time."""
        task = asyncio.ensure_future(awaitable)
        try:
            await self.run_until(task.done, max_seconds=max_seconds)
        except ConditionNotMet:
            task.cancel()
            raise
        return task.result()

    def running(self) -> list[Node]:
        return [node for node in self.nodes.values() if not node.status().stopped]

    def leader(self) -> Node | None:
        """The running member that believes it leads in the highest term, if any (a
        removed leader that is still handing over does not count)."""
        leaders = [node for node in self.running() if node.is_leader and not node.removed]
        return max(leaders, key=lambda node: node.status().term, default=None)

    async def wait_for_leader(self, *, max_seconds: float = 30.0) -> Node:
        def agreed() -> bool:
            leader = self.leader()
            return leader is not None and all(
                node.leader_id == leader.id for node in self.running() if not node.removed
            )

        await self.run_until(agreed, max_seconds=max_seconds)
        leader = self.leader()
        assert leader is not None
        return leader
