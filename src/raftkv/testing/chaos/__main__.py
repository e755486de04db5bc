"""`python -m raftkv.testing.chaos`: one chaos run; exit 0 if every check passed, 1 if a
problem was found (listed, with the run's directory), 2 if the run could not be made."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from raftkv.testing.chaos.cluster import ChaosError
from raftkv.testing.chaos.lab import LabError
from raftkv.testing.chaos.runner import FAULTS, ChaosSettings, run_chaos
from raftkv.testing.chaos.workload import WorkloadSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftkv.testing.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="the schedule's seed (random)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults (120)")
    parser.add_argument("--nodes", type=int, default=3, help="members, odd, 3 to 9 (3)")
    parser.add_argument("--workers", type=int, default=4, help="client threads (4)")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated, among {','.join(FAULTS)}"
    )
    parser.add_argument("--directory", type=Path, default=None, help="keep the run's files here")
    arguments = parser.parse_args(argv)
    seed = arguments.seed if arguments.seed is not None else random.SystemRandom().randrange(10**6)
    try:
        settings = ChaosSettings(
            seed=seed,
            duration_s=arguments.duration,
            nodes=arguments.nodes,
            workload=WorkloadSettings(workers=arguments.workers),
            faults=tuple(name for name in arguments.faults.split(",") if name),
            directory=arguments.directory,
        )
    except ValueError as error:
        print(f"chaos: {error}", file=sys.stderr)
        return 2
    print(f"chaos seed {seed}: {arguments.duration:.0f}s of faults on {arguments.nodes} members")
    try:
        report = run_chaos(settings)
    except (ChaosError, LabError) as error:
        print(f"chaos seed {seed}: the run could not be made: {error}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0 if report.verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
