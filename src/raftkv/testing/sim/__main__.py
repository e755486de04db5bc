"""`python -m raftkv.testing.sim --seeds A:B [--swarm] [--jobs N]` or
`python -m raftkv.testing.sim --seed N [--swarm] [--trace]`."""

from __future__ import annotations

import argparse
import sys

from raftkv.testing.sim.runner import (
    SeedResult,
    describe_failure,
    reproduce_command,
    run_seed,
    sweep,
)


def _seed_range(text: str) -> range:
    start, _, end = text.partition(":")
    try:
        first, last = int(start), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (seeds A to B-1), got {text!r}") from None
    if last <= first:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return range(first, last)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftkv.testing.sim",
        description="Deterministic Raft cluster simulator (safety + liveness + linearizability).",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=_seed_range, help="run seeds A..B-1 (A:B)")
    which.add_argument("--seed", type=int, help="run one seed")
    parser.add_argument("--swarm", action="store_true", help="randomize the scenario per seed")
    parser.add_argument("--trace", action="store_true", help="print the event trace (--seed)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for --seeds")
    parser.add_argument("--verbose", action="store_true", help="one line per seed")
    parser.add_argument("--coverage", action="store_true", help="print what the sweep exercised")
    args = parser.parse_args(argv)

    if args.seed is not None:
        result = run_seed(args.seed, swarm=args.swarm, trace_sink=print if args.trace else None)
        print(_seed_line(result))
        if not result.ok:
            print(describe_failure(result))
            return 1
        return 0

    def report(result: SeedResult) -> None:
        if not result.ok:
            print(describe_failure(result), flush=True)
        elif args.verbose:
            print(_seed_line(result), flush=True)

    outcome = sweep(args.seeds, swarm=args.swarm, jobs=args.jobs, on_result=report)
    if args.coverage:
        print("coverage (total events, seeds with any):")
        print(outcome.coverage())
    print(outcome.summary())
    for failed in outcome.failures:
        print(f"  failing seed {failed.seed}: {reproduce_command(failed.seed, failed.swarm)}")
    return 1 if outcome.failures else 0


def _seed_line(result: SeedResult) -> str:
    verdict = "ok" if result.ok else "FAILED"
    return (
        f"seed {result.seed}{' swarm' if result.swarm else ''}: {verdict}, "
        f"trace hash {result.trace_hash}, {result.events} events, {result.steps} steps, "
        f"{result.operations} client operations, {result.seconds:.2f}s"
    )


if __name__ == "__main__":
    sys.exit(main())
