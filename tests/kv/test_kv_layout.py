"""The key encoding (escaping keeps byte order and is prefix-free, a prefix's successor)
and StagedWrites (reads through staged writes, savepoints)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.kv.layout import (
    HISTORY_PREFIX,
    INDEX_PREFIX,
    LEASE_PREFIX,
    REVISION_PREFIX,
    SESSION_AGE_PREFIX,
    SESSION_PREFIX,
    escape,
    history_key,
    prefix_successor,
    split_history_key,
    unescape,
)
from raftkv.kv.staging import StagedWrites
from raftkv.raft.storage.base import AppBatch
from raftkv.raft.storage.memory import MemoryAppData

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)
KEYS = st.lists(st.sampled_from([0x00, 0x01, 0x02, 0xFE, 0xFF]), max_size=5).map(bytes)


@PROPERTY
@given(KEYS, KEYS)
def test_escaping_preserves_order_and_no_escaped_key_prefixes_another(
    one: bytes, other: bytes
) -> None:
    assert (escape(one) < escape(other)) == (one < other)
    if one != other:
        assert not escape(other).startswith(escape(one))
    assert unescape(escape(one)) == one


@PROPERTY
@given(KEYS, st.integers(0, (1 << 63) - 1))
def test_a_history_key_splits_back(key: bytes, revision: int) -> None:
    assert split_history_key(history_key(escape(key), revision)) == (escape(key), revision)


@PROPERTY
@given(KEYS.filter(lambda prefix: prefix.rstrip(b"\xff") != b""), KEYS)
def test_a_prefix_successor_follows_exactly_the_keys_starting_with_the_prefix(
    prefix: bytes, key: bytes
) -> None:
    assert (prefix <= key < prefix_successor(prefix)) == key.startswith(prefix)


def test_every_space_has_a_successor_and_a_prefix_of_0xff_bytes_has_none() -> None:
    for space in (
        HISTORY_PREFIX,
        INDEX_PREFIX,
        REVISION_PREFIX,
        SESSION_PREFIX,
        SESSION_AGE_PREFIX,
        LEASE_PREFIX,
    ):
        assert prefix_successor(space) == bytes([space[0] + 1])
    # Unlike the API's prefix_end (b"\0": to the end of the user's key space), a stored
    # key space has no sentinel: b"\0" would be a real key, the first, and a scan up to
    # it would read nothing.
    with pytest.raises(ValueError, match="no key follows"):
        prefix_successor(b"\xff\xff")


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.binary(max_size=2)),
        st.tuples(st.just("delete"), KEYS, st.just(b"")),
        st.tuples(st.just("savepoint"), st.just(b""), st.just(b"")),
        st.tuples(st.just("rollback"), st.just(b""), st.just(b"")),
    ),
    max_size=30,
)


@PROPERTY
@given(st.dictionaries(KEYS, st.binary(max_size=2), max_size=8), OPERATIONS, KEYS, KEYS)
def test_staged_writes_read_like_the_committed_result(
    committed: dict[bytes, bytes],
    operations: list[tuple[str, bytes, bytes]],
    start: bytes,
    end: bytes,
) -> None:
    app = MemoryAppData()
    app.commit(AppBatch(puts=list(committed.items())), 1, 1)
    staged = StagedWrites(app)
    model = dict(committed)
    savepoints: list[tuple[int, dict[bytes, bytes]]] = []
    for operation, key, value in operations:
        if operation == "put":
            staged.put(key, value)
            model[key] = value
        elif operation == "delete":
            staged.delete(key)
            model.pop(key, None)
        elif operation == "savepoint":
            savepoints.append((staged.savepoint(), dict(model)))
        elif savepoints:
            savepoint, model = savepoints.pop()
            staged.rollback(savepoint)
        for probe in (key, start, end):
            assert staged.get(probe) == model.get(probe)
        expected = sorted((key, value) for key, value in model.items() if start <= key < end)
        assert list(staged.scan(start, end)) == expected
    staged.commit(2, 1)
    assert list(app.scan()) == sorted(model.items())
    assert app.applied() == (2, 1)


def test_scans_between_many_staged_writes_do_not_sort_the_batch_again() -> None:
    """A compaction scans after each key's deletes; the staged keys are kept sorted as they
    come, so 20,000 such scans stay linear (they took seconds when each scan sorted)."""
    app = MemoryAppData()
    staged = StagedWrites(app)
    for index in range(20_000):
        key = b"k%08d" % ((index * 7919) % 20_000)
        assert list(staged.scan(key, key + b"\x00")) == []
        staged.put(key, b"v")
    assert [key for space in staged._spaces for key in staged._sorted_keys[space]] == sorted(
        staged._pending
    )


def test_writes_interleaving_key_spaces_stay_sorted_per_space_and_in_order() -> None:
    """A delete of n keys writes an index key, then a history key, per key: each space in
    key order, the spaces interleaved. Each space keeps its own sorted list, so each write
    lands at the end of its list (a single list would move the other space's keys every
    time: half a second for 48,000 keys), and scans see every space's keys in order. (The
    lists are kept from a batch's first scan on, as a compaction scans before it writes.)"""
    app = MemoryAppData()
    app.commit(AppBatch(puts=[(b"h-committed", b"c"), (b"k-committed", b"c")]), 1, 1)
    staged = StagedWrites(app)
    staged.put(b"m-first", b"v")
    assert [key for key, _ in staged.scan(b"m", b"n")] == [b"m-first"]
    for index in range(20_000):
        staged.put(b"k%08d" % index, b"index")
        staged.put(b"h%08d" % index, b"history")
    staged.put(b"", b"the empty key")
    staged.put(b"a%08d" % 3, b"out of order")
    staged.put(b"a%08d" % 1, b"out of order")
    keys = [key for space in staged._spaces for key in staged._sorted_keys[space]]
    assert keys == sorted(staged._pending)
    scanned = [key for key, _ in staged.scan(b"", b"\xff")]
    assert scanned == sorted([*staged._pending, b"h-committed", b"k-committed"])
    assert [key for key, _ in staged.scan(b"h00000010", b"h00000013")] == [
        b"h00000010",
        b"h00000011",
        b"h00000012",
    ]
    savepoint = staged.savepoint()
    staged.put(b"z-late", b"v")
    staged.rollback(savepoint)
    assert [key for key, _ in staged.scan(b"z", b"\xff")] == []


