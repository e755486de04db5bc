"""The driver simulation (testing tier 2): the real asyncio `Node`s, seeded faults.

Where the core simulator (`raftkv.testing.sim.core`) drives the pure core, this drives the
runtime around it —
queues, group commit, forwarding, read retries, snapshots, restarts — on a `LocalCluster`
(ManualClock, inline persistence, in-process network), so a seed is a reproducible run.

Per seed: clients put and read registers through random nodes while the network
partitions, drops and delays messages and nodes crash and restart. Then the faults heal and
the run checks:
- the client history is linearizable (`raftkv.testing.linearizability`);
- every node converges to the same state;
- no state machine instance applied a command twice.

Storage is a LossyMemoryStorage: a crash forgets every write that was not fsynced.

    python -m raftkv.testing.sim driver --seeds 0:200

`DriverRun` is one seed's run; the KV simulation (`raftkv.testing.sim.kv`) extends it
through its hooks (`make_state_machine`, `client`, `background`, `final_command`,
`after_converged`, `converged`, `check`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from random import Random
from typing import Any

from raftkv.raft.core.errors import ProposalDropped, RaftError
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import StateMachine
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing import linearizability as lin
from raftkv.testing.local_cluster import LocalCluster, address_of
from raftkv.testing.lossy_storage import LossyMemoryStorage
from raftkv.testing.state_machines import DictStateMachine, encode_set

KEYS = ("a", "b", "c")
# A run's founding members and simulated seconds of faults, unless told otherwise.
NODES = 3
DURATION_S = 20.0


@dataclass
class DriverSimResult:
    """One seed's outcome (a `raftkv.testing.sim.SeedOutcome`), filled in as it runs."""

    seed: int
    # The simulation that ran it ("driver" or "kv") and with what: the command that
    # reproduces it.
    simulator: str
    nodes: int
    duration_s: float
    # Whether the nodes batched proposals (NodeSettings.batch_proposals).
    batching: bool = False
    operations: int = 0
    acknowledged: int = 0
    # Proposals that shared a log entry, on the nodes running at the end (with batching).
    batched: int = 0
    failures: list[str] = field(default_factory=list)
    trace_hash: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def stats(self) -> tuple[tuple[str, int], ...]:
        counts = (("client ops acknowledged", self.acknowledged), ("client ops", self.operations))
        return (*counts, ("proposals batched", self.batched)) if self.batching else counts

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"seed {self.seed}: {verdict}, trace hash {self.trace_hash}, "
            f"{self.operations} client operations, {self.acknowledged} acknowledged"
        )

    def reproduce(self) -> str:
        return (
            f"python -m raftkv.testing.sim {self.simulator} --seed {self.seed} "
            f"--nodes {self.nodes} --duration {self.duration_s:g}"
            + (" --batching" if self.batching else "")
        )

    def describe_failure(self) -> str:
        return "\n  ".join(
            [f"seed {self.seed} FAILED:", *self.failures, f"reproduce: {self.reproduce()}"]
        )


def _state_machine(_: RaftStorage) -> DictStateMachine:
    return DictStateMachine()


