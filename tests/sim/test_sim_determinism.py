"""The driver and KV simulations are reproducible from the seed alone: the same seeds run in
two interpreters with different str hash seeds give the same trace hashes and outcomes.

Before this test, kv_sim seeds differed from one process to the next (19 of seeds 0..49):
KvStateMachine's background snapshots were encoded on a worker thread, finishing after as
many loop turns (so as much ManualClock time) as the OS decided. Other leaks closed with
it: member requests timed on the wall clock (asyncio.timeout), a LeaseKeeper cancelling a
set of tasks (address order), lease ids from `secrets`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import raftkv

# Frequent snapshots (every 8 entries) in all four, membership changes in 1, 4 and 7, lease
# reads in 2 and 4; 2, 4 and 7 were among the kv_sim seeds that differed.
SEEDS = (1, 2, 4, 7)
HASH_SEEDS = ("1", "2")

_PROGRAM = """
import json, logging, sys
from raftkv.testing.sim import {module}
logging.disable(logging.CRITICAL)
results = [{module}.run_seed(seed) for seed in {seeds!r}]
print(json.dumps([[r.seed, r.trace_hash, r.failures] for r in results]))
"""


def _run(module: str, hash_seed: str) -> list[list[object]]:
    # The raftkv under test, whatever the interpreter would find on its own.
    source = str(Path(raftkv.__file__).parents[1])
    environment = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": source}
    output = subprocess.run(
        [sys.executable, "-c", _PROGRAM.format(module=module, seeds=SEEDS)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    results: list[list[object]] = json.loads(output.stdout)
    return results


@pytest.mark.parametrize("module", ["driver", "kv"])
def test_a_seed_gives_the_same_run_whatever_the_str_hash_seed(module: str) -> None:
    first, second = (_run(module, hash_seed) for hash_seed in HASH_SEEDS)
    assert [trace_hash for _, trace_hash, _ in first] != [""] * len(SEEDS)
    assert first == second
