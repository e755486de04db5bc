"""The Raft log (`raftkv.raft.core.log`): `RaftLog` over `MemoryStorage` plus the `Unstable`
tail. Modelled on etcd-io/raft's `log_test.go` and `log_unstable_test.go`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.errors import InvariantViolation, LogCompacted, LogUnavailable
from raftkv.raft.core.log import RaftLog, Unstable, limit_size
from raftkv.raft.core.types import ConfState, Entry, NodeId, Snapshot, SnapshotMetadata
from raftkv.raft.storage.memory import MemoryStorage

PAYLOAD = b"0123456789"  # every sized entry carries 10 bytes


def make_entries(first_index: int, *terms: int, data: bytes = b"") -> list[Entry]:
    return [Entry(term=term, index=first_index + i, data=data) for i, term in enumerate(terms)]


def snapshot_at(index: int, term: int) -> Snapshot:
    return Snapshot(
        SnapshotMetadata(
            index=index, term=term, conf_state=ConfState(voters=frozenset({NodeId(1)}))
        )
    )


def new_log(
    snapshot: tuple[int, int] | None = None,
    stored: list[Entry] | None = None,
    unstable: list[Entry] | None = None,
    max_applying_size: int = NO_LIMIT,
) -> RaftLog:
    """A log over a MemoryStorage holding `snapshot` (index, term) and `stored` entries,
    with `unstable` entries appended on top."""
    storage = MemoryStorage()
    if snapshot is not None:
        storage.apply_snapshot(snapshot_at(*snapshot))
    if stored:
        storage.append(stored)
    log = RaftLog(storage, max_applying_size)
    if unstable:
        log.append(unstable)
    return log


def indexes(entries: list[Entry]) -> list[int]:
    return [entry.index for entry in entries]


def log_state(log: RaftLog) -> tuple[int, int, int, int, list[Entry]]:
    return (
        log.first_index(),
        log.last_index(),
        log.committed,
        log.unstable.offset,
        log.all_entries(),
    )


# -- limit_size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "max_size", "expected"),
    [
        (0, 100, 0),
        (3, 0, 1),  # at least one entry, whatever the limit
        (3, 9, 1),
        (3, 10, 1),
        (3, 19, 1),
        (3, 20, 2),
        (3, 29, 2),
        (3, 30, 3),
        (3, NO_LIMIT, 3),
    ],
)
def test_limit_size(count: int, max_size: int, expected: int) -> None:
    entries = make_entries(1, *([1] * count), data=PAYLOAD)
    assert limit_size(entries, max_size) == entries[:expected]


# -- appending -------------------------------------------------------------------------------

PREVIOUS = make_entries(1, 1, 2, 3)  # last index 3, last term 3; committed 1 below


@pytest.mark.parametrize(
    ("index", "log_term", "committed", "appended", "expected_last", "expected_commit"),
    [
        # No match: the term at the index differs.
        (3, 2, 3, make_entries(4, 4), None, 1),
        # No match: the index is beyond our log.
        (4, 3, 3, make_entries(5, 4), None, 1),
        # Match at the last entry, nothing to append.
        (3, 3, 3, [], 3, 3),  # commit up to the last index
        (3, 3, 4, [], 3, 3),  # never commit beyond the last new index
        (3, 3, 2, [], 3, 2),  # commit up to the message's commit
        (3, 3, 0, [], 3, 1),  # commit never decreases
        (0, 0, 3, [], 0, 1),  # the empty prefix always matches; commit never decreases
        # Match at the last entry, append.
        (3, 3, 3, make_entries(4, 4), 4, 3),
        (3, 3, 4, make_entries(4, 4), 4, 4),
        (3, 3, 5, make_entries(4, 4), 4, 4),  # never commit beyond the last new index
        (3, 3, 5, make_entries(4, 4, 4), 5, 5),
        # Match in the middle: conflicting entries above the commit index are replaced.
        (2, 2, 3, make_entries(3, 4), 3, 3),
        (1, 1, 3, make_entries(2, 4), 2, 2),
        (1, 1, 3, make_entries(2, 4, 4), 3, 3),
    ],
)
def test_maybe_append(
    *,
    index: int,
    log_term: int,
    committed: int,
    appended: list[Entry],
    expected_last: int | None,
    expected_commit: int,
) -> None:
    log = new_log(unstable=PREVIOUS)
    log.commit_to(1)
    before = log_state(log)
    result = log.maybe_append(index, log_term, committed, tuple(appended))
    assert result == expected_last
    assert log.committed == expected_commit
    if expected_last is None:
        assert log_state(log) == before
        return
    if appended:
        assert log.slice(index + 1, expected_last + 1, NO_LIMIT) == appended
        assert log.last_index() == expected_last


def test_maybe_append_conflict_at_committed_index_is_an_invariant_violation() -> None:
    log = new_log(unstable=PREVIOUS)
    log.commit_to(1)
    before = log_state(log)
    with pytest.raises(InvariantViolation):
        log.maybe_append(0, 0, 3, tuple(make_entries(1, 4)))
    assert log_state(log) == before


def test_maybe_append_conflict_below_committed_index_is_an_invariant_violation() -> None:
    log = new_log(unstable=PREVIOUS)
    log.commit_to(3)
    before = log_state(log)
    with pytest.raises(InvariantViolation):
        log.maybe_append(1, 1, 3, tuple(make_entries(2, 5, 5)))
    assert log_state(log) == before


def test_maybe_append_of_a_known_prefix_keeps_the_tail() -> None:
    # A delayed or duplicated append must not truncate entries that follow it.
    log = new_log(unstable=PREVIOUS)
    assert log.maybe_append(0, 0, 3, tuple(make_entries(1, 1))) == 1
    assert log.last_index() == 3
    assert log.all_entries() == PREVIOUS
    assert log.committed == 1  # only what is known to match the leader is committed


def test_maybe_append_truncates_durable_entries() -> None:
    log = new_log(stored=make_entries(1, 1, 1, 1, 1, 1))
    log.commit_to(2)
    assert log.maybe_append(3, 1, 3, tuple(make_entries(4, 2, 2))) == 5
    assert log.unstable.offset == 4
    assert log.all_entries() == [*make_entries(1, 1, 1, 1), *make_entries(4, 2, 2)]
    assert (log.term(3), log.term(4)) == (1, 2)
    # The durable prefix ends where the conflict began.
    assert log.persisted_index() == 3
    assert log.committed == 3


def test_append_below_commit_is_an_invariant_violation() -> None:
    log = new_log(unstable=PREVIOUS)
    log.commit_to(2)
    with pytest.raises(InvariantViolation):
        log.append(make_entries(2, 9))
    assert log.all_entries() == PREVIOUS


@pytest.mark.parametrize(
    ("appended", "expected"),
    [
        ([], 0),
        # No conflict, nothing new.
        (make_entries(1, 1, 2, 3), 0),
        (make_entries(2, 2, 3), 0),
        (make_entries(3, 3), 0),
        # No conflict, new entries: the first new index.
        (make_entries(1, 1, 2, 3, 4, 4), 4),
        (make_entries(2, 2, 3, 4, 4), 4),
        (make_entries(3, 3, 4, 4), 4),
        (make_entries(4, 4, 4), 4),
        # Conflicts: the first index whose term differs.
        (make_entries(1, 4, 4), 1),
        (make_entries(2, 1, 4, 4), 2),
        (make_entries(3, 1, 2, 4, 4), 3),
    ],
)
def test_find_conflict(appended: list[Entry], expected: int) -> None:
    log = new_log(unstable=PREVIOUS)
    assert log.find_conflict(tuple(appended)) == expected


def log_from_one() -> RaftLog:
    return new_log(stored=make_entries(1, 2, 2, 5, 5, 5))


def log_from_eleven() -> RaftLog:
    return new_log(snapshot=(10, 3), stored=make_entries(11, 3, 3, 4, 4, 4))


@pytest.mark.parametrize(
    ("layout", "index", "term", "expected"),
    [
        # etcd-io/raft TestFindConflictByTerm. Log starts at index 1.
        (log_from_one, 100, 2, (100, 0)),  # unavailable: the term is unknown
        (log_from_one, 5, 6, (5, 5)),
        (log_from_one, 5, 5, (5, 5)),
        (log_from_one, 5, 4, (2, 2)),
        (log_from_one, 5, 2, (2, 2)),
        (log_from_one, 5, 1, (0, 0)),
        (log_from_one, 1, 2, (1, 2)),
        (log_from_one, 1, 1, (0, 0)),
        (log_from_one, 0, 0, (0, 0)),
        # Log with a compacted prefix (snapshot at 10, term 3).
        (log_from_eleven, 30, 3, (30, 0)),  # unavailable
        (log_from_eleven, 14, 9, (14, 4)),
        (log_from_eleven, 14, 4, (14, 4)),
        (log_from_eleven, 14, 3, (12, 3)),
        (log_from_eleven, 14, 2, (9, 0)),  # walked into the compacted prefix
        (log_from_eleven, 11, 5, (11, 3)),
        (log_from_eleven, 10, 5, (10, 3)),
        (log_from_eleven, 10, 3, (10, 3)),
        (log_from_eleven, 10, 2, (9, 0)),
        (log_from_eleven, 9, 2, (9, 0)),  # compacted
        (log_from_eleven, 4, 2, (4, 0)),  # compacted
        (log_from_eleven, 0, 0, (0, 0)),
    ],
)
def test_find_conflict_by_term(
    layout: Callable[[], RaftLog], index: int, term: int, expected: tuple[int, int]
) -> None:
    assert layout().find_conflict_by_term(index, term) == expected


# -- terms and bounds ------------------------------------------------------------------------


def test_term_bounds_across_storage_and_unstable() -> None:
    offset = 100
    # Entry 100 + i has term i; the first half is durable, the rest unstable.
    log = new_log(
        snapshot=(offset, 1),
        stored=[Entry(term=i, index=offset + i) for i in range(1, 50)],
        unstable=[Entry(term=i, index=offset + i) for i in range(50, 100)],
    )
    assert (log.first_index(), log.last_index()) == (101, 199)
    with pytest.raises(LogCompacted):
        log.term(offset - 1)
    assert log.term(offset) == 1  # the snapshot's term is still known
    assert log.term(offset + 1) == 1
    assert log.term(offset + 49) == 49  # last durable
    assert log.term(offset + 50) == 50  # first unstable
    assert log.term(offset + 99) == 99
    with pytest.raises(LogUnavailable):
        log.term(offset + 100)
    assert log.term_or_zero(offset - 1) == 0
    assert log.term_or_zero(offset + 100) == 0
    assert log.last_term() == 99
    assert log.match_term(offset + 50, 50)
    assert not log.match_term(offset + 50, 49)
    assert not log.match_term(offset + 100, 0)


def test_term_with_unstable_snapshot() -> None:
    # Storage holds a snapshot at 100; a newer one at 105 is waiting in Unstable.
    log = new_log(snapshot=(100, 1))
    log.restore(snapshot_at(105, 5))
    for compacted in (99, 100, 101, 104):
        with pytest.raises(LogCompacted):
            log.term(compacted)
    assert log.term(105) == 5
    with pytest.raises(LogUnavailable):
        log.term(106)
    assert (log.first_index(), log.last_index()) == (106, 105)


@pytest.mark.parametrize(
    ("last_index", "term", "expected"),
    [
        # A greater last term wins whatever the length.
        (2, 4, True),
        (3, 4, True),
        (4, 4, True),
        # A smaller last term loses whatever the length.
        (2, 2, False),
        (3, 2, False),
        (4, 2, False),
        # Equal last terms: the longer (or equally long) log wins.
        (2, 3, False),
        (3, 3, True),
        (4, 3, True),
    ],
)
def test_is_up_to_date(last_index: int, term: int, expected: bool) -> None:
    log = new_log(unstable=PREVIOUS)
    assert log.is_up_to_date(last_index, term) is expected


# -- commit ----------------------------------------------------------------------------------


def test_commit_to_moves_forward_only() -> None:
    log = new_log(unstable=PREVIOUS)
    log.commit_to(2)
    log.commit_to(3)
    assert log.committed == 3
    log.commit_to(1)
    assert log.committed == 3


def test_commit_beyond_last_index_is_an_invariant_violation() -> None:
    log = new_log(unstable=PREVIOUS)
    log.commit_to(2)
    with pytest.raises(InvariantViolation):
        log.commit_to(4)
    assert log.committed == 2


def test_maybe_commit_needs_the_current_term() -> None:
    # Raft §5.4.2: counting replicas only commits an entry of the leader's current term.
    log = new_log(unstable=make_entries(1, 1, 1, 2, 2, 3))
    assert not log.maybe_commit(4, 3)  # entry 4 is from term 2: not by counting
    assert log.committed == 0
    assert log.maybe_commit(5, 3)  # entry 5 is from term 3: commits 1..5 with it
    assert log.committed == 5


def test_maybe_commit_reports_whether_it_moved() -> None:
    log = new_log(unstable=make_entries(1, 1, 2, 3))
    assert log.maybe_commit(3, 3)
    assert not log.maybe_commit(3, 3)  # already committed
    assert not log.maybe_commit(2, 2)  # below the commit index
    assert not log.maybe_commit(5, 3)  # beyond the log: the term is unknown
    assert log.committed == 3


def test_applied_to_bounds() -> None:
    log = new_log(unstable=PREVIOUS)
    log.commit_to(2)
    log.applied_to(1)
    with pytest.raises(InvariantViolation):
        log.applied_to(3)  # beyond committed
    log.applied_to(2)
    with pytest.raises(InvariantViolation):
        log.applied_to(1)  # backwards
    assert log.applied == 2


# -- committed entries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("applied", "committed", "max_size", "expected"),
    [
        (3, 5, NO_LIMIT, [4, 5]),
        (4, 5, NO_LIMIT, [5]),
        (5, 5, NO_LIMIT, []),
        (3, 6, NO_LIMIT, [4, 5, 6]),  # reaches into the unstable tail
        (3, 6, 0, [4]),  # at least one entry
        (3, 6, 10, [4]),
        (3, 6, 19, [4]),
        (3, 6, 20, [4, 5]),
        (3, 6, 30, [4, 5, 6]),
        (4, 6, 20, [5, 6]),  # across the storage/unstable boundary
    ],
)
def test_next_committed_entries(
    applied: int, committed: int, max_size: int, expected: list[int]
) -> None:
    log = new_log(
        snapshot=(3, 1),
        stored=make_entries(4, 1, 1, data=PAYLOAD),
        unstable=make_entries(6, 1, data=PAYLOAD),
        max_applying_size=max_size,
    )
    log.commit_to(committed)
    log.applied_to(applied)
    assert indexes(log.next_committed_entries()) == expected
    assert log.has_next_committed_entries() is bool(expected)


def test_no_committed_entries_while_a_snapshot_is_pending() -> None:
    log = new_log(unstable=make_entries(1, 1, 1))
    log.commit_to(2)
    assert log.has_next_committed_entries()
    log.restore(snapshot_at(10, 2))
    assert log.next_committed_entries() == []
    assert not log.has_next_committed_entries()


# -- slicing ---------------------------------------------------------------------------------

OFFSET = 100
HALF = 150
LAST = 199


def sliced_log() -> RaftLog:
    """Snapshot at 100; entries 101..149 durable, 150..199 unstable; entry i has term i."""
    return new_log(
        snapshot=(OFFSET, OFFSET),
        stored=[Entry(term=i, index=i, data=PAYLOAD) for i in range(OFFSET + 1, HALF)],
        unstable=[Entry(term=i, index=i, data=PAYLOAD) for i in range(HALF, LAST + 1)],
    )


@pytest.mark.parametrize(
    ("low", "high", "max_size", "expected"),
    [
        # etcd-io/raft TestSlice, with 10-byte entries. No limit:
        (HALF - 1, HALF + 1, NO_LIMIT, [HALF - 1, HALF]),
        (HALF, HALF + 1, NO_LIMIT, [HALF]),
        (HALF - 1, HALF, NO_LIMIT, [HALF - 1]),
        (LAST - 1, LAST + 1, NO_LIMIT, [LAST - 1, LAST]),
        (OFFSET + 1, LAST + 1, NO_LIMIT, list(range(OFFSET + 1, LAST + 1))),
        (HALF, HALF, NO_LIMIT, []),
        # With a size limit: at least one entry, never more than fits.
        (HALF - 1, HALF + 1, 0, [HALF - 1]),
        (HALF - 1, HALF + 1, 11, [HALF - 1]),
        (HALF - 2, HALF + 1, 11, [HALF - 2]),
        (HALF - 1, HALF + 1, 20, [HALF - 1, HALF]),
        (HALF - 1, HALF + 2, 30, [HALF - 1, HALF, HALF + 1]),
        (HALF - 1, HALF + 2, 29, [HALF - 1, HALF]),
        (HALF, HALF + 2, 10, [HALF]),
        (HALF, HALF + 2, 20, [HALF, HALF + 1]),
        (HALF - 3, HALF + 3, 35, [HALF - 3, HALF - 2, HALF - 1]),
    ],
)
def test_slice(low: int, high: int, max_size: int, expected: list[int]) -> None:
    result = sliced_log().slice(low, high, max_size)
    assert indexes(result) == expected
    assert all(entry.term == entry.index for entry in result)


@pytest.mark.parametrize(("low", "high"), [(OFFSET - 1, OFFSET + 1), (OFFSET, OFFSET + 1)])
def test_slice_of_compacted_entries_raises(low: int, high: int) -> None:
    with pytest.raises(LogCompacted):
        sliced_log().slice(low, high, NO_LIMIT)


@pytest.mark.parametrize(
    ("low", "high"), [(LAST + 1, LAST + 2), (LAST, LAST + 2), (HALF, HALF - 1)]
)
def test_slice_out_of_bounds_is_an_invariant_violation(low: int, high: int) -> None:
    with pytest.raises(InvariantViolation):
        sliced_log().slice(low, high, NO_LIMIT)


def test_entries_from_an_index() -> None:
    log = sliced_log()
    assert indexes(log.entries(LAST - 1, NO_LIMIT)) == [LAST - 1, LAST]
    assert log.entries(LAST + 1, NO_LIMIT) == []
    assert indexes(log.entries(HALF - 1, 25)) == [HALF - 1, HALF]


# -- snapshots -------------------------------------------------------------------------------


def test_new_log_from_snapshot() -> None:
    log = new_log(snapshot=(1000, 1000))
    assert log.all_entries() == []
    assert (log.first_index(), log.last_index()) == (1001, 1000)
    assert (log.committed, log.applied) == (1000, 1000)
    assert log.unstable.offset == 1001
    assert log.term(1000) == 1000
    assert log.persisted_index() == 1000


def test_restore_replaces_the_log() -> None:
    log = new_log(stored=make_entries(1, 1, 1, 1), unstable=make_entries(4, 2, 2))
    log.commit_to(2)
    snapshot = snapshot_at(10, 3)
    log.restore(snapshot)
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 3
    assert log.unstable_entries() == []
    assert log.has_pending_snapshot()
    assert log.snapshot() is snapshot
    # Nothing of the new log is durable until the snapshot is.
    assert log.persisted_index() == 0
    # Entries may follow the snapshot.
    log.append(make_entries(11, 3, 4))
    assert (log.last_index(), log.last_term()) == (12, 4)
    # Once persisted, the snapshot leaves the unstable part.
    log.stable_snapshot_to(9)
    assert log.has_pending_snapshot()
    log.stable_snapshot_to(10)
    assert not log.has_pending_snapshot()


# -- stable_to and persisted_index -----------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "term", "expected_offset"),
    [
        (1, 1, 2),
        (2, 2, 3),
        (2, 1, 1),  # the entry at 2 has another term: it was replaced, ignore
        (3, 1, 1),  # beyond the log: ignore
    ],
)
def test_stable_to(index: int, term: int, expected_offset: int) -> None:
    log = new_log(unstable=make_entries(1, 1, 2))
    log.stable_to(index, term)
    assert log.unstable.offset == expected_offset
    assert indexes(log.unstable_entries()) == list(range(expected_offset, 3))


@pytest.mark.parametrize(
    ("index", "term", "expected_offset"),
    [
        (5, 2, 6),  # the snapshot's own index is durable already: ignore
        (5, 3, 6),
        (6, 2, 7),
        (6, 3, 6),  # wrong term: ignore
        (4, 1, 6),  # compacted: ignore
        (7, 2, 6),  # beyond the log: ignore
    ],
)
def test_stable_to_after_snapshot(index: int, term: int, expected_offset: int) -> None:
    log = new_log(snapshot=(5, 2), unstable=make_entries(6, 2))
    log.stable_to(index, term)
    assert log.unstable.offset == expected_offset


def test_persisted_index_follows_storage_and_truncation() -> None:
    storage = MemoryStorage()
    storage.append(make_entries(1, 1, 1, 1))
    log = RaftLog(storage, NO_LIMIT)
    assert log.persisted_index() == 3
    log.append(make_entries(4, 1, 1))
    assert log.persisted_index() == 3  # 4 and 5 are not durable yet
    storage.append(log.unstable_entries())
    log.stable_to(5, 1)
    assert log.persisted_index() == 5
    # A conflicting append at 3 makes the durable 3..5 stale.
    log.append(make_entries(3, 2))
    assert log.persisted_index() == 2
    assert log.last_index() == 3
    storage.append(log.unstable_entries())
    log.stable_to(3, 2)
    assert log.persisted_index() == 3


# -- Unstable --------------------------------------------------------------------------------

SNAP_4 = snapshot_at(4, 1)


@pytest.mark.parametrize(
    ("unstable", "expected"),
    [
        (Unstable(offset=5, entries=make_entries(5, 1)), None),
        (Unstable(offset=0), None),
        (Unstable(offset=5, entries=make_entries(5, 1), snapshot=SNAP_4), 5),
        (Unstable(offset=5, snapshot=SNAP_4), 5),
    ],
)
def test_unstable_maybe_first_index(unstable: Unstable, expected: int | None) -> None:
    assert unstable.maybe_first_index() == expected


@pytest.mark.parametrize(
    ("unstable", "expected"),
    [
        (Unstable(offset=5, entries=make_entries(5, 1)), 5),
        (Unstable(offset=5, entries=make_entries(5, 1), snapshot=SNAP_4), 5),
        (Unstable(offset=5, snapshot=SNAP_4), 4),
        (Unstable(offset=0), None),
    ],
)
def test_unstable_maybe_last_index(unstable: Unstable, expected: int | None) -> None:
    assert unstable.maybe_last_index() == expected


@pytest.mark.parametrize(
    ("unstable", "index", "expected"),
    [
        # From entries.
        (Unstable(offset=5, entries=make_entries(5, 1)), 5, 1),
        (Unstable(offset=5, entries=make_entries(5, 1)), 6, None),
        (Unstable(offset=5, entries=make_entries(5, 1)), 4, None),
        (Unstable(offset=5, entries=make_entries(5, 1), snapshot=SNAP_4), 5, 1),
        (Unstable(offset=5, entries=make_entries(5, 1), snapshot=SNAP_4), 6, None),
        # From the snapshot.
        (Unstable(offset=5, entries=make_entries(5, 1), snapshot=SNAP_4), 4, 1),
        (Unstable(offset=5, entries=make_entries(5, 1), snapshot=SNAP_4), 3, None),
        (Unstable(offset=5, snapshot=SNAP_4), 5, None),
        (Unstable(offset=5, snapshot=SNAP_4), 4, 1),
        (Unstable(offset=0), 5, None),
    ],
)
def test_unstable_maybe_term(unstable: Unstable, index: int, expected: int | None) -> None:
    assert unstable.maybe_term(index) == expected


def test_unstable_restore() -> None:
    unstable = Unstable(offset=5, entries=make_entries(5, 1), snapshot=SNAP_4)
    snapshot = snapshot_at(6, 2)
    unstable.restore(snapshot)
    assert (unstable.offset, unstable.entries, unstable.snapshot) == (7, [], snapshot)


@pytest.mark.parametrize(
    ("entries", "offset", "snapshot", "index", "term", "expected_offset", "expected_count"),
    [
        # etcd-io/raft TestUnstableStableTo.
        ([], 0, None, 5, 1, 0, 0),
        (make_entries(5, 1), 5, None, 5, 1, 6, 0),
        (make_entries(5, 1, 1), 5, None, 5, 1, 6, 1),
        (make_entries(6, 2), 6, None, 6, 1, 6, 1),  # term mismatch
        (make_entries(5, 1), 5, None, 4, 1, 5, 1),  # an old entry
        (make_entries(5, 1), 5, None, 4, 2, 5, 1),
        # With a snapshot.
        (make_entries(5, 1), 5, SNAP_4, 5, 1, 6, 0),
        (make_entries(5, 1, 1), 5, SNAP_4, 5, 1, 6, 1),
        (make_entries(6, 2), 6, snapshot_at(5, 1), 6, 1, 6, 1),  # term mismatch
        (make_entries(5, 1), 5, SNAP_4, 4, 1, 5, 1),  # the snapshot's index
        (make_entries(5, 2), 5, snapshot_at(4, 2), 4, 1, 5, 1),  # an old entry
    ],
)
def test_unstable_stable_to(
    *,
    entries: list[Entry],
    offset: int,
    snapshot: Snapshot | None,
    index: int,
    term: int,
    expected_offset: int,
    expected_count: int,
) -> None:
    unstable = Unstable(offset=offset, entries=list(entries), snapshot=snapshot)
    unstable.stable_to(index, term)
    assert (unstable.offset, len(unstable.entries)) == (expected_offset, expected_count)
    assert unstable.snapshot is snapshot  # stable_to never drops the snapshot


def test_unstable_stable_snapshot_to() -> None:
    unstable = Unstable(offset=5, snapshot=SNAP_4)
    unstable.stable_snapshot_to(3)
    assert unstable.snapshot is SNAP_4
    unstable.stable_snapshot_to(4)
    assert unstable.snapshot is None


@pytest.mark.parametrize(
    ("entries", "offset", "appended", "expected_offset", "expected"),
    [
        # Append to the end.
        (make_entries(5, 1), 5, make_entries(6, 1, 1), 5, make_entries(5, 1, 1, 1)),
        # Replace all the unstable entries.
        (make_entries(5, 1), 5, make_entries(5, 2, 2), 5, make_entries(5, 2, 2)),
        (make_entries(5, 1), 5, make_entries(4, 2, 2, 2), 4, make_entries(4, 2, 2, 2)),
        # Truncate the existing entries, then append.
        (make_entries(5, 1, 1, 1), 5, make_entries(6, 2), 5, make_entries(5, 1, 2)),
        (make_entries(5, 1, 1, 1), 5, make_entries(7, 2, 2), 5, make_entries(5, 1, 1, 2, 2)),
    ],
)
def test_unstable_truncate_and_append(
    entries: list[Entry],
    offset: int,
    appended: list[Entry],
    expected_offset: int,
    expected: list[Entry],
) -> None:
    unstable = Unstable(offset=offset, entries=list(entries))
    unstable.truncate_and_append(appended)
    assert (unstable.offset, unstable.entries) == (expected_offset, expected)


def test_unstable_slice_bounds() -> None:
    unstable = Unstable(offset=5, entries=make_entries(5, 1, 2, 3))
    assert unstable.slice(5, 8) == make_entries(5, 1, 2, 3)
    assert unstable.slice(6, 7) == make_entries(6, 2)
    assert unstable.slice(8, 8) == []
    for low, high in ((4, 6), (5, 9), (7, 6)):
        with pytest.raises(InvariantViolation):
            unstable.slice(low, high)
