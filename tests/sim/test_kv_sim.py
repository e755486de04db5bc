"""The KV simulation (`raftkv.testing.sim.kv`) over a bounded set of seeds: the KV state
machine with leases and watches under the driver simulation's faults. `make sim-kv` runs a
longer sweep."""

from __future__ import annotations

import pytest

from raftkv.kv import (
    KvCommand,
    KvStateMachine,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRemaining,
    encode_command,
)
from raftkv.raft.clock import ManualClock
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.testing.sim.kv import run_seed

SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_kv_sim_seed(seed: int) -> None:
    result = run_seed(seed)
    assert result.ok, "\n".join(result.failures)
    assert result.acknowledged > 0


def test_kv_sim_with_batched_writes() -> None:
    """The same checks with the nodes batching writes (batch_proposals), over 20 seeds."""
    results = [run_seed(seed, batching=True) for seed in range(20)]
    failed = [result.describe_failure() for result in results if not result.ok]
    assert not failed, "\n".join(failed)
    assert sum(result.batched for result in results) > 0, "no write shared an entry"


def test_a_checkpoint_read_before_a_keep_alive_does_not_shorten_it() -> None:
    """Found by the KV simulation (seed 16): the leader read a lease's timer (0.3 s left)
    and proposed a checkpoint; a keep-alive applied first; the checkpoint then cut the
    renewed lease to 0.3 s and the leader expired it early. A checkpoint now names the
    renewal it saw and is skipped for a lease renewed since."""
    clock = ManualClock()
    machine = KvStateMachine(MemoryAppData(), clock=clock)

    def apply(index: int, command: KvCommand) -> object:
        return machine.apply([Command(index, 1, encode_command(command))], index, 1)[0]

    apply(1, KvCommand(LeaseGrant(7, 4)))
    clock.advance(3.7)
    stale = LeaseCheckpoint([LeaseRemaining(7, 300, renewed_index=1)])
    apply(2, KvCommand(LeaseKeepAlive(7)))
    apply(3, KvCommand(stale))
    assert machine.lease_timers.remaining_s(7) == pytest.approx(4.0)
    fresh = LeaseCheckpoint([LeaseRemaining(7, 2500, renewed_index=2)])
    apply(4, KvCommand(fresh))
    assert machine.lease_timers.remaining_s(7) == pytest.approx(2.5)
    record = machine.lease(7)
    assert record is not None and record.remaining_ms == 2500
