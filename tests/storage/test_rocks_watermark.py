"""The durability watermark: a RocksStorage whose write-ahead log was cut back past what it
had made durable refuses to open (StateRolledBack) instead of opening an older state."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from storage_helpers import CONF_STATE, make_entries

from raftkv.raft.core.types import HardState, NodeId, Snapshot, SnapshotMetadata
from raftkv.raft.storage.base import StorageCorrupt
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.raft.storage.watermark import WATERMARK_FILE, DurabilityWatermark, StateRolledBack


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_term_and_vote_are_recorded_at_once_and_commit_at_most_once_per_interval(
    tmp_path: Path,
) -> None:
    clock = Clock()
    watermark = DurabilityWatermark(str(tmp_path), interval_s=1.0, clock=clock)
    assert watermark.recorded is None
    watermark.after_sync(HardState(term=1, vote=NodeId(0), commit=1))
    assert watermark.recorded == HardState(term=1, vote=NodeId(0), commit=1)
    watermark.after_sync(HardState(term=1, vote=NodeId(0), commit=5))  # within the interval
    assert watermark.recorded == HardState(term=1, vote=NodeId(0), commit=1)
    watermark.after_sync(HardState(term=2, vote=NodeId(3), commit=5))  # a vote: always
    assert watermark.recorded == HardState(term=2, vote=NodeId(3), commit=5)
    clock.now = 5.0
    watermark.after_sync(HardState(term=2, vote=NodeId(3), commit=9))
    assert DurabilityWatermark(str(tmp_path)).recorded == HardState(
        term=2, vote=NodeId(3), commit=9
    )


@pytest.mark.parametrize(
    ("now", "last_index", "lost"),
    [
        (HardState(term=1, vote=NodeId(3), commit=9), 9, "term went back from 2 to 1"),
        (HardState(term=2, vote=NodeId(0), commit=9), 9, "vote for node 3 in term 2 is gone"),
        (HardState(term=2, vote=NodeId(3), commit=4), 4, "the log was cut at index 4"),
        (HardState(term=2, vote=NodeId(3), commit=7), 12, "commit index went back from 9"),
    ],
)
def test_a_database_holding_less_than_recorded_is_refused(
    tmp_path: Path, now: HardState, last_index: int, lost: str
) -> None:
    DurabilityWatermark(str(tmp_path)).record(HardState(term=2, vote=NodeId(3), commit=9))
    watermark = DurabilityWatermark(str(tmp_path))
    watermark.check(HardState(term=2, vote=NodeId(3), commit=9), 9)  # as recorded: fine
    watermark.check(HardState(term=3, vote=NodeId(1), commit=20), 25)  # more: fine
    with pytest.raises(StateRolledBack, match=lost) as raised:
        watermark.check(now, last_index)
    assert "join again with a new id" in str(raised.value)


def test_a_damaged_watermark_names_its_file(tmp_path: Path) -> None:
    (tmp_path / WATERMARK_FILE).write_bytes(b"\x01garbage")
    with pytest.raises(StorageCorrupt, match=WATERMARK_FILE):
        DurabilityWatermark(str(tmp_path))


def test_recovery_resets_the_watermark_with_the_state(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    storage.persist(
        HardState(term=7, vote=NodeId(2), commit=3), make_entries(1, 7, 7, 7), None, sync=True
    )
    snapshot = Snapshot(SnapshotMetadata(3, 7, CONF_STATE), b"state")
    storage.reset_to_snapshot(snapshot, HardState(term=1, commit=3))  # e.g. a term reset
    storage.close()
    RocksStorage(tmp_path / "db", create=False).close()  # opens: the reset was recorded


_WRITER = textwrap.dedent(
    """
    import os, sys
    from raftkv.raft.core.types import Entry, HardState, NodeId
    from raftkv.raft.storage.rocks import RocksStorage
    storage = RocksStorage(sys.argv[1])
    for index in range(1, 401):
        entry = Entry(term=1, index=index, data=b"x" * 512)
        storage.persist(HardState(term=1, vote=NodeId(1), commit=index), [entry], None, sync=True)
    # A new term is recorded at once (commits only once a second): the watermark now
    # holds commit 400 whatever the timing of the writes above.
    storage.persist(HardState(term=2, vote=NodeId(1), commit=400), [], None, sync=True)
    os._exit(0)  # as kill -9: nothing flushed, the WAL holds it all
    """
)


def test_a_cut_write_ahead_log_is_refused_at_open(tmp_path: Path) -> None:
    database = tmp_path / "db"
    subprocess.run([sys.executable, "-c", _WRITER, str(database)], check=True, timeout=120)
    logs = glob.glob(str(database / "*.log"))
    wal = max(logs, key=os.path.getsize)
    os.truncate(wal, os.path.getsize(wal) // 2)
    with pytest.raises(StateRolledBack, match=r"the log was cut at index \d+ though index 400"):
        RocksStorage(database, create=False)
