"""Chaos runs: a real raftkv cluster in network namespaces, under a seeded schedule of
process kills, pauses, partitions, full disks and membership changes, with every request
and the store's history checked afterwards. `python -m raftkv.testing.chaos --help`;
`make chaos`. Needs root (namespaces, tmpfs mounts) and iproute2."""

from raftkv.testing.chaos.runner import FAULTS, ChaosReport, ChaosSettings, run_chaos

__all__ = ["FAULTS", "ChaosReport", "ChaosSettings", "run_chaos"]
