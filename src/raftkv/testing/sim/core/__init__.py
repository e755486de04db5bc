"""A deterministic simulator of a raftkv cluster (FoundationDB / TigerBeetle VOPR style).

One process, one seed, simulated time: a packet simulator, disks that lose unsynced writes,
crashes, partitions, membership changes and compaction; Raft's safety properties checked
after every event; a liveness phase after healing; client histories checked for
linearizability. Run `python -m raftkv.testing.sim --help`.
"""

from raftkv.testing.sim.runner import SeedResult, SweepResult, reproduce_command, run_seed, sweep
from raftkv.testing.sim.scenario import Scenario, default_scenario
from raftkv.testing.sim.swarm import swarm_scenario

__all__ = [
    "Scenario",
    "SeedResult",
    "SweepResult",
    "default_scenario",
    "reproduce_command",
    "run_seed",
    "swarm_scenario",
    "sweep",
]
