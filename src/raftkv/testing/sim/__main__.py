"""`python -m raftkv.testing.sim [core|driver|kv] --seeds A:B [--jobs N]`, or `--seed N`
for one seed (with `--trace`, the core simulator prints its trace).

The simulator defaults to `core`. Its own flags: `--swarm` (a scenario drawn per seed) for
the core; `--nodes` and `--duration` (simulated seconds) for the driver and KV ones.
Exit 0 if every seed passed, 1 if one failed (each failure names the command that
reproduces it), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from raftkv.testing.sim.sweeps import SeedOutcome, quiet_logging, seed_range, sweep

SIMULATORS = ("core", "driver", "kv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftkv.testing.sim",
        description="Deterministic simulators: the pure core (safety, liveness, "
        "linearizability), the asyncio driver, the KV state machine with leases and watches.",
    )
    parser.add_argument(
        "simulator", nargs="?", choices=SIMULATORS, default="core", help="(default: core)"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=seed_range, help="run seeds A..B-1 (A:B)")
    which.add_argument("--seed", type=int, help="run one seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for --seeds")
    parser.add_argument("--verbose", action="store_true", help="one line per seed")
    parser.add_argument("--coverage", action="store_true", help="print what the sweep exercised")
    core = parser.add_argument_group("core")
    core.add_argument("--swarm", action="store_true", help="randomize the scenario per seed")
    core.add_argument("--trace", action="store_true", help="print the event trace (--seed)")
    runtime = parser.add_argument_group("driver and kv")
    runtime.add_argument("--nodes", type=int, default=None, help="founding members (3)")
    runtime.add_argument(
        "--duration", type=float, default=None, help="simulated seconds of faults (20; kv 15)"
    )
    runtime.add_argument(
        "--batching", action="store_true", help="nodes batch proposals (batch_proposals)"
    )
    arguments = parser.parse_args(argv)
    if arguments.simulator == "core" and (arguments.nodes, arguments.duration) != (None, None):
        parser.error("--nodes and --duration are for the driver and kv simulators")
    if arguments.simulator != "core" and (arguments.swarm or arguments.trace):
        parser.error("--swarm and --trace are for the core simulator")
    if arguments.simulator == "core" and arguments.batching:
        parser.error("--batching is for the driver and kv simulators")
    if arguments.seed is not None:
        return _one_seed(arguments)
    return _sweep(arguments)


def _runner(arguments: argparse.Namespace) -> Callable[[int], SeedOutcome]:
    """The chosen simulator's `run_seed` with the options given, picklable for workers."""
    # Imported here: the core simulator alone does not load the driver and the KV store.
    if arguments.simulator == "core":
        from raftkv.testing.sim.core import runner  # noqa: PLC0415

        return functools.partial(runner.run_seed, swarm=arguments.swarm)
    from raftkv.testing.sim import driver, kv  # noqa: PLC0415

    simulation = driver if arguments.simulator == "driver" else kv
    return functools.partial(
        simulation.run_seed,
        nodes=driver.NODES if arguments.nodes is None else arguments.nodes,
        duration_s=simulation.DURATION_S if arguments.duration is None else arguments.duration,
        batching=arguments.batching,
    )


def _one_seed(arguments: argparse.Namespace) -> int:
    if arguments.trace:
        from raftkv.testing.sim.core import runner  # noqa: PLC0415

        result: SeedOutcome = runner.run_seed(
            arguments.seed, swarm=arguments.swarm, trace_sink=print
        )
    else:
        result = _runner(arguments)(arguments.seed)
    print(result.line())
    if not result.ok:
        print(result.describe_failure())
        return 1
    return 0


def _sweep(arguments: argparse.Namespace) -> int:
    def report(result: SeedOutcome) -> None:
        if not result.ok:
            print(result.describe_failure(), flush=True)
        elif arguments.verbose:
            print(result.line(), flush=True)

    outcome = sweep(_runner(arguments), arguments.seeds, jobs=arguments.jobs, on_result=report)
    if arguments.coverage:
        print("coverage (total, seeds with any):")
        print(outcome.coverage())
    print(f"{arguments.simulator} simulator, {outcome.summary()}")
    for failed in outcome.failures:
        print(f"  failing seed {failed.seed}: {failed.reproduce()}")
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    quiet_logging()
    sys.exit(main())
