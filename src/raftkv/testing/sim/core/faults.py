"""Fault injection during the safety phase: crashes, partitions, clogs, membership changes,
leader transfers and log compaction, each drawn once per tick from `FaultRates`. Half the
crashes and isolations target the current leader, where Raft's subtle cases live.

Membership changes go through the leader's `propose_conf_change`, as an operator would:
add a learner (a new node with an empty disk, caught up by snapshot), promote a learner,
demote or remove a voter, or replace a voter by a learner in one joint change. Node ids are
never reused. The cluster retires a node once a configuration without it is applied.
"""

from __future__ import annotations

import enum
import random
from typing import TYPE_CHECKING

from raftkv.raft.core.errors import ProposalDropped
from raftkv.raft.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    NodeId,
)
from raftkv.testing.sim.core.scenario import TICK_STEPS, FaultRates

if TYPE_CHECKING:
    from raftkv.testing.sim.core.cluster import Cluster

__all__ = ["CrashPoint", "FaultInjector"]


class CrashPoint(enum.Enum):
    """Where in the processing of a Ready a node may crash."""

    BEFORE_PERSIST = "before-persist"  # `messages` went out, nothing was written
    AFTER_PERSIST = "after-persist"  # written, but `persisted_messages` not sent
    AFTER_APPLY = "after-apply"  # applied in memory, state machine not flushed