def test_a_batch_that_never_scans_keeps_no_order_and_its_first_scan_sees_every_write() -> None:
    """Most batches (puts) never scan, so staging keeps no sorted lists until a scan asks
    for them; that scan, and every later one, sees the staged writes in key order over the
    committed data, rolled-back writes gone, before and after it."""
    app = MemoryAppData()
    app.commit(AppBatch(puts=[(b"b", b"committed"), (b"d", b"committed")]), 1, 1)
    staged = StagedWrites(app)
    for key in (b"e", b"a", b"c"):
        staged.put(key, b"staged")
    savepoint = staged.savepoint()
    staged.put(b"f", b"rolled back")
    staged.delete(b"b")
    staged.rollback(savepoint)
    assert staged._sorted_keys is None
    assert [key for key, _ in staged.scan(b"", b"z")] == [b"a", b"b", b"c", b"d", b"e"]
    savepoint = staged.savepoint()
    staged.put(b"0", b"staged after the scan")
    staged.delete(b"d")
    assert [key for key, _ in staged.scan(b"", b"z")] == [b"0", b"a", b"b", b"c", b"e"]
    staged.rollback(savepoint)
    assert [key for key, _ in staged.scan(b"", b"z")] == [b"a", b"b", b"c", b"d", b"e"]
    staged.commit(2, 1)
    assert staged._sorted_keys is None
    assert [key for key, _ in app.scan(b"", b"z")] == [b"a", b"b", b"c", b"d", b"e"]
