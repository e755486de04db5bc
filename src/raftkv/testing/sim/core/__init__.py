"""The core simulator: a deterministic simulator of a raftkv cluster's pure Raft cores
(FoundationDB / TigerBeetle VOPR style).

One process, one seed, simulated time: a packet simulator, disks that lose unsynced writes,
crashes, partitions, membership changes and compaction; Raft's safety properties checked
after every event; a liveness phase after healing; client histories checked for
linearizability. Run `python -m raftkv.testing.sim --help`.
"""

from raftkv.testing.sim.core.runner import SeedResult, run_seed
from raftkv.testing.sim.core.scenario import Scenario, default_scenario
from raftkv.testing.sim.core.swarm import swarm_scenario

__all__ = ["Scenario", "SeedResult", "default_scenario", "run_seed", "swarm_scenario"]
