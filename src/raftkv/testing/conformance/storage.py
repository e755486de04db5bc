"""check_raft_storage: the behaviour every `RaftStorage` must have, as a reusable suite.

Anyone writing a storage runs it with a factory for theirs:

    class MyFactory:
        durable = True

        def __init__(self, directory: Path) -> None:
            self._directory, self._created = directory, 0

        def create(self) -> RaftStorage:
            self._created += 1
            return MyStorage(self._directory / f"db{self._created}")

        def reopen(self, storage: RaftStorage) -> RaftStorage:
            storage.close()
            return MyStorage(storage.path)

    def test_my_storage_conforms(tmp_path: Path) -> None:
        check_raft_storage(MyFactory(tmp_path))

The reference semantics are MemoryStorage's and the read contract of
`raftkv.raft.core.storage`. What it checks, each on a fresh storage:
- an empty storage: first index 1, last index 0, term(0) 0, empty hard state, membership
  and snapshot, no application data;
- append and read back: entries of both kinds with binary data, in several batches; term,
  first and last index; `entries` bounds (LogCompacted, LogUnavailable, InvalidArgument)
  and `max_size` (at least one entry, then whole entries within the budget);
- a conflicting suffix is truncated, even when the new entries are shorter; entries at or
  below the compacted index are skipped; a gap raises InvariantViolation;
- the hard state round-trips and is kept when a persist carries none;
- installing a snapshot discards the whole log and sets the first index; an older one
  raises SnapshotOutOfDate; a snapshot and entries after it persist together;
- create_snapshot (a multi-megabyte one included) and compact, with term(compact index)
  still readable, and the errors both raise;
- a call that raises changes nothing;
- application data: commit (delete ranges, then deletes, then puts), get, scan with
  bounds, empty keys and values, binary keys, thousands of keys, a scan interleaved with
  writes, replace_all, applied();
- close: later calls raise StorageClosed; a second close is harmless.
For a durable factory, every check also reopens the storage and expects exactly the same
state, then keeps writing to it.

Compacting beyond the latest snapshot is left to the implementation (MemoryStorage allows
it; RocksStorage refuses it, see its `compact`), so it is not checked.

A failure raises AssertionError naming the check and what was expected; an unexpected
exception from the storage is reported the same way. Checks raise explicitly rather than
with `assert`, so they also run under `python -O`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from random import Random
from typing import Protocol

from raftkv.raft.core.config import NO_LIMIT
from raftkv.raft.core.errors import (
    InvalidArgument,
    InvariantViolation,
    LogCompacted,
    LogUnavailable,
    SnapshotOutOfDate,
)
from raftkv.raft.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.storage.base import AppBatch, AppData, RaftStorage, StorageClosed

__all__ = ["StorageFactory", "check_raft_storage"]


class StorageFactory(Protocol):
    # Whether `reopen` reads the data back from durable storage: if so, every check also
    # compares the state before and after a reopen.
    durable: bool

    def create(self) -> RaftStorage:
        """A new, empty storage, independent of every other one created."""
        ...

    def reopen(self, storage: RaftStorage) -> RaftStorage:
        """Close `storage` and open its data again. Called only when `durable`."""
        ...


def check_raft_storage(factory: StorageFactory) -> None:
    """Run every check against storages made by `factory`; raise AssertionError on the
    first failure."""
    for check in _CHECKS:
        name = check.__name__.removeprefix("_check_").replace("_", " ")
        try:
            check(factory)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error
        except Exception as error:
            raise AssertionError(f"{name}: unexpected {type(error).__name__}: {error}") from error


# -- helpers ---------------------------------------------------------------------------------

_CONF_STATE = ConfState(voters=frozenset({NodeId(1), NodeId(2), NodeId(3)}))
_JOINT_CONF_STATE = ConfState(
    voters=frozenset({NodeId(1), NodeId(2), NodeId(4)}),
    learners=frozenset({NodeId(5)}),
    voters_outgoing=frozenset({NodeId(1), NodeId(2), NodeId(3)}),
    learners_next=frozenset({NodeId(3)}),
    auto_leave=True,
)
_PAYLOAD = b"0123456789"


def _entries(first_index: int, *terms: int, data: bytes = _PAYLOAD) -> list[Entry]:
    return [Entry(term=term, index=first_index + i, data=data) for i, term in enumerate(terms)]


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _expect_equal(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def _expect_raises(
    error: type[Exception], what: str, call: Callable[..., object], *args: object
) -> None:
    try:
        result = call(*args)
    except error:
        return
    except Exception as other:
        raise AssertionError(
            f"{what}: expected {error.__name__}, got {type(other).__name__}: {other}"
        ) from other
    raise AssertionError(f"{what}: expected {error.__name__}, returned {result!r}")


def _app_state(app: AppData) -> tuple[tuple[int, int], list[tuple[bytes, bytes]]]:
    return app.applied(), list(app.scan())


def _observe(storage: RaftStorage) -> dict[str, object]:
    """Everything a reader can see, by name."""
    first, last = storage.first_index(), storage.last_index()
    hard_state, conf_state = storage.initial_state()
    return {
        "first_index": first,
        "last_index": last,
        "term of first_index - 1": storage.term(first - 1),
        "entries": storage.entries(first, last + 1, NO_LIMIT),
        "hard_state": hard_state,
        "conf_state": conf_state,
        "snapshot": storage.snapshot(),
        "app_data": _app_state(storage.app_data()),
    }


def _expect_state(storage: RaftStorage, expected: dict[str, object], when: str) -> None:
    actual = _observe(storage)
    for name, value in expected.items():
        _expect_equal(actual[name], value, f"{name} {when}")


def _expect_log(storage: RaftStorage, first_index: int, terms: list[int], what: str) -> None:
    """The log holds `terms` from `first_index` on, and nothing else."""
    last_index = first_index + len(terms) - 1
    _expect_equal(storage.first_index(), first_index, f"first_index() {what}")
    _expect_equal(storage.last_index(), last_index, f"last_index() {what}")
    entries = storage.entries(first_index, last_index + 1, NO_LIMIT)
    _expect_equal(
        [(entry.index, entry.term) for entry in entries],
        [(first_index + offset, term) for offset, term in enumerate(terms)],
        f"(index, term) of the entries {what}",
    )
    for offset, term in enumerate(terms):
        _expect_equal(storage.term(first_index + offset), term, f"term({first_index + offset})")
    _expect_raises(LogUnavailable, f"term(last + 1) {what}", storage.term, last_index + 1)


class _Session:
    """One storage under test, reopened through the factory when it is durable."""

    def __init__(self, factory: StorageFactory) -> None:
        self.factory = factory
        self.storage = factory.create()

    def reopen(self, when: str) -> None:
        """Reopen (durable factories only) and expect exactly the state before."""
        if not self.factory.durable:
            return
        before = _observe(self.storage)
        self.storage = self.factory.reopen(self.storage)
        _expect_state(self.storage, before, f"after reopening ({when})")

    def unchanged_by(
        self, error: type[Exception], what: str, call: Callable[..., object], *args: object
    ) -> None:
        """`call` raises `error` and changes nothing."""
        before = _observe(self.storage)
        _expect_raises(error, what, call, *args)
        _expect_state(self.storage, before, f"after {what} raised")


@contextmanager
def _session(factory: StorageFactory) -> Iterator[_Session]:
    session = _Session(factory)
    try:
        yield session
    finally:
        session.storage.close()


# -- checks ----------------------------------------------------------------------------------


def _check_empty_storage(factory: StorageFactory) -> None:
    def expect_empty(storage: RaftStorage, when: str) -> None:
        _expect_equal(storage.first_index(), 1, f"first_index() {when}")
        _expect_equal(storage.last_index(), 0, f"last_index() {when}")
        _expect_equal(storage.term(0), 0, f"term(0) {when}")
        _expect_equal(storage.initial_state(), (HardState(), ConfState()), "initial_state()")
        _expect_equal(storage.snapshot(), Snapshot(), f"snapshot() {when}")
        _expect_equal(storage.entries(1, 1, NO_LIMIT), [], f"entries(1, 1) {when}")
        _expect_raises(LogUnavailable, f"term(1) {when}", storage.term, 1)
        _expect_raises(LogUnavailable, f"entries(1, 2) {when}", storage.entries, 1, 2, NO_LIMIT)
        app = storage.app_data()
        _expect_equal(app.applied(), (0, 0), f"app_data().applied() {when}")
        _expect_equal(app.get(b"key"), None, f"app_data().get() {when}")
        _expect_equal(list(app.scan()), [], f"app_data().scan() {when}")

    with _session(factory) as session:
        expect_empty(session.storage, "when new")
        session.reopen("empty")
        expect_empty(session.storage, "after reopening")


def _check_append_and_read(factory: StorageFactory) -> None:
    conf_change = ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_NODE, NodeId(4)),))
    entries = [
        Entry(term=1, index=1),
        Entry(term=1, index=2, kind=EntryKind.CONF_CHANGE, data=conf_change.encode()),
        Entry(term=2, index=3, data=bytes(range(256))),
        Entry(term=2, index=4, data=b"\x00" * 1000),
        Entry(term=3, index=5, data=b"five"),
    ]
    with _session(factory) as session:
        storage = session.storage
        storage.persist(None, entries[:2], None, sync=True)
        storage.persist(None, tuple(entries[2:]), None, sync=False)
        _expect_log(storage, 1, [1, 1, 2, 2, 3], "after appending in two batches")
        _expect_equal(storage.entries(1, 6, NO_LIMIT), entries, "entries(1, 6)")
        _expect_equal(storage.entries(2, 4, NO_LIMIT), entries[1:3], "entries(2, 4)")
        _expect_equal(storage.entries(5, 6, NO_LIMIT), entries[4:], "entries(5, 6)")
        _expect_raises(LogCompacted, "entries(0, 2)", storage.entries, 0, 2, NO_LIMIT)
        _expect_raises(LogUnavailable, "entries(1, 7)", storage.entries, 1, 7, NO_LIMIT)
        _expect_raises(InvalidArgument, "entries(4, 3)", storage.entries, 4, 3, NO_LIMIT)
        _expect_raises(LogUnavailable, "term(6)", storage.term, 6)
        session.reopen("after appending")
        session.storage.persist(None, _entries(6, 3, 4), None, sync=True)
        _expect_log(session.storage, 1, [1, 1, 2, 2, 3, 3, 4], "after appending after a reopen")
        _expect_equal(session.storage.entries(1, 6, NO_LIMIT), entries, "entries(1, 6)")


def _check_max_size(factory: StorageFactory) -> None:
    # etcd-io/raft TestStorageEntries: entries of 10 bytes each.
    cases = [
        (1, 4, NO_LIMIT, [1, 2, 3]),
        (1, 4, 0, [1]),  # at least one entry, even with no budget
        (1, 4, 10, [1]),
        (1, 4, 19, [1]),
        (1, 4, 20, [1, 2]),
        (1, 4, 29, [1, 2]),
        (1, 4, 30, [1, 2, 3]),
        (2, 4, 10, [2]),
        (2, 4, 20, [2, 3]),
    ]
    with _session(factory) as session:
        session.storage.persist(None, _entries(1, 1, 1, 2), None, sync=True)
        for low, high, max_size, expected in cases:
            result = session.storage.entries(low, high, max_size)
            _expect_equal(
                [entry.index for entry in result],
                expected,
                f"indices of entries({low}, {high}, max_size={max_size})",
            )


def _check_conflicting_suffix(factory: StorageFactory) -> None:
    with _session(factory) as session:
        storage = session.storage
        storage.persist(None, _entries(1, 1, 1, 2, 2, 2), None, sync=True)
        storage.persist(None, _entries(3, 3, 3), None, sync=True)
        _expect_log(storage, 1, [1, 1, 3, 3], "after a shorter conflicting suffix")
        storage.persist(None, _entries(2, 4, 4, 4, 4), None, sync=True)
        _expect_log(storage, 1, [1, 4, 4, 4, 4], "after a longer conflicting suffix")
        # An append always ends the log, even where the terms match (as in etcd).
        storage.persist(None, _entries(2, 4), None, sync=False)
        _expect_log(storage, 1, [1, 4], "after re-appending a matching entry")
        session.reopen("after truncations")
        _expect_log(session.storage, 1, [1, 4], "after truncations and a reopen")


def _check_gap_raises_and_changes_nothing(factory: StorageFactory) -> None:
    with _session(factory) as session:
        session.storage.persist(HardState(1, NodeId(1), 1), _entries(1, 1, 1), None, sync=True)
        session.unchanged_by(
            InvariantViolation,
            "persisting entries after a gap",
            lambda: session.storage.persist(
                HardState(5, NodeId(2), 2), _entries(4, 1), None, sync=True
            ),
        )


def _check_hard_state(factory: StorageFactory) -> None:
    with _session(factory) as session:
        first = HardState(term=1, vote=NodeId(2), commit=0)
        session.storage.persist(first, [], None, sync=True)
        _expect_equal(session.storage.initial_state(), (first, ConfState()), "initial_state()")
        session.storage.persist(None, _entries(1, 1, 1), None, sync=True)
        _expect_equal(session.storage.initial_state()[0], first, "hard state kept by None")
        session.reopen("after setting the hard state")
        second = HardState(term=2**40, vote=NodeId(2**63), commit=2)
        session.storage.persist(second, _entries(3, 2), None, sync=False)
        _expect_equal(session.storage.initial_state()[0], second, "hard state after a change")
        session.reopen("after changing the hard state")


def _check_snapshot_install(factory: StorageFactory) -> None:
    with _session(factory) as session:
        session.storage.persist(None, _entries(1, 1, 1, 2, 2, 2), None, sync=True)
        snapshot = Snapshot(SnapshotMetadata(10, 4, _CONF_STATE), b"image at 10")
        session.storage.persist(None, [], snapshot, sync=True)
        storage = session.storage
        _expect_log(storage, 11, [], "after installing a snapshot beyond the log")
        _expect_equal(storage.term(10), 4, "term(snapshot index)")
        _expect_equal(storage.snapshot(), snapshot, "snapshot()")
        _expect_equal(storage.initial_state(), (HardState(), _CONF_STATE), "initial_state()")
        _expect_raises(LogCompacted, "term(5) below the snapshot", storage.term, 5)
        _expect_raises(LogCompacted, "term(9) below the snapshot", storage.term, 9)
        _expect_raises(
            LogCompacted, "entries(10, 11): the snapshot index", storage.entries, 10, 11, NO_LIMIT
        )
        session.reopen("after installing a snapshot")

        session.storage.persist(None, _entries(11, 4, 5, 5, 5, 5), None, sync=True)
        # A snapshot inside the log discards the whole log too.
        inside = Snapshot(SnapshotMetadata(13, 5, _JOINT_CONF_STATE), b"image at 13")
        hard_state = HardState(term=5, vote=NodeId(1), commit=13)
        session.storage.persist(hard_state, [], inside, sync=True)
        _expect_log(session.storage, 14, [], "after installing a snapshot inside the log")
        _expect_equal(
            session.storage.initial_state(), (hard_state, _JOINT_CONF_STATE), "initial_state()"
        )
        session.unchanged_by(
            SnapshotOutOfDate,
            "persisting an older snapshot",
            lambda: session.storage.persist(
                HardState(9, NodeId(3), 9),
                [],
                Snapshot(SnapshotMetadata(12, 5, _CONF_STATE)),
                sync=True,
            ),
        )
        session.unchanged_by(
            SnapshotOutOfDate,
            "persisting the same snapshot again",
            lambda: session.storage.persist(None, [], inside, sync=True),
        )

        # A snapshot with entries in one persist: entries up to the snapshot are skipped.
        with_entries = Snapshot(SnapshotMetadata(20, 6, _CONF_STATE), b"")
        session.storage.persist(None, _entries(18, 6, 6, 6, 7, 7), with_entries, sync=True)
        _expect_log(session.storage, 21, [7, 7], "after a snapshot with entries")
        _expect_equal(session.storage.term(20), 6, "term(snapshot index)")
        session.reopen("after a snapshot with entries")


def _check_entries_at_or_below_the_compacted_index_are_skipped(factory: StorageFactory) -> None:
    with _session(factory) as session:
        session.storage.persist(None, [], Snapshot(SnapshotMetadata(5, 2, _CONF_STATE)), sync=True)
        session.storage.persist(None, _entries(2, 2, 2, 2, 2), None, sync=True)
        _expect_log(session.storage, 6, [], "after appending only compacted entries")
        session.storage.persist(None, _entries(3, 2, 2, 2, 3, 3), None, sync=True)
        _expect_log(session.storage, 6, [3, 3], "after appending across the compacted index")


def _check_create_snapshot_and_compact(factory: StorageFactory) -> None:
    terms = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    big_data = Random(7).randbytes(5 * 2**20 // 2)  # 2.5 MiB: several chunks of most stores
    with _session(factory) as session:
        session.storage.persist(None, _entries(1, *terms), None, sync=True)
        snapshot = session.storage.create_snapshot(6, _CONF_STATE, b"image at 6")
        _expect_equal(
            snapshot, Snapshot(SnapshotMetadata(6, 2, _CONF_STATE), b"image at 6"), "snapshot"
        )
        _expect_equal(session.storage.snapshot(), snapshot, "snapshot() after create_snapshot")
        _expect_log(session.storage, 1, terms, "after create_snapshot (which does not compact)")
        session.reopen("after create_snapshot")

        session.storage.compact(4)
        _expect_log(session.storage, 5, terms[4:], "after compact(4)")
        _expect_equal(session.storage.term(4), 2, "term(4), the compacted index")
        _expect_raises(LogCompacted, "term(3) after compact(4)", session.storage.term, 3)
        _expect_raises(
            LogCompacted, "entries(4, 6) after compact(4)", session.storage.entries, 4, 6, NO_LIMIT
        )
        session.reopen("after compact(4)")
        for index in (3, 4):
            session.unchanged_by(
                LogCompacted, f"compact({index}) after compact(4)", session.storage.compact, index
            )
        session.unchanged_by(
            LogUnavailable, "compact(11) beyond the log", session.storage.compact, 11
        )
        session.storage.compact(6)
        _expect_log(session.storage, 7, terms[6:], "after compact(6), the snapshot index")
        _expect_equal(session.storage.term(6), 2, "term(6), the compacted index")

        for index, error in ((5, SnapshotOutOfDate), (6, SnapshotOutOfDate), (11, LogUnavailable)):
            session.unchanged_by(
                error,
                f"create_snapshot({index})",
                session.storage.create_snapshot,
                index,
                _CONF_STATE,
                b"",
            )
        big = session.storage.create_snapshot(10, _JOINT_CONF_STATE, big_data)
        _expect_equal(big.metadata, SnapshotMetadata(10, 3, _JOINT_CONF_STATE), "metadata")
        _expect(session.storage.snapshot() == big, "snapshot() differs from the 2.5 MiB one")
        _expect_equal(
            session.storage.initial_state()[1], _JOINT_CONF_STATE, "conf state of the snapshot"
        )
        session.reopen("after a 2.5 MiB snapshot")
        session.storage.compact(10)
        _expect_log(session.storage, 11, [], "after compacting the whole log")
        _expect_equal(session.storage.term(10), 3, "term(10), the compacted index")
        session.reopen("after compacting the whole log")
        session.storage.persist(None, _entries(11, 4), None, sync=True)
        _expect_log(session.storage, 11, [4], "after appending to a compacted log")


def _check_app_data(factory: StorageFactory) -> None:
    with _session(factory) as session:
        app = session.storage.app_data()
        batch = AppBatch()
        for key in (b"a", b"b", b"c", b"d", b"e"):
            batch.put(key, b"value of " + key)
        app.commit(batch, 5, 1)
        _expect_equal(app.applied(), (5, 1), "applied()")
        _expect_equal(app.get(b"c"), b"value of c", "get(b'c')")
        _expect_equal(app.get(b"cc"), None, "get(b'cc')")
        scans = {
            (b"", None): [b"a", b"b", b"c", b"d", b"e"],
            (b"b", b"d"): [b"b", b"c"],
            (b"bb", b"dd"): [b"c", b"d"],
            (b"c", None): [b"c", b"d", b"e"],
            (b"", b"c"): [b"a", b"b"],
            (b"x", None): [],
            (b"d", b"b"): [],
        }
        for (start, end), keys in scans.items():
            _expect_equal(
                list(app.scan(start, end)),
                [(key, b"value of " + key) for key in keys],
                f"scan({start!r}, {end!r})",
            )

        # Delete ranges, then deletes, then puts (AppBatch's order, whatever the calls').
        batch = AppBatch()
        batch.put(b"c", b"new c")
        batch.delete_range(b"b", b"d")
        batch.delete(b"e")
        batch.delete(b"absent")
        batch.delete_range(b"z", b"a")  # reversed: deletes nothing
        batch.put(b"", b"the empty key")
        batch.put(b"empty value", b"")
        batch.put(b"a\x00", b"after a")
        batch.put(b"\xff\xff", b"\x00" * 100_000)
        app.commit(batch, 6, 2)
        expected = [
            (b"", b"the empty key"),
            (b"a", b"value of a"),
            (b"a\x00", b"after a"),
            (b"c", b"new c"),
            (b"d", b"value of d"),
            (b"empty value", b""),
            (b"\xff\xff", b"\x00" * 100_000),
        ]
        _expect_equal(list(app.scan()), expected, "scan() after the second commit")
        _expect_equal(app.get(b"empty value"), b"", "get() of an empty value")
        _expect_equal(app.get(b"b"), None, "get() of a key in a deleted range")
        session.reopen("after commits")
        app = session.storage.app_data()

        app.replace_all(iter([(b"k2", b"v2"), (b"k0", b"v0"), (b"k1", b"v1")]), 10, 3)
        _expect_equal(
            _app_state(app),
            ((10, 3), [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]),
            "applied() and scan() after replace_all",
        )
        _expect_equal(app.get(b"a"), None, "get() of a key replace_all removed")
        session.reopen("after replace_all")
        app = session.storage.app_data()
        app.replace_all(iter([]), 11, 3)
        _expect_equal(_app_state(app), ((11, 3), []), "state after replace_all with nothing")


def _check_scan_of_many_keys_interleaved_with_writes(factory: StorageFactory) -> None:
    keys = [b"key %05d" % number for number in range(3000)]
    with _session(factory) as session:
        app = session.storage.app_data()
        batch = AppBatch()
        for key in keys:
            batch.put(key, key + b" value")
        app.commit(batch, 1, 1)
        _expect_equal(list(app.scan()), [(key, key + b" value") for key in keys], "scan()")
        _expect_equal([key for key, _ in app.scan(keys[1000], keys[2500])], keys[1000:2500], "keys")

        # Writes between steps of a scan: before its cursor, around it, and after it.
        changed = {b"key 00005", b"key 01500", b"key 02999"} | set(keys[1990:2010])
        seen: list[bytes] = []
        for key, value in app.scan():
            seen.append(key)
            _expect(value in (key + b" value", b"changed"), f"scan yielded {key!r} with {value!r}")
            if len(seen) in (10, 1020, 2000):
                batch = AppBatch()
                for changed_key in sorted(changed):
                    batch.put(changed_key, b"changed")
                batch.delete_range(keys[1990], keys[2010])
                batch.put(b"key 02000x", b"changed")
                app.commit(batch, len(seen), 1)
        _expect(seen == sorted(set(seen)), "an interleaved scan went backwards or repeated")
        missing = (set(keys) - changed) - set(seen)
        _expect(not missing, f"an interleaved scan missed untouched keys {sorted(missing)[:5]}")


def _check_close(factory: StorageFactory) -> None:
    storage = factory.create()
    storage.persist(HardState(1, NodeId(1), 0), _entries(1, 1), None, sync=True)
    app = storage.app_data()
    storage.close()
    calls: list[tuple[str, Callable[[], object]]] = [
        ("first_index()", storage.first_index),
        ("last_index()", storage.last_index),
        ("term(1)", lambda: storage.term(1)),
        ("entries(1, 2)", lambda: storage.entries(1, 2, NO_LIMIT)),
        ("initial_state()", storage.initial_state),
        ("snapshot()", storage.snapshot),
        ("persist()", lambda: storage.persist(None, _entries(2, 1), None, sync=True)),
        ("compact(1)", lambda: storage.compact(1)),
        ("create_snapshot(1)", lambda: storage.create_snapshot(1, _CONF_STATE, b"")),
        ("app_data()", storage.app_data),
        ("app_data().applied()", app.applied),
        ("app_data().get()", lambda: app.get(b"key")),
        ("app_data().scan()", lambda: list(app.scan())),
        ("app_data().commit()", lambda: app.commit(AppBatch(), 1, 1)),
        ("app_data().replace_all()", lambda: app.replace_all(iter([]), 1, 1)),
    ]
    for what, call in calls:
        _expect_raises(StorageClosed, f"{what} after close()", call)
    storage.close()  # a second close is harmless


def _check_everything_survives_reopening_twice(factory: StorageFactory) -> None:
    """A history of every kind of write, reopened, written to, and reopened again."""
    with _session(factory) as session:
        session.storage.persist(HardState(1, NodeId(1), 0), _entries(1, 1, 1, 1), None, sync=True)
        session.storage.persist(HardState(2, NodeId(2), 3), _entries(3, 2, 2, 2), None, sync=False)
        session.storage.create_snapshot(4, _CONF_STATE, b"image at 4")
        session.storage.compact(3)
        batch = AppBatch()
        batch.put(b"applied through", b"4")
        session.storage.app_data().commit(batch, 4, 2)
        session.reopen("after a history of writes")
        session.storage.persist(None, _entries(6, 3, 3), None, sync=True)
        snapshot = Snapshot(SnapshotMetadata(9, 4, _JOINT_CONF_STATE), b"image at 9")
        session.storage.persist(HardState(4, NodeId(3), 9), _entries(9, 4, 4), snapshot, sync=True)
        session.storage.app_data().replace_all(iter([(b"restored", b"9")]), 9, 4)
        session.reopen("after writing to a reopened storage")
        _expect_log(session.storage, 10, [4], "at the end")
        _expect_equal(session.storage.snapshot(), snapshot, "snapshot() at the end")


_CHECKS: tuple[Callable[[StorageFactory], None], ...] = (
    _check_empty_storage,
    _check_append_and_read,
    _check_max_size,
    _check_conflicting_suffix,
    _check_gap_raises_and_changes_nothing,
    _check_hard_state,
    _check_snapshot_install,
    _check_entries_at_or_below_the_compacted_index_are_skipped,
    _check_create_snapshot_and_compact,
    _check_app_data,
    _check_scan_of_many_keys_interleaved_with_writes,
    _check_close,
    _check_everything_survives_reopening_twice,
)
