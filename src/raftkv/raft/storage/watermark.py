"""The durability watermark: a small file beside RocksDB's own recording the hard state
(term, vote, commit) a RocksStorage had made durable, so that losing synced writes is
noticed when the database is opened.

Why: RocksDB recovers its write-ahead log up to the first damaged or missing record
(point-in-time recovery). A WAL cut by a fault — a truncated or damaged file, a disk that
lied about a flush — therefore opens silently as an *older* state: a shorter log, an older
term, a forgotten vote. A member that comes back like that has lost entries it acknowledged
(the leader counts them as stored here when committing) and perhaps a vote (it could vote
twice in one term): it breaks Raft's safety if it takes part again. Nothing inside the
database can tell, since the database is what was cut.

The watermark is written (atomically: a temporary file, fsync, rename, fsync of the
directory) after a synced write that
- changed the term or the vote: always, before the write returns, hence before the vote
  or the append it covers is answered — a lost vote is always noticed;
- advanced the commit index: at most once per `interval_s`, so its cost stays one small
  fsync per interval under load — a log cut back past the recorded commit is noticed; cuts
  within the last interval's commits are not.

Opening compares: the database must hold at least the recorded term and vote, the recorded
commit index, and log entries up to it. Anything less raises `StateRolledBack`, naming what
was lost and what to do (remove the member and join again with a new id).

Invariant: the watermark never claims more than the database held durably when it was
written (it is written only after a synced write, with that write's state), so a healthy
database always passes the check, whatever crashes happen in between.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from raftkv.raft.core.types import HardState
from raftkv.raft.storage.base import StorageCorrupt
from raftkv.raft.storage.records import RecordInvalid, decode_hard_state, encode_hard_state

WATERMARK_FILE = "RAFTKV-DURABLE"

# How often, at most, an advancing commit index is recorded.
DEFAULT_INTERVAL_S = 1.0


class StateRolledBack(StorageCorrupt):
    """The database holds less than it had made durable: synced writes were lost (a cut or
    damaged write-ahead log). The node must not take part again under its id."""


class DurabilityWatermark:
    """The watermark file in `directory` (see the module docstring). Not thread-safe: the
    storage calls it under its write lock."""

    def __init__(
        self,
        directory: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._path = os.path.join(directory, WATERMARK_FILE)
        self._interval_s = interval_s
        self._clock = clock
        self._recorded = self._read()
        self._written_at = -float("inf")

    @property
    def recorded(self) -> HardState | None:
        return self._recorded

    def check(self, hard_state: HardState, last_index: int) -> None:
        """Raise StateRolledBack unless the opened database holds at least what was
        recorded: `hard_state` and `last_index` are what it holds now."""
        recorded = self._recorded
        if recorded is None:
            return
        lost = []
        if hard_state.term < recorded.term:
            lost.append(f"its term went back from {recorded.term} to {hard_state.term}")
        elif (
            hard_state.term == recorded.term and recorded.vote and hard_state.vote != recorded.vote
        ):
            lost.append(f"its vote for node {recorded.vote} in term {recorded.term} is gone")
        if last_index < recorded.commit:
            lost.append(
                f"the log was cut at index {last_index} though index {recorded.commit} "
                "was committed here"
            )
        elif hard_state.commit < recorded.commit:
            lost.append(f"its commit index went back from {recorded.commit} to {hard_state.commit}")
        if lost:
            raise StateRolledBack(
                f"the database at {self._directory} lost writes it had made durable "
                f"({'; '.join(lost)}): its write-ahead log was cut or damaged, so this node "
                "may have acknowledged entries or cast a vote it no longer remembers and must "
                "not take part again under its id: remove it from the cluster and join again "
                "with a new id and an empty data dir"
            )

    def after_sync(self, hard_state: HardState) -> None:
        """Called after each synced write with the storage's hard state, all durable now."""
        recorded = self._recorded
        if (
            recorded is not None
            and (hard_state.term, hard_state.vote) == (recorded.term, recorded.vote)
            and (
                hard_state.commit <= recorded.commit
                or self._clock() - self._written_at < self._interval_s
            )
        ):
            return
        self.record(hard_state)

    def record(self, hard_state: HardState) -> None:
        """Write the watermark now (also after a deliberate reset of the hard state)."""
        temporary = self._path + ".tmp"
        with open(temporary, "wb") as file:
            file.write(encode_hard_state(hard_state))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._path)
        directory = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._recorded = hard_state
        self._written_at = self._clock()

    def _read(self) -> HardState | None:
        try:
            with open(self._path, "rb") as file:
                record = file.read()
        except FileNotFoundError:
            return None
        try:
            return decode_hard_state(record)
        except RecordInvalid as error:
            raise StorageCorrupt(f"{self._path}: {error}") from error
