"""Trace hashes of the three simulators over seed ranges, written to (or compared with) a
JSON file: the check that a refactoring changed no behaviour (the same seed gives the same
trace before and after).

    .venv/bin/python tools/trace_hashes.py record FILE [--seeds 0:500] [--jobs 2]
    .venv/bin/python tools/trace_hashes.py compare FILE [--jobs 2]

`compare` reruns the seeds the file holds and prints every seed whose hash differs;
it exits 1 if any does. Seeds that fail a simulator's checks are recorded as failures and
must fail alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from raftkv.testing.sim import SeedOutcome

SIMULATORS = ("core", "driver", "kv")


def _hash(simulator: str, seed: int) -> str:
    """The seed's trace hash; "failed:HASH" if it failed a check (core: swarm mode)."""
    result: SeedOutcome
    if simulator == "core":
        from raftkv.testing.sim.core.runner import run_seed  # noqa: PLC0415

        result = run_seed(seed, swarm=True)
    elif simulator == "driver":
        from raftkv.testing.sim.driver import run_seed as run_driver_seed  # noqa: PLC0415

        result = run_driver_seed(seed)
    else:
        from raftkv.testing.sim.kv import run_seed as run_kv_seed  # noqa: PLC0415

        result = run_kv_seed(seed)
    return result.trace_hash if result.ok else f"failed:{result.trace_hash}"


def _one(job: tuple[str, int]) -> tuple[str, int, str]:
    simulator, seed = job
    return simulator, seed, _hash(simulator, seed)


def hashes(jobs: list[tuple[str, int]], workers: int) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {simulator: {} for simulator in SIMULATORS}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for simulator, seed, trace_hash in pool.map(_one, jobs, chunksize=8):
            found[simulator][str(seed)] = trace_hash
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["record", "compare"])
    parser.add_argument("file", type=Path)
    parser.add_argument("--seeds", default="0:500", help="A:B, half-open (record)")
    parser.add_argument("--jobs", type=int, default=2)
    arguments = parser.parse_args(argv)
    if arguments.mode == "record":
        low, high = (int(part) for part in arguments.seeds.split(":"))
        jobs = [(simulator, seed) for simulator in SIMULATORS for seed in range(low, high)]
        recorded = hashes(jobs, arguments.jobs)
        arguments.file.write_text(json.dumps(recorded, indent=0, sort_keys=True))
        print(f"recorded {len(jobs)} trace hashes ({arguments.seeds} of {SIMULATORS})")
        return 0
    expected: dict[str, dict[str, str]] = json.loads(arguments.file.read_text())
    jobs = [(simulator, int(seed)) for simulator in SIMULATORS for seed in expected[simulator]]
    found = hashes(jobs, arguments.jobs)
    differing = [
        (simulator, seed)
        for simulator in SIMULATORS
        for seed in expected[simulator]
        if found[simulator][seed] != expected[simulator][seed]
    ]
    for simulator, seed in differing:
        print(f"{simulator} seed {seed}: {expected[simulator][seed]} -> {found[simulator][seed]}")
    print(f"{len(jobs)} trace hashes compared, {len(differing)} differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
