"""The three simulators, from the pure core up, and their one entry point.

- `core` (`raftkv.testing.sim.core`): the pure Raft cores of a whole cluster in one process
  on simulated time, under a packet simulator, lossy disks, crashes, partitions and
  membership changes; Raft's safety properties after every event, then liveness.
- `driver` (`raftkv.testing.sim.driver`): the real asyncio `Node`s on a `LocalCluster`
  (ManualClock, in-process network, disks that lose unsynced writes) under seeded faults.
- `kv` (`raftkv.testing.sim.kv`): the driver simulation's faults over the KV state machine,
  with leases, watches and hash checks.

Each runs one seed with its `run_seed(seed, ...)`, which returns a `SeedOutcome` (verdict,
trace hash, a report that names the command reproducing it). `sweep` runs one of them over
many seeds, and `python -m raftkv.testing.sim [core|driver|kv] --seeds A:B` (or `--seed N`)
runs any of them from the command line.
"""

from raftkv.testing.sim.sweeps import SeedOutcome, SweepResult, seed_range, sweep

__all__ = ["SeedOutcome", "SweepResult", "seed_range", "sweep"]
