"""The `StateMachine` protocol: what an application replicates with raftkv.

The driver calls every method on the event loop thread, in log order, never concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec


class Command(msgspec.Struct, frozen=True, gc=False):
    """One committed command, with the log position it was committed at. Commands proposed
    `batchable` (Node.propose, NodeSettings.batch_proposals) may share one entry: they
    come consecutively, in the same `apply` call, with the same index and term. A frozen
    msgspec Struct, as the core's values (raftkv.raft.core.types says why)."""

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


class SnapshotInvalid(Exception):
    """Snapshot bytes that are not a snapshot this state machine can restore: raised by
    `ValidatesSnapshots.validate_snapshot`, and by `restore` before it changes anything."""


@runtime_checkable
class ValidatesSnapshots(Protocol):
    """Optional, and recommended: checks a snapshot received from a peer before any of it
    is persisted or installed.

    Without it, a snapshot whose bytes the state machine cannot restore (a buggy or hostile
    peer's, or one damaged before it was checksummed) is persisted first and fails to
    restore after: the node stops, and fails the same way at every start. With it, the
    transfer is refused (the leader retries later) and nothing changes here.

    `validate_snapshot(data)` raises SnapshotInvalid unless `restore(data, ...)` would
    succeed and leave a state the state machine can open and apply to. It should check the
    whole of `data` and may cost O(len(data)): it runs on a transport's worker thread, off
    the event loop and possibly while entries are applied, so it must read nothing but
    `data` (no state of the state machine, no storage).
    """

    def validate_snapshot(self, data: bytes) -> None: ...
