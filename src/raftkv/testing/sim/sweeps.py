"""Running a simulator over many seeds and reporting what it found, the same way for the
three simulators.

A simulator runs one seed with a function that never raises for a failure of the system
under test and returns a `SeedOutcome`: the seed, whether every check passed, its trace
hash (a digest of the run: the same seed gives the same hash in any process, which is how
a refactoring proves it changed no behaviour), what the run exercised, a one-line summary,
how to reproduce it and a report of its failure. `sweep` runs such a
function over seeds, in this process or spread over worker processes, and a `SweepResult`
sums the outcomes up.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

__all__ = ["SeedOutcome", "SweepResult", "quiet_logging", "seed_range", "sweep"]

# Seeds a worker process takes at a time: fewer round trips, still an even spread.
_CHUNK_SEEDS = 4


class SeedOutcome(Protocol):
    """What every simulator reports of one seed."""

    @property
    def seed(self) -> int: ...

    @property
    def ok(self) -> bool:
        """Every check passed."""
        ...

    @property
    def trace_hash(self) -> str:
        """A digest of the run; the same seed always gives the same one."""
        ...

    @property
    def stats(self) -> tuple[tuple[str, int], ...]:
        """What the run exercised: (what, how many times), sorted by name."""
        ...

    def line(self) -> str:
        """One line: the seed, its verdict, its trace hash, how much it did."""
        ...

    def reproduce(self) -> str:
        """How to run this seed again, alone and traced: a command line (or a call, for
        a run the command line cannot make)."""
        ...

    def describe_failure(self) -> str:
        """Lines that say what failed and how to reproduce it."""
        ...


Outcome = TypeVar("Outcome", bound=SeedOutcome)


@dataclass(slots=True)
class SweepResult(Generic[Outcome]):
    results: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [result for result in self.results if not result.ok]

    def coverage(self) -> str:
        """Totals of what the sweep exercised, and in how many seeds."""
        totals: dict[str, int] = {}
        seeds: dict[str, int] = {}
        for result in self.results:
            for name, count in result.stats:
                totals[name] = totals.get(name, 0) + count
                seeds[name] = seeds.get(name, 0) + (count > 0)
        return "\n".join(
            f"  {name:<28} {totals[name]:>9} in {seeds[name]:>5} seeds" for name in sorted(totals)
        )

    def summary(self) -> str:
        count = len(self.results)
        rate = count / self.seconds if self.seconds > 0 else 0.0
        first = min((result.seed for result in self.results), default=0)
        last = max((result.seed for result in self.results), default=0)
        return (
            f"seeds {first}..{last} ({count}): {len(self.failures)} failed; "
            f"{self.seconds:.1f}s, {rate:.2f} seeds/s"
        )


def sweep(
    run: Callable[[int], Outcome],
    seeds: Iterable[int],
    *,
    jobs: int = 1,
    on_result: Callable[[Outcome], None] | None = None,
) -> SweepResult[Outcome]:
    """`run(seed)` for every seed, in order; `jobs` > 1 spreads them over worker processes
    (`run` must then pickle: a module-level function, or a functools.partial of one).
    `on_result` sees each outcome as it arrives."""
    started = time.perf_counter()
    outcome: SweepResult[Outcome] = SweepResult()
    seed_list = list(seeds)
    if jobs <= 1:
        results: Iterable[Outcome] = (run(seed) for seed in seed_list)
        for result in results:
            outcome.results.append(result)
            if on_result is not None:
                on_result(result)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=quiet_logging
        ) as pool:
            for result in pool.map(run, seed_list, chunksize=_CHUNK_SEEDS):
                outcome.results.append(result)
                if on_result is not None:
                    on_result(result)
    outcome.seconds = time.perf_counter() - started
    return outcome


def quiet_logging() -> None:
    """Log errors only: what nodes log under faults (a peer unreachable, a member removed)
    is expected, and a sweep reports through its outcomes."""
    logging.basicConfig(level=logging.ERROR)


def seed_range(text: str) -> range:
    """An argparse type: "A:B" is seeds A to B-1."""
    start, _, end = text.partition(":")
    try:
        first, last = int(start), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (seeds A to B-1), got {text!r}") from None
    if last <= first:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return range(first, last)
