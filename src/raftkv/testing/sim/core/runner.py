"""Running one seed of the core simulator: the safety phase, the liveness phase, the
history check. (`raftkv.testing.sim.sweeps` runs many seeds.)

One seed:
1. Safety phase (`Limits.safety_ticks`): clients and faults run; every event is followed by
   the safety checks (`invariants`).
2. Liveness phase: the network heals (no loss, no duplication, no slow messages, no
   partitions or clogs), every crashed member restarts, faults and new client operations
   stop. Within `Limits.liveness_ticks` the cluster must elect a leader, commit and apply a
   fresh entry on every member of the leader's configuration, and converge (every member
   has applied everything the leader committed, and the leader has committed its log).
3. The client history is checked for linearizability.

A failure names the seed and prints the command that reproduces it with the full trace.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.raft.core.describe import describe_conf_state
from raftkv.raft.core.errors import ConfChangeInvalid, ProposalDropped, RaftError
from raftkv.raft.core.types import ConfChange, NodeId
from raftkv.testing.linearizability import CheckLimitExceeded, check_history
from raftkv.testing.sim.core.cluster import Cluster, EventLimitExceeded
from raftkv.testing.sim.core.invariants import SafetyViolation
from raftkv.testing.sim.core.node import SimNode
from raftkv.testing.sim.core.scenario import TICK_STEPS, NetworkProfile, Scenario, default_scenario
from raftkv.testing.sim.core.state_machine import Command
from raftkv.testing.sim.core.swarm import swarm_scenario
from raftkv.testing.sim.core.trace import Trace
from raftkv.testing.sim.core.workload import LIVENESS_CLIENT

__all__ = ["SeedResult", "run_seed"]

# The healed network of the liveness phase.
CALM_NETWORK = NetworkProfile(loss=0.0, duplicate=0.0, min_delay=1, max_delay=3, slow=0.0)


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    swarm: bool
    # None if the seed passed; else "<property>: <detail>".
    failure: str | None
    trace_hash: str
    events: int
    steps: int
    operations: int
    scenario: str
    seconds: float
    # Extra lines for the report of a failure (status of each node, history excerpt).
    details: tuple[str, ...] = ()
    # What the run exercised: event kinds and their counts.
    stats: tuple[tuple[str, int], ...] = ()
    # Run with a hand-made scenario: the command line cannot reproduce it.
    custom_scenario: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"seed {self.seed}{' swarm' if self.swarm else ''}: {verdict}, "
            f"trace hash {self.trace_hash}, {self.events} events, {self.steps} steps, "
            f"{self.operations} client operations, {self.seconds:.2f}s"
        )

    def reproduce(self) -> str:
        if self.custom_scenario:
            return f"run_seed({self.seed}, scenario=<the same custom scenario>, trace_sink=print)"
        swarm = " --swarm" if self.swarm else ""
        return f"python -m raftkv.testing.sim --seed {self.seed}{swarm} --trace"

    def describe_failure(self) -> str:
        lines = [
            f"seed {self.seed} FAILED: {self.failure}",
            f"  reproduce: {self.reproduce()}",
            f"  scenario: {self.scenario}",
            f"  trace hash {self.trace_hash}, {self.events} events, {self.steps} steps",
        ]
        lines.extend(f"  {line}" for line in self.details)
        return "\n".join(lines)


def scenario_for(seed: int, swarm: bool) -> Scenario:
    return swarm_scenario(seed) if swarm else default_scenario(seed)


def run_seed(
    seed: int,
    *,
    swarm: bool = False,
    trace_sink: Callable[[str], None] | None = None,
    scenario: Scenario | None = None,
) -> SeedResult:
    """Run one seed to completion; never raises for a failure of the system under test."""
    started = time.perf_counter()
    custom = scenario is not None
    if scenario is None:
        scenario = scenario_for(seed, swarm)
    trace = Trace(trace_sink)
    trace.note(f"scenario: {scenario.describe()}")
    cluster = Cluster(scenario, trace)
    failure: str | None = None
    details: list[str] = []
    try:
        _safety_phase(cluster)
        _liveness_phase(cluster)
        cluster.workload.finish()
        result = check_history(cluster.workload.history, max_steps=scenario.limits.max_check_steps)
        cluster.stats["linearizability search steps"] += result.steps
        if not result.ok:
            failure = "linearizability: client history is not linearizable"
            details.extend(result.describe().splitlines())
    except SafetyViolation as violation:
        failure = str(violation)
    except LivenessFailure as error:
        failure = f"liveness: {error}"
    except (EventLimitExceeded, CheckLimitExceeded) as error:
        failure = f"limit: {error}"
    except RaftError as error:
        failure = f"core error: {type(error).__name__}: {error}"
        details.extend(_traceback_tail())
    except Exception as error:  # a crash of the core (or the simulator) is a finding too
        failure = f"crash: {type(error).__name__}: {error}"
        details.extend(_traceback_tail())
    if failure is not None:
        details.extend(cluster.status_lines())
    for line in cluster.status_lines():
        trace.note(f"final {line}")
    return SeedResult(
        seed=seed,
        swarm=scenario.swarm,
        failure=failure,
        trace_hash=trace.digest(),
        events=cluster.events,
        steps=cluster.now,
        operations=len(cluster.workload.history),
        scenario=scenario.describe(),
        seconds=time.perf_counter() - started,
        details=tuple(details),
        stats=tuple(sorted(_stats(cluster).items())),
        custom_scenario=custom,
    )


def _stats(cluster: Cluster) -> dict[str, int]:
    stats = dict(cluster.stats)
    workload = cluster.workload
    stats["client ops completed"] = workload.completed
    stats["client ops unknown"] = workload.unknown
    stats["client ops dropped"] = workload.failed
    for name, count in cluster.faults.counts.items():
        stats[f"fault {name}"] = count
    return stats


def _traceback_tail() -> list[str]:
    return [line for line in traceback.format_exc().splitlines() if line][-12:]


class LivenessFailure(Exception):
    pass


def _safety_phase(cluster: Cluster) -> None:
    scenario = cluster.scenario
    status_every = scenario.raft.election_tick * TICK_STEPS
    for _ in range(scenario.limits.safety_ticks * TICK_STEPS):
        cluster.run_step()
        if cluster.trace.enabled and cluster.now % status_every == 0:
            for line in cluster.status_lines():
                cluster.trace.note(f"{cluster.now} | {line}")


def _liveness_phase(cluster: Cluster) -> None:
    scenario = cluster.scenario
    cluster.event("liveness phase: heal everything")
    cluster.faults.enabled = False
    cluster.workload.enabled = False
    cluster.faults.partition_until = None
    cluster.network.heal()
    cluster.network.unclog_all()
    cluster.network.set_profile(CALM_NETWORK)
    cluster.restart_all()
    election_tick = scenario.raft.election_tick
    budget_ticks = max(scenario.limits.liveness_ticks, 40 * election_tick)
    marker = Command(LIVENESS_CLIENT, 1, "put", "liveness", "done").encode()
    last_attempt = -(10**9)
    for tick in range(budget_ticks):
        for _ in range(TICK_STEPS):
            cluster.run_step()
        leader = cluster.leader()
        if leader is None or leader.rawnode is None:
            continue
        if _converged(cluster, leader):
            cluster.event(f"liveness: converged after {tick + 1} ticks, leader n{leader.id}")
            return
        if tick - last_attempt < election_tick:
            continue
        last_attempt = tick
        rawnode = leader.rawnode
        conf_state = rawnode.raft.conf_state()
        try:
            if conf_state.is_joint() and not conf_state.auto_leave:
                cluster.event(f"liveness: n{leader.id} proposes leaving the joint config")
                rawnode.propose_conf_change(ConfChange())
            elif not _has_marker(leader):
                cluster.event(f"liveness: n{leader.id} proposes the marker entry")
                rawnode.propose(marker)
        except (ProposalDropped, ConfChangeInvalid) as error:
            cluster.event(f"  refused: {error}")
        cluster.after_event(leader)
    raise LivenessFailure(
        f"no convergence within {budget_ticks} ticks of healing; {_diagnose(cluster)}"
    )


def _diagnose(cluster: Cluster) -> str:
    """Why the cluster did not converge: who campaigns in which configuration, or which
    members the leader is not bringing up to date (with its progress for them)."""
    leader = cluster.leader()
    if leader is None or leader.rawnode is None:
        views = []
        for node in cluster.live_nodes():
            assert node.rawnode is not None
            raft = node.rawnode.raft
            log = raft.log
            views.append(
                f"n{node.id} {raft.role.value.removeprefix('State').lower()} t{raft.term} "
                f"last {log.last_term()}/{log.last_index()} commit {log.committed} "
                f"config {describe_conf_state(raft.conf_state())}"
            )
        return "no leader: " + "; ".join(views)
    status = leader.rawnode.status()
    lagging = []
    for member, progress in sorted(status.progress.items()):
        machine = cluster.nodes[member].state_machine if member in cluster.nodes else None
        applied = None if machine is None else machine.applied
        behind = applied != status.committed or progress.match < status.last_index
        if member != leader.id and behind:
            lagging.append(
                f"n{member} applied {applied} (match {progress.match}, next {progress.next}, "
                f"{progress.state}, {progress.inflight_count} in flight)"
            )
    return (
        f"leader n{leader.id} term {status.hard_state.term} commit {status.committed} "
        f"last {status.last_index}; lagging: {', '.join(lagging) or 'none'}"
    )


def _has_marker(node: SimNode) -> bool:
    state_machine = node.state_machine
    return state_machine is not None and state_machine.sessions.get(LIVENESS_CLIENT, 0) >= 1


def _converged(cluster: Cluster, leader: SimNode) -> bool:
    assert leader.rawnode is not None
    raft = leader.rawnode.raft
    committed = raft.log.committed
    if committed != raft.log.last_index() or not _has_marker(leader):
        return False
    members = raft.conf_state().members()
    for member in sorted(members):
        node = cluster.nodes.get(NodeId(member))
        if node is None or node.rawnode is None or node.state_machine is None:
            return False
        log = node.rawnode.raft.log
        if log.committed != committed or node.state_machine.applied != committed:
            return False
    return True
