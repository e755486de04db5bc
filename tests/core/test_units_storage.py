"""`MemoryStorage` (`raftkv.raft.storage.memory`), modelled on etcd-io/raft's `storage_test.go`.

The storage starts from a snapshot at index 3, term 3 (the dummy entry) followed by entries
4 and 5 of terms 4 and 5, like etcd's `ents := index(3).terms(3, 4, 5)`.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.errors import (
    InvalidArgument,
    InvariantViolation,
    LogCompacted,
    LogUnavailable,
    SnapshotOutOfDate,
)
from raftkv.raft.core.types import (
    ConfState,
    Entry,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.storage.memory import MemoryStorage

PAYLOAD = b"0123456789"
CONF_STATE = ConfState(voters=frozenset({NodeId(1), NodeId(2), NodeId(3)}))


def make_entries(first_index: int, *terms: int, data: bytes = b"") -> list[Entry]:
    return [Entry(term=term, index=first_index + i, data=data) for i, term in enumerate(terms)]


def make_storage(
    snapshot_index: int = 3, terms: tuple[int, ...] = (4, 5), data: bytes = b""
) -> MemoryStorage:
    """A snapshot at `snapshot_index` (its term equals its index), then `terms`."""
    storage = MemoryStorage()
    if snapshot_index > 0:
        storage.apply_snapshot(
            Snapshot(SnapshotMetadata(snapshot_index, snapshot_index, CONF_STATE))
        )
    storage.append(make_entries(snapshot_index + 1, *terms, data=data))
    return storage


def stored(storage: MemoryStorage) -> list[tuple[int, int]]:
    """(index, term) of the dummy entry and every stored entry."""
    first = storage.first_index()
    entries = storage.entries(first, storage.last_index() + 1, NO_LIMIT)
    return [(first - 1, storage.term(first - 1))] + [(e.index, e.term) for e in entries]


def storage_state(storage: MemoryStorage) -> tuple[object, ...]:
    return (stored(storage), storage.snapshot(), storage.hard_state)


# -- reads -----------------------------------------------------------------------------------


def test_empty_storage() -> None:
    storage = MemoryStorage()
    assert (storage.first_index(), storage.last_index()) == (1, 0)
    assert storage.term(0) == 0
    assert storage.snapshot().is_empty()
    assert storage.initial_state() == (HardState(), ConfState())
    assert storage.entries(1, 1, NO_LIMIT) == []


@pytest.mark.parametrize(
    ("index", "expected"),
    [(2, LogCompacted), (3, 3), (4, 4), (5, 5), (6, LogUnavailable)],
)
def test_term(index: int, expected: int | type[Exception]) -> None:
    storage = make_storage()
    if isinstance(expected, int):
        assert storage.term(index) == expected
    else:
        with pytest.raises(expected):
            storage.term(index)


@pytest.mark.parametrize(
    ("low", "high", "max_size", "expected"),
    [
        # etcd-io/raft TestStorageEntries, with 10-byte entries 4, 5 and 6.
        (4, 5, NO_LIMIT, [4]),
        (4, 6, NO_LIMIT, [4, 5]),
        (4, 7, NO_LIMIT, [4, 5, 6]),
        (4, 4, NO_LIMIT, []),
        (4, 7, 0, [4]),  # at least one entry, even with no budget
        (4, 7, 20, [4, 5]),
        (4, 7, 25, [4, 5]),
        (4, 7, 29, [4, 5]),
        (4, 7, 30, [4, 5, 6]),
        (5, 7, 10, [5]),
    ],
)
def test_entries(low: int, high: int, max_size: int, expected: list[int]) -> None:
    storage = make_storage(terms=(4, 5, 6), data=PAYLOAD)
    result = storage.entries(low, high, max_size)
    assert [entry.index for entry in result] == expected
    assert all(entry.term == entry.index and entry.data == PAYLOAD for entry in result)


@pytest.mark.parametrize(
    ("low", "high", "error"),
    [
        (2, 6, LogCompacted),
        (3, 4, LogCompacted),  # the dummy entry is not an entry
        (4, 8, LogUnavailable),
        (6, 5, InvalidArgument),
    ],
)
def test_entries_out_of_bounds(low: int, high: int, error: type[Exception]) -> None:
    storage = make_storage(terms=(4, 5, 6))
    with pytest.raises(error):
        storage.entries(low, high, NO_LIMIT)


def test_first_and_last_index() -> None:
    storage = make_storage()
    assert (storage.first_index(), storage.last_index()) == (4, 5)
    storage.append(make_entries(6, 5))
    assert (storage.first_index(), storage.last_index()) == (4, 6)
    storage.compact(4)
    assert (storage.first_index(), storage.last_index()) == (5, 6)


# -- compaction and snapshots ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("compact_index", "error", "expected"),
    [
        (2, LogCompacted, [(3, 3), (4, 4), (5, 5)]),
        (3, LogCompacted, [(3, 3), (4, 4), (5, 5)]),
        (4, None, [(4, 4), (5, 5)]),
        (5, None, [(5, 5)]),
        (6, LogUnavailable, [(3, 3), (4, 4), (5, 5)]),
    ],
)
def test_compact(
    compact_index: int, error: type[Exception] | None, expected: list[tuple[int, int]]
) -> None:
    storage = make_storage()
    if error is None:
        storage.compact(compact_index)
    else:
        with pytest.raises(error):
            storage.compact(compact_index)
    assert stored(storage) == expected
    # Compaction keeps the term of the new dummy entry but does not take a snapshot.
    assert storage.snapshot().metadata.index == 3


@pytest.mark.parametrize("index", [4, 5])
def test_create_snapshot(index: int) -> None:
    storage = make_storage()
    snapshot = storage.create_snapshot(index, CONF_STATE, b"data")
    assert snapshot == Snapshot(SnapshotMetadata(index, index, CONF_STATE), b"data")
    assert storage.snapshot() == snapshot
    # Creating a snapshot does not compact.
    assert (storage.first_index(), storage.last_index()) == (4, 5)


def test_create_snapshot_keeps_conf_state_when_none_given() -> None:
    storage = make_storage()
    snapshot = storage.create_snapshot(5, None, b"")
    assert snapshot.metadata.conf_state == CONF_STATE


@pytest.mark.parametrize(("index", "error"), [(3, SnapshotOutOfDate), (6, LogUnavailable)])
def test_create_snapshot_out_of_range(index: int, error: type[Exception]) -> None:
    storage = make_storage()
    before = storage_state(storage)
    with pytest.raises(error):
        storage.create_snapshot(index, CONF_STATE, b"")
    assert storage_state(storage) == before


def test_create_snapshot_below_compacted_index_raises() -> None:
    # Compacted past the last snapshot (3): entry 4's term is gone, so a snapshot at 4
    # cannot be described. Returning one with a guessed term would be a corrupt snapshot.
    storage = make_storage(terms=(4, 5, 6, 7))
    storage.compact(6)
    before = storage_state(storage)
    with pytest.raises(LogCompacted):
        storage.create_snapshot(4, CONF_STATE, b"")
    assert storage_state(storage) == before


def test_create_snapshot_at_compacted_index_uses_kept_term() -> None:
    storage = make_storage(terms=(4, 5, 6, 7))
    storage.compact(6)
    assert storage.create_snapshot(6, None, b"").metadata.term == 6


def test_apply_snapshot_replaces_the_log() -> None:
    storage = make_storage()
    newer = Snapshot(SnapshotMetadata(10, 7, CONF_STATE), b"image")
    storage.apply_snapshot(newer)
    assert storage.snapshot() == newer
    assert (storage.first_index(), storage.last_index()) == (11, 10)
    assert storage.term(10) == 7
    assert storage.initial_state()[1] == CONF_STATE
    with pytest.raises(LogCompacted):
        storage.term(5)


@pytest.mark.parametrize("index", [2, 3])
def test_apply_snapshot_out_of_date(index: int) -> None:
    storage = make_storage()
    before = storage_state(storage)
    with pytest.raises(SnapshotOutOfDate):
        storage.apply_snapshot(Snapshot(SnapshotMetadata(index, index, CONF_STATE)))
    assert storage_state(storage) == before


def test_hard_state_round_trip() -> None:
    storage = make_storage()
    hard_state = HardState(term=5, vote=NodeId(2), commit=4)
    storage.set_hard_state(hard_state)
    assert storage.initial_state() == (hard_state, CONF_STATE)


# -- append ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("appended", "expected"),
    [
        # etcd-io/raft TestStorageAppend (dummy (3, 3) listed first).
        (make_entries(1, 1, 2), [(3, 3), (4, 4), (5, 5)]),  # all compacted: no-op
        (make_entries(3, 3, 4, 5), [(3, 3), (4, 4), (5, 5)]),
        (make_entries(3, 3, 6, 6), [(3, 3), (4, 6), (5, 6)]),
        (make_entries(3, 3, 4, 5, 5), [(3, 3), (4, 4), (5, 5), (6, 5)]),
        # Skip the compacted prefix, truncate the conflicting suffix, append.
        (make_entries(2, 3, 3, 5), [(3, 3), (4, 5)]),
        # Truncate the existing entries, append.
        (make_entries(4, 5), [(3, 3), (4, 5)]),
        # Direct append.
        (make_entries(6, 5), [(3, 3), (4, 4), (5, 5), (6, 5)]),
        # Nothing.
        ([], [(3, 3), (4, 4), (5, 5)]),
    ],
)
def test_append(appended: list[Entry], expected: list[tuple[int, int]]) -> None:
    storage = make_storage()
    storage.append(appended)
    assert stored(storage) == expected


def test_append_accepts_a_tuple() -> None:
    storage = make_storage()
    storage.append(tuple(make_entries(5, 9, 9)))
    assert stored(storage) == [(3, 3), (4, 4), (5, 9), (6, 9)]


@pytest.mark.parametrize("first_index", [7, 100])
def test_append_with_a_gap_is_an_invariant_violation(first_index: int) -> None:
    storage = make_storage()
    before = storage_state(storage)
    with pytest.raises(InvariantViolation):
        storage.append(make_entries(first_index, 5))
    assert storage_state(storage) == before


# -- properties ------------------------------------------------------------------------------

append_ops = st.tuples(
    st.just("append"),
    st.integers(min_value=-4, max_value=2),  # start relative to last_index + 1
    st.lists(st.integers(min_value=1, max_value=9), max_size=5),
)
compact_ops: st.SearchStrategy[tuple[str, int, list[int]]] = st.tuples(
    st.just("compact"), st.integers(min_value=0, max_value=6), st.just([])
)


@given(operations=st.lists(st.one_of(append_ops, append_ops, compact_ops), max_size=25))
def test_appends_keep_indices_consecutive(
    operations: list[tuple[str, int, list[int]]],
) -> None:
    storage = make_storage()
    # Model: the dummy (index, term) and the terms of the entries after it.
    dummy_index, dummy_term = 3, 3
    terms = [4, 5]
    for kind, position, new_terms in operations:
        last = dummy_index + len(terms)
        if kind == "compact":
            target = dummy_index + position
            if dummy_index < target <= last:
                storage.compact(target)
                dummy_term = terms[target - dummy_index - 1]
                terms = terms[target - dummy_index :]
                dummy_index = target
            continue
        start = last + 1 + position
        appended = make_entries(start, *new_terms)
        if new_terms and start > last + 1:
            with pytest.raises(InvariantViolation):
                storage.append(appended)
        else:
            storage.append(appended)
            for entry in appended:
                if entry.index > dummy_index:
                    del terms[entry.index - dummy_index - 1 :]
                    terms.append(entry.term)

        assert storage.first_index() == dummy_index + 1
        assert storage.last_index() == dummy_index + len(terms)
        assert storage.term(dummy_index) == dummy_term
        entries = storage.entries(storage.first_index(), storage.last_index() + 1, NO_LIMIT)
        assert [entry.index for entry in entries] == list(
            range(storage.first_index(), storage.last_index() + 1)
        )
        assert [entry.term for entry in entries] == terms
        with pytest.raises(LogUnavailable):
            storage.term(storage.last_index() + 1)
        with pytest.raises(LogCompacted):
            storage.term(dummy_index - 1)
