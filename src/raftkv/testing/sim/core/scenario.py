"""What one simulated run looks like: cluster size, Raft knobs, fault rates, limits.

A `Scenario` is a plain value. `default_scenario` is a fixed, moderately faulty setup;
`raftkv.testing.sim.core.swarm` draws one at random per seed (swarm testing: each seed turns
some features off and others up, so rare combinations get explored).

Time: the simulator advances in *steps*; each node's Raft `tick()` runs every
`TICK_STEPS` steps (at a per-node phase), and network delays are in steps, so a message
usually arrives well within one tick, and sometimes many ticks late.

Randomness: every concern has its own `random.Random`, derived from the seed and the
concern's name (`substream`), so changing how often one concern draws does not shift the
numbers another concern sees. CPython seeds a `Random` from a `str` through SHA-512,
independently of PYTHONHASHSEED, so streams are the same in every process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from raftkv.raft.core.config import NO_LIMIT, Config
from raftkv.raft.core.types import NodeId, ReadOnlyOption

__all__ = [
    "TICK_STEPS",
    "FaultRates",
    "Limits",
    "NetworkProfile",
    "RaftKnobs",
    "Scenario",
    "default_scenario",
    "substream",
]

# Simulated steps per Raft tick.
TICK_STEPS = 10


def substream(seed: int, name: str) -> random.Random:
    """An independent, reproducible random stream for one concern of one seed."""
    return random.Random(f"raftkv-sim:{seed}:{name}")


@dataclass(frozen=True, slots=True)
class RaftKnobs:
    """The core `Config` fields the simulator varies (see `raftkv.raft.core.config`)."""

    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    max_size_per_message: int = 1 << 20
    max_inflight_messages: int = 256
    max_inflight_entries: int = 1024
    max_uncommitted_entries_size: int = 64 << 20
    max_committed_size_per_ready: int = 4 << 20
    disable_proposal_forwarding: bool = False

    def config(self, node_id: NodeId, applied: int = 0, rng: random.Random | None = None) -> Config:
        """The core Config these knobs describe, for one node."""
        return Config(
            id=node_id,
            election_tick=self.election_tick,
            heartbeat_tick=self.heartbeat_tick,
            applied=applied,
            max_size_per_message=self.max_size_per_message,
            max_committed_size_per_ready=self.max_committed_size_per_ready,
            max_uncommitted_entries_size=self.max_uncommitted_entries_size,
            max_inflight_messages=self.max_inflight_messages,
            max_inflight_entries=self.max_inflight_entries,
            check_quorum=self.check_quorum,
            pre_vote=self.pre_vote,
            read_only_option=self.read_only_option,
            disable_proposal_forwarding=self.disable_proposal_forwarding,
            rng=rng,
        )


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """Per-message behaviour of the packet simulator during the safety phase."""

    # Probability that a message is lost / delivered twice.
    loss: float = 0.02
    duplicate: float = 0.02
    # Usual delay, uniform in [min_delay, max_delay] steps.
    min_delay: int = 1
    max_delay: int = 5
    # Probability of a slow message, delayed uniformly up to `slow_max_delay` steps; slow
    # messages are what reorders traffic between two nodes.
    slow: float = 0.02
    slow_max_delay: int = 100


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probabilities per Raft tick (for the whole cluster) of each injected fault."""

    crash: float = 0.01
    # Probability per Ready that the node crashes part-way through processing it.
    crash_in_ready: float = 0.002
    # Mean down time of a crashed node, in ticks.
    mean_down_ticks: int = 30
    partition: float = 0.01
    # Mean duration of a partition / clog, in ticks.
    mean_partition_ticks: int = 40
    clog: float = 0.01
    mean_clog_ticks: int = 15
    membership_change: float = 0.01
    leader_transfer: float = 0.01
    compaction: float = 0.03
    # Probability per node per step that a pending Ready waits (a slow disk): messages keep
    # arriving and being stepped before the Ready is processed.
    slow_ready: float = 0.1
    # Probability that the state machine flushes its durable image after applying a Ready;
    # otherwise a crash loses applied state and Raft must replay from `Config.applied`.
    state_machine_flush: float = 0.7


@dataclass(frozen=True, slots=True)
class Limits:
    """A limit on everything, so every run terminates."""

    # Length of the safety phase, in ticks.
    safety_ticks: int = 400
    # Ticks the healed cluster gets to elect a leader, commit and converge.
    liveness_ticks: int = 600
    # Hard cap on simulator events (deliveries, ticks, Readies, faults) per seed.
    max_events: int = 400_000
    # Messages in flight at once; beyond it the network drops.
    max_in_flight: int = 5_000
    # Nodes ever created (initial members plus the ones added later).
    max_nodes_ever: int = 12
    # Members (voters plus learners) at once.
    max_members: int = 7
    # Linearizability search budget.
    max_check_steps: int = 2_000_000


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    swarm: bool = False
    nodes: int = 5
    clients: int = 3
    keys: int = 3
    # Probability per tick that an idle client starts an operation; share of reads.
    client_rate: float = 0.3
    read_share: float = 0.5
    # Ticks a client waits for an answer before giving up (the outcome becomes unknown).
    client_timeout_ticks: int = 40
    raft: RaftKnobs = field(default_factory=RaftKnobs)
    network: NetworkProfile = field(default_factory=NetworkProfile)
    faults: FaultRates = field(default_factory=FaultRates)
    limits: Limits = field(default_factory=Limits)

    def describe(self) -> str:
        knobs = self.raft
        return (
            f"seed={self.seed} swarm={self.swarm} nodes={self.nodes} clients={self.clients} "
            f"keys={self.keys} election_tick={knobs.election_tick} "
            f"heartbeat_tick={knobs.heartbeat_tick} pre_vote={knobs.pre_vote} "
            f"check_quorum={knobs.check_quorum} read_only={knobs.read_only_option.value} "
            f"max_size_per_message={_size(knobs.max_size_per_message)} "
            f"max_inflight_messages={knobs.max_inflight_messages} "
            f"max_inflight_entries={knobs.max_inflight_entries} "
            f"max_uncommitted={_size(knobs.max_uncommitted_entries_size)} "
            f"forwarding={not knobs.disable_proposal_forwarding} | {self.network} | "
            f"{self.faults}"
        )


def _size(value: int) -> str:
    return "none" if value >= NO_LIMIT else str(value)


def default_scenario(seed: int) -> Scenario:
    """The fixed scenario of non-swarm runs: five nodes, every fault at a moderate rate."""
    return Scenario(seed=seed)
