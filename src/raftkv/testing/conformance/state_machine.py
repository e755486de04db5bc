"""`check_state_machine`: does a state machine keep the promises Raft relies on?

For people who embed raftkv with a state machine of their own. Given a way to create
instances and some valid commands, it checks:

- a fresh instance has applied nothing (`applied_index() == 0`), or, if durable, what its
  storage says;
- `apply` returns one result per command and reports the applied index it was given;
- determinism: the same commands, split into different batches, give identical snapshots
  on two instances (replicas must not diverge);
- `snapshot` / `restore` round-trip: an instance restored from a snapshot has the same
  snapshot and applied index, and restoring replaces the previous state entirely;
- durable state machines: a new instance over the same storage resumes at the applied index
  and state it had (the applied index is written with the data it covers).

Raises AssertionError naming the broken promise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from raftkv.raft.driver.state_machine import Command, StateMachine
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage

StateMachineFactory = Callable[[RaftStorage], StateMachine]

# Commands start at this index, as after a bootstrap snapshot at 1 and a leader's no-op.
_FIRST_INDEX = 3
_TERM = 2


class StateMachineCheckFailed(AssertionError):
    """A state machine broke one of the promises `check_state_machine` checks."""


def _require(condition: bool, promise: str) -> None:
    if not condition:
        raise StateMachineCheckFailed(promise)


def _apply_in_batches(
    machine: StateMachine, commands: Sequence[bytes], batch_size: int, first_index: int
) -> list[object]:
    results: list[object] = []
    for start in range(0, len(commands), batch_size):
        batch = [
            Command(first_index + start + offset, _TERM, data)
            for offset, data in enumerate(commands[start : start + batch_size])
        ]
        applied_index = batch[-1].index
        batch_results = list(machine.apply(batch, applied_index, _TERM))
        _require(
            len(batch_results) == len(batch),
            f"apply() returned {len(batch_results)} results for {len(batch)} commands",
        )
        _require(
            machine.applied_index() == applied_index,
            f"applied_index() is {machine.applied_index()} after applying through {applied_index}",
        )
        results.extend(batch_results)
    return results


def check_state_machine(
    factory: StateMachineFactory,
    commands: Sequence[bytes],
    *,
    durable: bool = False,
    storage: Callable[[], RaftStorage] = MemoryStorage,
) -> None:
    """Run every check on instances from `factory(storage)`; `commands` must be valid
    commands for this state machine (at least two). `durable`: the state machine keeps
    its state in `storage.app_data()` and must resume from it."""
    _require(len(commands) >= 2, "check_state_machine needs at least two commands")
    first_storage = storage()
    first = factory(first_storage)
    _require(first.applied_index() == 0, "a fresh state machine has applied_index() != 0")
    _apply_in_batches(first, commands, batch_size=len(commands), first_index=_FIRST_INDEX)
    last_index = _FIRST_INDEX + len(commands) - 1
    reference = first.snapshot()

    second = factory(storage())
    _apply_in_batches(second, commands, batch_size=1, first_index=_FIRST_INDEX)
    _require(
        second.snapshot() == reference,
        "not deterministic: the same commands in other batches gave another snapshot",
    )

    restored = factory(storage())
    # State that the restore must wipe out.
    _apply_in_batches(restored, commands[:1], batch_size=1, first_index=_FIRST_INDEX)
    restored.restore(reference, last_index, _TERM)
    _require(
        restored.applied_index() == last_index,
        f"after restore at {last_index}, applied_index() is {restored.applied_index()}",
    )
    _require(
        restored.snapshot() == reference,
        "restore(snapshot()) does not reproduce the state (or keeps what was there)",
    )

    if durable:
        resumed = factory(first_storage)
        _require(
            resumed.applied_index() == last_index,
            f"a new instance over the same storage resumes at {resumed.applied_index()}, "
            f"not {last_index}",
        )
        _require(
            resumed.snapshot() == reference,
            "a new instance over the same storage does not have the state it had",
        )