class DriverRun:
    """One seed of the driver simulation: a LocalCluster, the clients, the nemesis, the
    final checks."""

    # Names the simulation in its results (and the command that reproduces a seed).
    simulator = "driver"

    def __init__(self, seed: int, nodes: int, duration_s: float, *, batching: bool) -> None:
        self.seed = seed
        self.rng = Random(seed)
        self.membership_enabled = self.rng.random() < 0.5
        settings = NodeSettings(
            proposal_timeout_s=3.0,
            read_timeout_s=3.0,
            snapshot_every_entries=self.rng.choice((8, 30, 1000)),
            snapshot_keep_entries=self.rng.choice((0, 5)),
            max_batch_entries=self.rng.choice((1, 8, 4096)),
            pre_vote=self.rng.random() < 0.8,
            # Every node reads the same ManualClock: zero drift, the lease's assumption.
            lease_reads=self.rng.random() < 0.3,
            batch_proposals=batching,
        )
        self.cluster = LocalCluster(
            nodes,
            state_machine=self.make_state_machine,
            settings=settings,
            seed=seed,
            storage=lambda _: LossyMemoryStorage(),
        )
        self.duration_s = duration_s
        self.history: list[lin.Operation] = []
        self.crashed: set[NodeId] = set()
        # Removed by a membership change: never restarted, never re-added (a removed id
        # is retired for good; its old state must not rejoin).
        self.removed: set[NodeId] = set()
        self._next_id = nodes + 1
        self._membership: asyncio.Future[object] | None = None
        self.events: list[str] = []
        self.result = DriverSimResult(seed, self.simulator, nodes, duration_s, batching)
        self._value = 0

    def make_state_machine(self, storage: RaftStorage) -> StateMachine:
        return _state_machine(storage)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Work that runs for the whole run, converging included (cancelled at the end)."""
        return []

    async def after_converged(self) -> None:
        """Runs once every member has converged, before the checks."""

    def final_command(self) -> bytes:
        """Proposed once the faults heal: every member must apply it."""
        return encode_set("final", "1")

    def live_nodes(self) -> list[Node]:
        return [
            node
            for node in self.cluster.nodes.values()
            if node.id not in self.crashed and node.id not in self.removed and not node.removed
        ]

    def node_for_client(self) -> Node | None:
        running = self.live_nodes()
        return self.rng.choice(running) if running else None

    async def client(self, number: int, stop_at: float) -> None:
        clock = self.cluster.clock
        while clock.now() < stop_at:
            node = self.node_for_client()
            if node is None:
                await clock.sleep(0.1)
                continue
            key = self.rng.choice(KEYS)
            call = clock.now()
            self.result.operations += 1
            if self.rng.random() < 0.5:
                self._value += 1
                value = f"{number}-{self._value}"
                try:
                    await node.propose(encode_set(key, value), batchable=True)
                except ProposalDropped:
                    continue  # definitely not applied
                except RaftError:
                    self.history.append(lin.put(key, value, call, None, client=number))
                else:
                    self.result.acknowledged += 1
                    self.history.append(lin.put(key, value, call, clock.now(), client=number))
            else:
                try:
                    await node.read_index()
                except RaftError:
                    continue
                output = self._machine(node).data.get(key)
                self.history.append(lin.get(key, output, call, clock.now(), client=number))
            await clock.sleep(self.rng.uniform(0.0, 0.2))

    async def nemesis(self, stop_at: float) -> None:
        clock = self.cluster.clock
        network = self.cluster.network
        while clock.now() < stop_at:
            await clock.sleep(self.rng.uniform(0.2, 1.5))
            ids = sorted(set(self.cluster.nodes) - self.removed)
            choice = self.rng.random()
            if choice < 0.15 and self.membership_enabled:
                await self.change_membership()
                continue
            choice = self.rng.random()
            if choice < 0.25:
                self.rng.shuffle(ids)
                cut = self.rng.randrange(1, len(ids))
                network.partition(
                    [address_of(n) for n in ids[:cut]], [address_of(n) for n in ids[cut:]]
                )
                self.events.append(f"{clock.now():.2f} partition {ids[:cut]}|{ids[cut:]}")
            elif choice < 0.45:
                network.heal()
                network.drop_rate = 0.0
                network.delay_range = (0.0, 0.0)
                self.events.append(f"{clock.now():.2f} heal")
            elif choice < 0.6 and len(self.crashed) < len(ids) // 2 + 1:
                victim = self.rng.choice(ids)
                if victim not in self.crashed:
                    self.crashed.add(victim)
                    await self.cluster.crash(victim)
                    self.events.append(f"{clock.now():.2f} crash {victim}")
            elif choice < 0.8 and self.crashed - self.removed:
                revived = self.rng.choice(sorted(self.crashed - self.removed))
                self.crashed.discard(revived)
                await self.cluster.restart(revived)
                self.events.append(f"{clock.now():.2f} restart {revived}")
            elif choice < 0.9:
                network.drop_rate = self.rng.choice((0.05, 0.2))
                self.events.append(f"{clock.now():.2f} drop {network.drop_rate}")
            else:
                network.delay_range = (0.0, self.rng.choice((0.05, 0.3)))
                self.events.append(f"{clock.now():.2f} delay {network.delay_range}")

    async def change_membership(self) -> None:
        """One change at a time, in the background: a new node joins (learner, then
        voter), a voter is removed (never below three), or leadership moves."""
        if self._membership is not None and not self._membership.done():
            return
        clock = self.cluster.clock
        requester = self.node_for_client()
        if requester is None:
            return
        voters = [node_id for node_id in requester.status().voters if node_id not in self.removed]
        change: Awaitable[object] | None = None
        choice = self.rng.random()
        if choice < 0.4 and len(self.cluster.nodes) - len(self.removed) < 6:
            node_id = NodeId(self._next_id)
            self._next_id += 1
            joiner = await self.cluster.add_joiner(node_id)
            seeds = [address_of(self.rng.choice(voters or [requester.id]))]
            change = joiner.join(seeds, timeout=10)
            self.events.append(f"{clock.now():.2f} join {node_id} via {seeds[0]}")
        elif choice < 0.7 and len(voters) > 3:
            victim = self.rng.choice(voters)
            change = self._remove(requester, victim)
            self.events.append(f"{clock.now():.2f} remove {victim} via {requester.id}")
        elif requester.is_leader:
            change = requester.transfer_leadership()
            self.events.append(f"{clock.now():.2f} transfer from {requester.id}")
        if change is not None:
            self._membership = asyncio.ensure_future(change)
            # Failures under faults are expected; mark them seen.
            self._membership.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _remove(self, requester: Node, victim: NodeId) -> object:
        result = await requester.remove_member(victim)
        self.removed.add(victim)
        return result

    async def run(self) -> DriverSimResult:
        cluster = self.cluster
        await cluster.start()
        stop_at = cluster.clock.now() + self.duration_s
        tasks = [asyncio.ensure_future(self.client(number, stop_at)) for number in range(3)]
        tasks.append(asyncio.ensure_future(self.nemesis(stop_at)))
        background = [asyncio.ensure_future(work) for work in self.background()]
        await cluster.run_until(
            lambda: all(task.done() for task in tasks), max_seconds=self.duration_s + 30
        )
        for task in tasks:
            task.result()
        if self._membership is not None:
            # Its outcome does not matter (a timeout under faults is fine); let it end.
            await cluster.run_until(self._membership.done, max_seconds=60)
            if not self._membership.cancelled():
                self._membership.exception()
        # Removed nodes leave for good; the rest heal and must converge.
        for node_id in sorted(self.removed):
            await cluster.crash(node_id)
        # Heal everything and let the cluster converge.
        cluster.network.heal()
        cluster.network.drop_rate = 0.0
        cluster.network.delay_range = (0.0, 0.0)
        for node_id in sorted(self.crashed - self.removed):
            await cluster.restart(node_id)
        self.crashed.clear()
        # A joiner whose join never completed (crashed, timed out) is not a member and
        # is left out; every member must agree on the leader and converge.
        for attempt in range(5):
            await cluster.run_until(self._members_agree, max_seconds=60)
            leader = cluster.leader()
            assert leader is not None
            try:
                await cluster.complete(leader.propose(self.final_command()), max_seconds=60)
                break
            except RaftError:
                # A change still in the log (a removal whose requester gave up) may take
                # effect now; ask the next leader.
                if attempt == 4:
                    raise
        await cluster.run_until(self.converged, max_seconds=60)
        await self.after_converged()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self.check()
        await cluster.stop()
        return self.result

    def members(self) -> list[Node]:
        leader = self.cluster.leader()
        if leader is None:
            return []
        status = leader.status()
        members = set(status.voters) | set(status.learners)
        return [node for node in self.live_nodes() if node.id in members]

    def _members_agree(self) -> bool:
        leader = self.cluster.leader()
        members = self.members()
        return bool(members) and all(node.leader_id == leader.id for node in members)  # type: ignore[union-attr]

    def converged(self) -> bool:
        states = [self._machine(node).data for node in self.members()]
        return all(state == states[0] and "final" in state for state in states)

    def _machine(self, node: Node) -> DictStateMachine:
        state_machine = node.state_machine
        assert isinstance(state_machine, DictStateMachine)
        return state_machine

    def count_batched(self) -> None:
        """Record the proposals that shared an entry, on the nodes running now."""
        self.result.batched = sum(
            node.stats.proposals_batched for node in self.cluster.nodes.values()
        )

    def check(self) -> None:
        self.count_batched()
        for node in self.cluster.nodes.values():
            indices = self._machine(node).applied_commands
            if len(indices) != len(set(indices)):
                self.result.failures.append(f"node {node.id} applied a command twice")
            if indices != sorted(indices):
                self.result.failures.append(f"node {node.id} applied out of order")
        outcome = lin.check_history(self.history)
        if not outcome:
            self.result.failures.append("not linearizable:\n" + outcome.describe())
        self.result.trace_hash = self.trace_hash()

    def trace_hash(self, *lines: str) -> str:
        """A digest of the run: the nemesis' events, the client history, `lines`, then a
        one-line status per node. A seed must give the same digest in any process (no set
        order of str or objects, no wall clock, no unseeded randomness: tests/sim/
        test_sim_determinism.py runs seeds under two PYTHONHASHSEEDs)."""
        trace = [
            *self.events,
            *(operation.describe() for operation in self.history),
            *lines,
            *(_status_line(node) for _, node in sorted(self.cluster.nodes.items())),
        ]
        digest = hashlib.sha256()
        for line in trace:
            digest.update(line.encode() + b"\n")
        return digest.hexdigest()[:16]


def _status_line(node: Node) -> str:
    status, stats = node.status(), node.stats
    return (
        f"node {node.id} {status.role.value} term {status.term} commit {status.commit_index} "
        f"applied {status.applied_index} log {status.first_index}..{status.last_index} "
        f"snapshot {status.snapshot_index} leader changes {stats.leader_changes} "
        f"snapshots {stats.snapshots_created} created {stats.snapshots_installed} installed"
    )


def run_seed(
    seed: int, *, nodes: int = NODES, duration_s: float = DURATION_S, batching: bool = False
) -> DriverSimResult:
    """One reproducible run; never raises for a violation (see `result.failures`).
    `batching`: the nodes batch the clients' proposals (NodeSettings.batch_proposals)."""
    return play(DriverRun, seed, nodes, duration_s, batching=batching)


def play(
    run: type[DriverRun], seed: int, nodes: int, duration_s: float, *, batching: bool = False
) -> DriverSimResult:
    """A `run` of `seed` to its result, in an event loop of its own; a crash of the run
    itself is a failure of the seed."""

    async def bounded() -> DriverSimResult:
        return await run(seed, nodes, duration_s, batching=batching).run()

    try:
        return asyncio.run(bounded())
    except Exception as error:
        result = DriverSimResult(seed, run.simulator, nodes, duration_s, batching)
        result.failures.append(f"run raised {type(error).__name__}: {error!r}")
        return result