class FaultInjector:
    def __init__(self, rng: random.Random, rates: FaultRates) -> None:
        self.rng = rng
        self.rates = rates
        self.enabled = True
        self.partition_until: int | None = None
        self.counts: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def crash_point(self) -> CrashPoint | None:
        rate = self.rates.crash_in_ready
        if not self.enabled or not rate or self.rng.random() >= rate:
            return None
        return self.rng.choice(list(CrashPoint))

    def _duration(self, mean_ticks: int) -> int:
        """A duration in steps, exponential around `mean_ticks`, at least one tick."""
        ticks = max(1, round(self.rng.expovariate(1 / mean_ticks)))
        return min(ticks, 10 * mean_ticks) * TICK_STEPS

    def on_tick(self, cluster: Cluster) -> None:
        if not self.enabled:
            return
        rates = self.rates
        rng = self.rng
        now = cluster.now
        if self.partition_until is not None and now >= self.partition_until:
            self.partition_until = None
            cluster.heal_partition()
        if rates.crash and rng.random() < rates.crash:
            self._crash(cluster)
        if rates.partition and self.partition_until is None and rng.random() < rates.partition:
            self._partition(cluster)
        if rates.clog and rng.random() < rates.clog:
            candidates = cluster.live_nodes()
            if candidates:
                node = rng.choice(candidates)
                self._count("clog")
                cluster.clog(node.id, now + self._duration(rates.mean_clog_ticks))
        if rates.membership_change and rng.random() < rates.membership_change:
            self._membership_change(cluster)
        if rates.leader_transfer and rng.random() < rates.leader_transfer:
            self._leader_transfer(cluster)
        if rates.compaction and rng.random() < rates.compaction:
            candidates = cluster.live_nodes()
            if candidates:
                self._count("compaction")
                cluster.compact(rng.choice(candidates), keep=rng.choice([0, 1, 5, 20]))

    def _crash(self, cluster: Cluster) -> None:
        candidates = cluster.live_nodes()
        if not candidates:
            return
        leader = cluster.leader()
        # Half the crashes hit the leader: leader changes are where Raft is subtle.
        if leader is not None and self.rng.random() < 0.5:
            node = leader
        else:
            node = self.rng.choice(candidates)
        self._count("crash")
        cluster.crash(node, restart_at=cluster.now + self._duration(self.rates.mean_down_ticks))

    def _partition(self, cluster: Cluster) -> None:
        ids = sorted(cluster.active_ids())
        if len(ids) < 2:
            return
        rng = self.rng
        kind = rng.choice(["split", "isolate", "one-way", "one-way-leader"])
        leader = cluster.leader()
        if kind == "split":
            side = rng.sample(ids, rng.randint(1, len(ids) - 1))
            others = [node_id for node_id in ids if node_id not in side]
            cluster.partition(side, others)
            description = f"split {sorted(side)} | {others}"
        elif kind == "isolate" or (kind == "one-way-leader" and leader is None):
            victim = leader.id if leader is not None and rng.random() < 0.5 else rng.choice(ids)
            cluster.partition([victim], [node_id for node_id in ids if node_id != victim])
            description = f"isolate n{victim}"
        elif kind == "one-way":
            links = [(a, b) for a in ids for b in ids if a != b]
            chosen = rng.sample(links, rng.randint(1, max(1, len(links) // 2)))
            for sender, receiver in chosen:
                cluster.block(sender, receiver)
            description = "one-way " + " ".join(f"{a}->{b}" for a, b in sorted(chosen))
        else:
            assert leader is not None
            # The leader can send but hears nothing back (or the reverse).
            outgoing = rng.random() < 0.5
            for other in ids:
                if other != leader.id:
                    if outgoing:
                        cluster.block(leader.id, other)
                    else:
                        cluster.block(other, leader.id)
            description = f"leader n{leader.id} {'deaf' if not outgoing else 'mute'}"
        self._count("partition")
        self.partition_until = cluster.now + self._duration(self.rates.mean_partition_ticks)
        cluster.event(f"fault partition {description} until {self.partition_until}")

    def _leader_transfer(self, cluster: Cluster) -> None:
        leader = cluster.leader()
        if leader is None or leader.rawnode is None:
            return
        voters = sorted(leader.rawnode.raft.tracker.voter_ids())
        if len(voters) < 2:
            return
        target = self.rng.choice([voter for voter in voters if voter != leader.id])
        self._count("transfer")
        cluster.event(f"fault transfer-leader n{leader.id} -> n{target}")
        try:
            leader.rawnode.transfer_leader(NodeId(target))
        except ProposalDropped as error:
            cluster.event(f"  transfer refused: {error.reason}")
        cluster.after_event(leader)

    def _membership_change(self, cluster: Cluster) -> None:
        leader = cluster.leader()
        if leader is None or leader.rawnode is None:
            return
        rng = self.rng
        conf_state = leader.rawnode.raft.conf_state()
        voters = sorted(conf_state.voters)
        learners = sorted(conf_state.learners)
        members = conf_state.members()
        limits = cluster.scenario.limits
        can_add = len(members) < limits.max_members and cluster.nodes_ever < limits.max_nodes_ever
        if conf_state.is_joint():
            if conf_state.auto_leave:
                return  # the leader leaves on its own
            change = ConfChange()
        else:
            options = []
            if can_add:
                options.append("add-learner")
            if learners:
                options += ["promote", "remove-learner"]
            if len(voters) > 1:
                options += ["remove-voter", "demote"]
            if learners and len(voters) > 1:
                options.append("replace")
            if not options:
                return
            choice = rng.choice(options)
            add_learner = ConfChangeType.ADD_LEARNER_NODE
            match choice:
                case "add-learner":
                    new_id = cluster.next_node_id()
                    change = ConfChange((ConfChangeSingle(add_learner, new_id),))
                case "promote":
                    target = NodeId(rng.choice(learners))
                    change = ConfChange((ConfChangeSingle(ConfChangeType.ADD_NODE, target),))
                case "remove-learner":
                    target = NodeId(rng.choice(learners))
                    change = ConfChange((ConfChangeSingle(ConfChangeType.REMOVE_NODE, target),))
                case "remove-voter":
                    target = NodeId(rng.choice(voters))
                    change = ConfChange((ConfChangeSingle(ConfChangeType.REMOVE_NODE, target),))
                case "demote":
                    target = NodeId(rng.choice(voters))
                    change = ConfChange((ConfChangeSingle(add_learner, target),))
                case _:
                    promoted = NodeId(rng.choice(learners))
                    removed = NodeId(rng.choice(voters))
                    transition = rng.choice(list(ConfChangeTransition))
                    change = ConfChange(
                        (
                            ConfChangeSingle(ConfChangeType.ADD_NODE, promoted),
                            ConfChangeSingle(ConfChangeType.REMOVE_NODE, removed),
                        ),
                        transition,
                    )
        self._count("membership")
        cluster.propose_conf_change(leader, change)
