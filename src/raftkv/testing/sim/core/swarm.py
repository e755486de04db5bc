"""Swarm testing: a randomized `Scenario` per seed.

Every seed draws its own cluster size, workload, Raft knobs and fault mix. Each fault is
switched off entirely in some seeds (Groce et al., "Swarm Testing", 2012): a fault that is
always present can mask the interleavings another one would reach.
"""

from __future__ import annotations

import random

from raftkv.raft.core.types import ReadOnlyOption
from raftkv.testing.sim.core.scenario import (
    FaultRates,
    Limits,
    NetworkProfile,
    RaftKnobs,
    Scenario,
    substream,
)

__all__ = ["swarm_scenario"]


def _rate(rng: random.Random, high: float, off: float = 0.3) -> float:
    """0 with probability `off`, else uniform in (0, high]."""
    if rng.random() < off:
        return 0.0
    return rng.uniform(high / 20, high)


def _inflight_entries(seed: int) -> int:
    """No entry window (0) half the time, else one of one entry and up. Drawn from its own
    stream, so that seeds drawn before this knob existed keep the rest of their scenario."""
    rng = substream(seed, "max_inflight_entries")
    return 0 if rng.random() < 0.5 else rng.choice([1, 2, 4, 16, 1024])


def swarm_scenario(seed: int) -> Scenario:
    rng = substream(seed, "swarm")
    nodes = rng.choice([1, 2, 3, 3, 3, 4, 5, 5, 6, 7])
    election_tick = rng.randint(4, 20)
    heartbeat_tick = rng.randint(1, max(1, min(3, election_tick // 4)))
    check_quorum = rng.random() < 0.6
    read_only = ReadOnlyOption.SAFE
    if check_quorum and rng.random() < 0.25:
        read_only = ReadOnlyOption.LEASE_BASED
    knobs = RaftKnobs(
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        pre_vote=rng.random() < 0.6,
        check_quorum=check_quorum,
        read_only_option=read_only,
        max_size_per_message=rng.choice([1, 64, 256, 4096, 1 << 20]),
        max_inflight_messages=rng.choice([1, 2, 4, 16, 256]),
        max_inflight_entries=_inflight_entries(seed),
        max_uncommitted_entries_size=rng.choice([300, 2000, 64 << 20, 64 << 20]),
        max_committed_size_per_ready=rng.choice([1, 200, 4 << 20]),
        disable_proposal_forwarding=rng.random() < 0.2,
    )
    slow_max_delay = rng.choice([20, 100, 400])
    network = NetworkProfile(
        loss=_rate(rng, 0.15),
        duplicate=_rate(rng, 0.1),
        min_delay=1,
        max_delay=rng.choice([1, 3, 5, 10, 30]),
        slow=_rate(rng, 0.1),
        slow_max_delay=slow_max_delay,
    )
    faults = FaultRates(
        crash=_rate(rng, 0.03),
        crash_in_ready=_rate(rng, 0.01),
        mean_down_ticks=rng.choice([5, 20, 60]),
        partition=_rate(rng, 0.03),
        mean_partition_ticks=rng.choice([10, 40, 120]),
        clog=_rate(rng, 0.03),
        mean_clog_ticks=rng.choice([5, 15, 40]),
        membership_change=_rate(rng, 0.04, off=0.4),
        leader_transfer=_rate(rng, 0.03),
        compaction=_rate(rng, 0.1),
        slow_ready=_rate(rng, 0.5),
        state_machine_flush=rng.choice([0.1, 0.5, 1.0]),
    )
    return Scenario(
        seed=seed,
        swarm=True,
        nodes=nodes,
        clients=rng.randint(1, 5),
        keys=rng.randint(1, 4),
        client_rate=rng.uniform(0.05, 0.6),
        read_share=rng.uniform(0.2, 0.8),
        client_timeout_ticks=rng.choice([10, 30, 80]) + 2 * election_tick,
        raft=knobs,
        network=network,
        faults=faults,
        limits=Limits(),
    )
