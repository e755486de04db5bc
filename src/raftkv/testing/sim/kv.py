"""The KV simulation: the driver simulation's faults over the real KV state machine, with
leases and watches.

Each seed runs `raftkv.testing.sim.driver`'s nemesis (partitions, drops, delays, crashes
and restarts, membership changes) on a LocalCluster of `KvStateMachine`s sharing the
cluster's ManualClock, a `LeaseKeeper` per node, and clients that put and delete keys (some
attached to leases), grant, keep alive and revoke leases. On every running node a watcher
follows every key from revision 1; when its node restarts (a new state machine) it resumes
on the new one from the revision after the last it saw. After the faults heal it checks:
- every member holds the same state (state hash);
- each watcher saw exactly the store's history: revisions 1..N, each once, in order, with
  the events the history holds for them (no gap, no duplicate across resumes);
- no lease was removed (on any node) earlier than its TTL after the client SENT the last
  grant or keep-alive that was acknowledged, unless the client revoked it;
- once nobody keeps them alive, every lease is gone within its TTL plus the checkpoint
  interval plus a few election timeouts; every key's lease exists;
- hash checks (a `CorruptChecker` per node, a check every HASH_CHECK_INTERVAL_S and one at
  each start) never raise a CORRUPT alarm, and a last check, once every member converged,
  gets the same hash from every member.

    python -m raftkv.testing.sim kv --seeds 0:20
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from random import Random
from typing import Any

from raftkv.kv.commands import HashCheck, HashCheckResponse, KvCommand, Put, Range, encode_command
from raftkv.kv.corrupt_checker import CorruptChecker, CorruptCheckerSettings, run_inline
from raftkv.kv.errors import KvError
from raftkv.kv.events import RevisionEvents
from raftkv.kv.lease_keeper import LeaseKeeper, LeaseKeeperSettings
from raftkv.kv.service import KvService
from raftkv.kv.state_machine import KvStateMachine
from raftkv.kv.watch import EventBatch, WatchCanceled, WatchSpec
from raftkv.raft.core.errors import RaftError
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.state_machine import StateMachine
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.sim.driver import NODES, DriverRun, DriverSimResult, play

KEYS = (b"a", b"b", b"c", b"d")
LEASES = (1, 2, 3)
CHECKPOINT_INTERVAL_S = 1.0
# Room for elections and the keeper's interval when checking that leases end.
EXPIRY_SLACK_S = 5.0
# How often the leader starts a hash check (simulated seconds).
HASH_CHECK_INTERVAL_S = 2.0
# Simulated seconds of faults in a run, unless told otherwise.
DURATION_S = 15.0


@dataclass
class _Lease:
    ttl: int = 0
    # Send times of acknowledged grants and keep-alives.
    renewed_at: list[float] = field(default_factory=list)
    removed_at: float | None = None


class KvRun(DriverRun):
    """One seed of the KV simulation: the driver simulation's run over KV state machines,
    with leases, watches and hash checks."""

    simulator = "kv"

    def __init__(self, seed: int, nodes: int, duration_s: float, *, batching: bool) -> None:
        super().__init__(seed, nodes, duration_s, batching=batching)
        self.leases: dict[int, _Lease] = {}
        # Send times of revokes that may have applied (acknowledged, in flight, or outcome
        # unknown), by lease id: a removal after one of them may be that revoke, whatever
        # grant came in between.
        self.revokes: dict[int, list[float]] = {}
        self.keepers: dict[int, LeaseKeeper] = {}
        # Per node id: the checker of its current Node (a restart makes a new Node).
        self.checkers: dict[NodeId, CorruptChecker] = {}
        # Per node id: the revisions its watchers saw, in order, with their events.
        self.seen: dict[NodeId, list[RevisionEvents]] = {}
        self._watching: dict[NodeId, tuple[KvStateMachine, asyncio.Task[None]]] = {}
        # Per node id: its current state machine and the leases it held at the last look
        # (id -> renewed_index); per lease, the highest renewed_index any node held.
        self._held: dict[int, tuple[KvStateMachine, dict[int, int]]] = {}
        self._latest_renewal: dict[int, int] = {}
        # For the trace: each client request, when it was sent and how it ended.
        self.requests: list[str] = []
        # Where a grant without an id takes one (this workload names its leases; seeded
        # all the same, as nothing in a run may depend on the OS's randomness).
        self._lease_id_rng = Random(f"{seed}/lease ids")

    def make_state_machine(self, storage: RaftStorage) -> StateMachine:
        return KvStateMachine(storage.app_data(), clock=self.cluster.clock)

    def final_command(self) -> bytes:
        return encode_command(KvCommand(Put(b"final", b"1")))

    def kv(self, node: Node) -> KvStateMachine:
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        return machine

    def service(self, node: Node) -> KvService:
        return KvService(node, self.kv(node), rng=self._lease_id_rng)

    # -- clients ----------------------------------------------------------------------------

    async def client(self, number: int, stop_at: float) -> None:
        clock = self.cluster.clock
        while clock.now() < stop_at:
            node = self.node_for_client()
            if node is None:
                await clock.sleep(0.1)
                continue
            service = self.service(node)
            choice = self.rng.random()
            lease_id = self.rng.choice(LEASES)
            sent = clock.now()
            self.result.operations += 1
            request = f"{sent:.2f} client {number} via {node.id}:"
            try:
                if choice < 0.35:
                    lease = self.rng.choice((0, lease_id))
                    key = self.rng.choice(KEYS)
                    request += f" put {key!r} lease {lease}"
                    await service.put(key, f"{number}".encode(), lease=lease)
                elif choice < 0.45:
                    key = self.rng.choice(KEYS)
                    request += f" delete {key!r}"
                    await service.delete_range(key)
                elif choice < 0.6:
                    ttl = self.rng.randint(2, 4)
                    request += f" grant {lease_id} ttl {ttl}"
                    await service.lease_grant(ttl, lease_id)
                    self.leases[lease_id] = _Lease(ttl, [sent])
                elif choice < 0.9:
                    request += f" keep alive {lease_id}"
                    await service.lease_keep_alive(lease_id)
                    if lease_id in self.leases:
                        self.leases[lease_id].renewed_at.append(sent)
                else:
                    request += f" revoke {lease_id}"
                    self.revokes.setdefault(lease_id, []).append(sent)
                    await service.lease_revoke(lease_id)
                self.result.acknowledged += 1
                request += " ok"
            except KvError as error:
                request += f" {type(error).__name__}"
                if choice >= 0.9:
                    self.revokes[lease_id].remove(sent)  # applied as "not found": no effect
            except RaftError as error:
                # Outcome unknown: a revoke's send time stays in `revokes`.
                request += f" {type(error).__name__}"
            self.requests.append(f"{request} at {clock.now():.2f}")
            await clock.sleep(self.rng.uniform(0.0, 0.3))

    # -- background: keepers, watchers, the lease observer ----------------------------------

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._keep(), self._watch(), self._observe_leases(), self._check_hashes()]

    async def _check_hashes(self) -> None:
        """A CorruptChecker on every running node (a new one for a restarted node), hashing
        inline: nothing may depend on when a thread finishes."""
        clock = self.cluster.clock
        settings = CorruptCheckerSettings(
            interval_s=HASH_CHECK_INTERVAL_S, poll_interval_s=0.1, proposal_timeout_s=3.0
        )
        try:
            while True:
                for node in self.live_nodes():
                    checker = self.checkers.get(node.id)
                    if checker is not None and checker.node is node:
                        continue
                    if checker is not None:
                        await checker.stop()
                    checker = CorruptChecker(node, self.kv(node), settings, run_blocking=run_inline)
                    checker.start()
                    self.checkers[node.id] = checker
                await clock.sleep(0.1)
        finally:
            for checker in self.checkers.values():
                await checker.stop()

    async def _keep(self) -> None:
        clock = self.cluster.clock
        while True:
            await clock.sleep(0.1)
            for node in self.live_nodes():
                if not node.is_leader:
                    continue
                key = int(node.id)
                keeper = self.keepers.get(key)
                if keeper is None or keeper.service.node is not node:
                    keeper = LeaseKeeper(
                        self.service(node),
                        LeaseKeeperSettings(
                            interval_s=0.1, checkpoint_interval_s=CHECKPOINT_INTERVAL_S
                        ),
                    )
                    self.keepers[key] = keeper
                with contextlib.suppress(KvError, RaftError, TimeoutError):
                    await keeper.run_once()

    async def _watch(self) -> None:
        clock = self.cluster.clock
        while True:
            for node in self.live_nodes():
                machine = self.kv(node)
                watching = self._watching.get(node.id)
                if watching is not None and watching[0] is machine and not watching[1].done():
                    continue
                if watching is not None:
                    watching[1].cancel()
                self._watching[node.id] = (
                    machine,
                    asyncio.ensure_future(self._follow(node.id, machine)),
                )
            await clock.sleep(0.2)

    async def _follow(self, node_id: NodeId, machine: KvStateMachine) -> None:
        seen = self.seen.setdefault(node_id, [])
        start = seen[-1].revision + 1 if seen else 1
        watch = machine.watch_hub.open(WatchSpec(b"\0", b"\0"), start)
        try:
            while True:
                outcome = await watch.next()
                if isinstance(outcome, WatchCanceled):
                    self.result.failures.append(f"node {node_id}: watch canceled {outcome}")
                    return
                assert isinstance(outcome, EventBatch)
                # Rebuild per-revision groups (events carry their revision).
                for event in outcome.events:
                    revision = event.kv.mod_revision
                    if seen and seen[-1].revision == revision:
                        seen[-1] = RevisionEvents(revision, (*seen[-1].events, event))
                    else:
                        seen.append(RevisionEvents(revision, (event,)))
        finally:
            watch.release()

    async def _observe_leases(self) -> None:
        """Polls every node's leases; a lease gone from a node that held its latest renewal
        (the highest renewed_index seen anywhere) is a removal, checked against the TTL. A
        node that lagged (it held an older grant or renewal, say a lease expired and granted
        again since) only catches up when it drops it: no conclusion from that."""
        clock = self.cluster.clock
        while True:
            nodes = self.live_nodes()
            views = {int(node.id): (node, self.kv(node), self._renewals(node)) for node in nodes}
            for _, _, renewals in views.values():
                for lease_id, renewed_index in renewals.items():
                    latest = self._latest_renewal.get(lease_id, 0)
                    self._latest_renewal[lease_id] = max(latest, renewed_index)
            for node_id, (_, machine, renewals) in views.items():
                last = self._held.get(node_id)
                before = last[1] if last is not None and last[0] is machine else {}
                for lease_id, renewed_index in before.items():
                    if lease_id in renewals:
                        continue
                    lease = self.leases.get(lease_id)
                    latest = self._latest_renewal.get(lease_id, 0)
                    if lease is not None and lease.removed_at is None and renewed_index >= latest:
                        lease.removed_at = clock.now()
                        self._check_not_early(lease_id, lease)
                for lease_id in renewals.keys() - before.keys():
                    lease = self.leases.get(lease_id)
                    if lease is not None and lease.removed_at is not None:
                        lease.removed_at = None  # granted again
                self._held[node_id] = (machine, renewals)
            await clock.sleep(0.05)

    def _renewals(self, node: Node) -> dict[int, int]:
        """Lease id -> renewed_index of every lease `node` holds."""
        machine = self.kv(node)
        found: dict[int, int] = {}
        for lease_id in machine.lease_ids():
            record = machine.lease(lease_id)
            if record is not None:
                found[lease_id] = record.renewed_index
        return found

    def _check_not_early(self, lease_id: int, lease: _Lease) -> None:
        if lease.removed_at is None or not lease.renewed_at:
            return
        if any(sent <= lease.removed_at for sent in self.revokes.get(lease_id, [])):
            return
        last = max(lease.renewed_at)
        if lease.removed_at < last + lease.ttl:
            self.result.failures.append(
                f"lease {lease_id} removed at {lease.removed_at:.2f}, before its TTL "
                f"{lease.ttl} s after the keep-alive sent at {last:.2f}"
            )

    async def after_converged(self) -> None:
        """Nobody keeps leases alive now: each must end within TTL + checkpoint + slack."""
        cluster = self.cluster
        longest = max((lease.ttl for lease in self.leases.values()), default=0)
        bound = longest + CHECKPOINT_INTERVAL_S + EXPIRY_SLACK_S

        def no_leases() -> bool:
            members = self.members()
            return bool(members) and all(not self.kv(node).lease_ids() for node in members)

        try:
            await cluster.run_until(no_leases, max_seconds=bound)
        except AssertionError:
            left = {node.id: self.kv(node).lease_ids() for node in self.members()}
            self.result.failures.append(f"leases still alive {bound:.1f} s later: {left}")
        await cluster.run_until(self.converged, max_seconds=60)
        await self._last_hash_check()

    async def _last_hash_check(self) -> None:
        """Once converged, one more check: every member must report the same hash."""
        cluster = self.cluster
        leader = cluster.leader()
        members = self.members()
        if leader is None or not members:
            self.result.failures.append("no leader for the last hash check")
            return
        check = HashCheck(sorted(int(node.id) for node in members))
        result = await cluster.complete(leader.propose(encode_command(KvCommand(check))))
        assert isinstance(result, HashCheckResponse), result

        def reported() -> bool:
            records = [self.kv(node).hash_check_record() for node in members]
            return all(len(record.reports) == len(members) for record in records)

        try:
            await cluster.run_until(reported, max_seconds=30)
        except AssertionError:
            records = {node.id: self.kv(node).hash_check_record() for node in members}
            self.result.failures.append(f"the last hash check did not complete: {records}")
            return
        record = self.kv(members[0]).hash_check_record()
        if len({digest for _, digest in record.reports}) != 1:
            self.result.failures.append(f"members reported different hashes: {record}")

    # -- checks -----------------------------------------------------------------------------

    def converged(self) -> bool:
        members = self.members()
        if not members:
            return False
        machines = [self.kv(node) for node in members]
        if any(not machine.range(Range(b"final")).kvs for machine in machines):
            return False
        revisions = {machine.current_revision() for machine in machines}
        return len(revisions) == 1 and len({machine.state_hash() for machine in machines}) == 1

    def check(self) -> None:
        self.count_batched()
        members = self.members()
        if not members:
            self.result.failures.append("no members at the end")
            return
        reference = self.kv(members[0])
        history = list(reference.watch_hub.reader.revisions(1, reference.current_revision()))
        by_revision = {item.revision: item for item in history}
        for node_id, seen in self.seen.items():
            revisions = [item.revision for item in seen]
            # Revision 1 is the empty store: the first write makes revision 2.
            if revisions != list(range(2, len(revisions) + 2)):
                self.result.failures.append(
                    f"node {node_id}: watch saw revisions {revisions[:20]}... (gap or repeat)"
                )
                continue
            for item in seen:
                if by_revision.get(item.revision) != item:
                    self.result.failures.append(
                        f"node {node_id}: revision {item.revision} seen as {item}, "
                        f"history has {by_revision.get(item.revision)}"
                    )
                    break
        for node in members:
            machine = self.kv(node)
            if machine.corrupt_alarms():
                self.result.failures.append(
                    f"node {node.id}: hash checks raised {machine.corrupt_alarms()}"
                )
            held = set(machine.lease_ids())
            for key_value in machine.range(Range(b"\0", b"\0")).kvs:
                if key_value.lease and key_value.lease not in held:
                    self.result.failures.append(
                        f"node {node.id}: key {key_value.key!r} names missing lease "
                        f"{key_value.lease}"
                    )
        self.result.trace_hash = self.trace_hash(*self.requests, reference.state_hash())


def run_seed(
    seed: int, *, nodes: int = NODES, duration_s: float = DURATION_S, batching: bool = False
) -> DriverSimResult:
    """One reproducible run; never raises for a violation (see `result.failures`).
    `batching`: the nodes batch the clients' writes (NodeSettings.batch_proposals)."""
    return play(KvRun, seed, nodes, duration_s, batching=batching)
