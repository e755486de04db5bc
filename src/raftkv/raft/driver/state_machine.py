"""The `StateMachine` protocol: what an application replicates with raftkv.

The driver calls every method on the event loop thread, in log order, never concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Command:
    """One committed command, with the log position it was committed at."""

    index: int
    term: int
    data: bytes


class StateMachine(Protocol):
    def applied_index(self) -> int:
        """The index of the last entry whose effects this state machine holds.

        A durable state machine stores it atomically with the data it covers (see
        `raftkv.raft.storage.base.AppData.commit`), so after a crash it resumes exactly
        there: no entry is applied twice or skipped. An in-memory one starts at 0 and is
        rebuilt from the latest snapshot plus the log.
        """
        ...

    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> Sequence[object]:
        """Apply `commands` in order and return one result per command.

        Must be deterministic: the same commands give the same state on every node.
        `applied_index` (>= the last command's index) is the position the state machine
        has reached after this call; it also covers entries that carry no command (leader
        no-ops, membership changes). Return an exception instance as a command's result to
        fail that proposal for its caller; raising stops the node.
        """
        ...

    def snapshot(self) -> bytes:
        """The whole state as of `applied_index()`, to restore on another node."""
        ...

    def restore(self, data: bytes, index: int, term: int) -> None:
        """Replace the whole state with a snapshot taken at `index`."""
        ...


@runtime_checkable
class BackgroundSnapshots(Protocol):
    """Optional, for a state machine with a large state: snapshots built off the loop.

    `snapshot_later()` is called on the event loop at `applied_index()`; it captures the
    state cheaply (e.g. `AppData.freeze()`, a RocksDB checkpoint) and returns a function
    that the driver runs on a worker thread to produce the same bytes `snapshot()` would
    have. Meanwhile the loop keeps applying and serving.
    """

    def snapshot_later(self) -> Callable[[], bytes]: ...
