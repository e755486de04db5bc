"""MvccStore, operation by operation: etcd's data model and its edge cases."""

from __future__ import annotations

import msgspec
import pytest

from raftkv.kv import (
    Compact,
    CompactResponse,
    CompareOp,
    CompareTarget,
    DeleteRange,
    DeleteRangeResponse,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    MvccKeyValue,
    MvccStore,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    ResponseHeader,
    Txn,
    TxnCompare,
    TxnResponse,
)
from raftkv.kv.errors import Compacted, LimitExceeded
from raftkv.kv.settings import KvSettings
from raftkv.raft.storage.base import AppBatch, StorageClosed
from raftkv.raft.storage.memory import MemoryAppData


@pytest.fixture
def store() -> MvccStore:
    return MvccStore(MemoryAppData())


def get(store: MvccStore, key: bytes, revision: int = 0) -> MvccKeyValue | None:
    kvs = store.range(Range(key, revision=revision)).kvs
    return kvs[0] if kvs else None


def keys(result: RangeResponse) -> list[bytes]:
    return [kv.key for kv in result.kvs]


def history_entries(store: MvccStore) -> int:
    return sum(1 for _ in store.staged.scan(b"h", b"i"))


def revision_log(store: MvccStore) -> dict[int, list[bytes]]:
    """The revision log: the keys changed at each revision it holds."""
    return {
        int.from_bytes(stored[1:], "big"): msgspec.msgpack.decode(data)
        for stored, data in store.staged.scan(b"r", b"s")
    }


# -- put ------------------------------------------------------------------------------------


def test_a_fresh_store_is_at_revision_1_like_etcd(store: MvccStore) -> None:
    assert store.current_revision() == 1
    assert store.compacted_revision() == 0
    assert store.range(Range(b"\0", b"\0")) == RangeResponse(ResponseHeader(1), [], 0)


def test_put_creates_a_key_at_the_next_revision(store: MvccStore) -> None:
    assert store.put(Put(b"k", b"v1")) == PutResponse(ResponseHeader(2))
    assert get(store, b"k") == MvccKeyValue(
        b"k", b"v1", create_revision=2, mod_revision=2, version=1
    )


def test_each_put_bumps_version_and_mod_revision_and_keeps_create_revision(
    store: MvccStore,
) -> None:
    store.put(Put(b"k", b"v1"))
    store.put(Put(b"other", b"x"))
    store.leases.grant(9, 10, 1)
    assert store.put(Put(b"k", b"v2", lease=9)) == PutResponse(ResponseHeader(4))
    assert get(store, b"k") == MvccKeyValue(b"k", b"v2", 2, 4, version=2, lease=9)


def test_put_with_prev_kv_returns_the_previous_value(store: MvccStore) -> None:
    assert store.put(Put(b"k", b"v1", prev_kv=True)).prev_kv is None
    result = store.put(Put(b"k", b"v2", prev_kv=True))
    assert result.prev_kv == MvccKeyValue(b"k", b"v1", 2, 2, 1)


# -- delete ---------------------------------------------------------------------------------


def test_delete_leaves_a_tombstone_and_a_later_put_starts_over(store: MvccStore) -> None:
    store.put(Put(b"k", b"v1"))
    store.put(Put(b"k", b"v2"))
    assert store.delete_range(DeleteRange(b"k")) == DeleteRangeResponse(
        ResponseHeader(4), deleted=1
    )
    assert get(store, b"k") is None
    assert store.put(Put(b"k", b"v3")) == PutResponse(ResponseHeader(5))
    assert get(store, b"k") == MvccKeyValue(
        b"k", b"v3", create_revision=5, mod_revision=5, version=1
    )
    # History keeps every version: before the delete, at the tombstone, after.
    assert get(store, b"k", revision=3) == MvccKeyValue(b"k", b"v2", 2, 3, 2)
    assert get(store, b"k", revision=4) is None


def test_delete_range_with_prev_kv_returns_every_deleted_key(store: MvccStore) -> None:
    for key in (b"a", b"b", b"c"):
        store.put(Put(key, key.upper()))
    result = store.delete_range(DeleteRange(b"a", b"c", prev_kv=True))
    assert result == DeleteRangeResponse(
        ResponseHeader(5), 2, [MvccKeyValue(b"a", b"A", 2, 2, 1), MvccKeyValue(b"b", b"B", 3, 3, 1)]
    )
    assert keys(store.range(Range(b"\0", b"\0"))) == [b"c"]


def test_a_delete_that_matches_nothing_does_not_create_a_revision(store: MvccStore) -> None:
    store.put(Put(b"k", b"v"))
    assert store.delete_range(DeleteRange(b"missing")) == DeleteRangeResponse(ResponseHeader(2), 0)
    assert store.delete_range(DeleteRange(b"x", b"\0")) == DeleteRangeResponse(ResponseHeader(2), 0)
    assert store.current_revision() == 2


# -- range ----------------------------------------------------------------------------------


@pytest.fixture
def filled() -> MvccStore:
    """Keys a, foo, foo/1, foo/2, foo0, z at revisions 2..7."""
    store = MvccStore(MemoryAppData())
    for key in (b"a", b"foo", b"foo/1", b"foo/2", b"foo0", b"z"):
        store.put(Put(key, b"value of " + key))
    return store


def test_range_end_selects_a_prefix_a_suffix_or_everything(filled: MvccStore) -> None:
    assert keys(filled.range(Range(b"foo/", b"foo0"))) == [b"foo/1", b"foo/2"]
    assert keys(filled.range(Range(b"foo0", b"\0"))) == [b"foo0", b"z"]
    assert len(filled.range(Range(b"\0", b"\0")).kvs) == 6
    assert keys(filled.range(Range(b"foo"))) == [b"foo"]  # empty range_end: one key
    assert filled.range(Range(b"z", b"a")).count == 0  # range_end before key: nothing


def test_limit_truncates_and_reports_more_and_the_full_count(filled: MvccStore) -> None:
    result = filled.range(Range(b"\0", b"\0", limit=2))
    assert (keys(result), result.count, result.more) == ([b"a", b"foo"], 6, True)
    result = filled.range(Range(b"\0", b"\0", limit=6))
    assert (len(result.kvs), result.count, result.more) == (6, 6, False)


def test_count_only_and_keys_only(filled: MvccStore) -> None:
    assert filled.range(Range(b"foo", b"foz", count_only=True, limit=1)) == RangeResponse(
        ResponseHeader(7), [], count=4, more=False
    )
    result = filled.range(Range(b"foo/", b"foo0", keys_only=True))
    assert result.kvs == [
        MvccKeyValue(b"foo/1", b"", 4, 4, 1),
        MvccKeyValue(b"foo/2", b"", 5, 5, 1),
    ]


def test_range_at_a_past_revision_sees_the_keys_of_that_time(filled: MvccStore) -> None:
    filled.put(Put(b"foo/1", b"new"))
    filled.delete_range(DeleteRange(b"a"))
    past = filled.range(Range(b"\0", b"\0", revision=4))
    assert past.header == ResponseHeader(9)  # the header carries the current revision
    assert past.kvs == [
        MvccKeyValue(b"a", b"value of a", 2, 2, 1),
        MvccKeyValue(b"foo", b"value of foo", 3, 3, 1),
        MvccKeyValue(b"foo/1", b"value of foo/1", 4, 4, 1),
    ]
    assert get(filled, b"foo/1", revision=8) == MvccKeyValue(b"foo/1", b"new", 4, 8, 2)
    assert get(filled, b"a", revision=9) is None
    assert filled.range(Range(b"\0", b"\0", revision=1)).count == 0


def test_range_in_the_future_is_refused(filled: MvccStore) -> None:
    with pytest.raises(FutureRevision) as refused:
        filled.range(Range(b"a", revision=8))
    assert (refused.value.revision, refused.value.current_revision) == (8, 7)


def test_keys_with_zero_and_ff_bytes_keep_byte_order(store: MvccStore) -> None:
    """Escaping must preserve byte order and never let one key prefix another."""
    for key in (b"a\xff", b"a\x00\x01", b"a", b"a\x00", b"\x00", b"a\x00\xff", b"\xff\xff"):
        store.put(Put(key, key))
    ordered = [b"\x00", b"a", b"a\x00", b"a\x00\x01", b"a\x00\xff", b"a\xff", b"\xff\xff"]
    assert keys(store.range(Range(b"\0", b"\0"))) == ordered
    # At revision 5 only the first four keys were there.
    assert keys(store.range(Range(b"\0", b"\0", revision=5))) == [
        b"a",
        b"a\x00",
        b"a\x00\x01",
        b"a\xff",
    ]
    assert keys(store.range(Range(b"a\x00", b"a\x01"))) == [b"a\x00", b"a\x00\x01", b"a\x00\xff"]
    assert keys(store.range(Range(b"a", b"a\x00"))) == [b"a"]


# -- txn ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "op", "value", "holds"),
    [
        ("value", "=", b"v2", True),
        ("value", "!=", b"v2", False),
        ("value", "<", b"v3", True),
        ("value", ">", b"v3", False),
        ("version", "=", 2, True),
        ("version", ">", 1, True),
        ("version", "<", 2, False),
        ("create", "=", 2, True),
        ("create", "!=", 2, False),
        ("mod", "=", 3, True),
        ("mod", "<", 3, False),
        ("lease", "=", 5, True),
        ("lease", ">", 5, False),
    ],
)
def test_txn_compares_each_target_with_each_op(
    store: MvccStore, target: CompareTarget, op: CompareOp, value: bytes | int, holds: bool
) -> None:
    store.put(Put(b"k", b"v1"))
    store.leases.grant(5, 10, 1)
    store.put(Put(b"k", b"v2", lease=5))
    result = store.txn(Txn([TxnCompare(b"k", target, op, value)]))
    assert result.succeeded is holds


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (TxnCompare(b"missing", "value", "=", b""), False),
        (TxnCompare(b"missing", "value", "!=", b"x"), False),
        (TxnCompare(b"missing", "version", "=", 0), True),
        (TxnCompare(b"missing", "create", "=", 0), True),
        (TxnCompare(b"missing", "mod", "<", 1), True),
    ],
)
def test_a_missing_key_fails_value_compares_and_has_zero_revisions(
    store: MvccStore, compare: TxnCompare, holds: bool
) -> None:
    assert store.txn(Txn([compare])).succeeded is holds


def test_txn_runs_the_branch_its_compares_choose(store: MvccStore) -> None:
    store.put(Put(b"lock", b"free"))
    take = Txn(
        [TxnCompare(b"lock", "value", "=", b"free")],
        success=[Put(b"lock", b"taken")],
        failure=[Range(b"lock")],
    )
    assert store.txn(take) == TxnResponse(ResponseHeader(3), True, [PutResponse(ResponseHeader(3))])
    assert store.txn(take) == TxnResponse(
        ResponseHeader(3),
        False,
        [RangeResponse(ResponseHeader(3), [MvccKeyValue(b"lock", b"taken", 2, 3, 2)], 1)],
    )


def test_all_writes_of_a_txn_share_one_revision_and_later_ops_see_earlier_ones(
    store: MvccStore,
) -> None:
    store.put(Put(b"old", b"x"))
    result = store.txn(
        Txn(
            success=[
                Range(b"a", b"\0", count_only=True),
                Put(b"a", b"1"),
                Range(b"a", b"\0", keys_only=True),
                DeleteRange(b"old"),
                Put(b"b", b"2"),
            ]
        )
    )
    assert result == TxnResponse(
        ResponseHeader(3),
        True,
        [
            RangeResponse(ResponseHeader(2), [], 1),  # before any write: revision 2
            PutResponse(ResponseHeader(3)),
            RangeResponse(
                ResponseHeader(3),
                [MvccKeyValue(b"a", b"", 3, 3, 1), MvccKeyValue(b"old", b"", 2, 2, 1)],
                2,
            ),
            DeleteRangeResponse(ResponseHeader(3), 1),
            PutResponse(ResponseHeader(3)),
        ],
    )
    assert keys(store.range(Range(b"\0", b"\0"))) == [b"a", b"b"]
    assert store.range(Range(b"\0", b"\0", revision=2)).kvs == [MvccKeyValue(b"old", b"x", 2, 2, 1)]


def test_a_txn_without_changes_does_not_create_a_revision(store: MvccStore) -> None:
    store.put(Put(b"k", b"v"))
    read_only = Txn(success=[Range(b"k"), DeleteRange(b"missing")])
    assert store.txn(read_only).header == ResponseHeader(2)
    assert store.txn(Txn()).header == ResponseHeader(2)
    assert store.current_revision() == 2


@pytest.mark.parametrize(
    "branch",
    [
        [Put(b"k", b"1"), Put(b"k", b"2")],
        [Put(b"k", b"1"), DeleteRange(b"k")],
        [DeleteRange(b"a", b"z"), Put(b"k", b"1")],
        [DeleteRange(b"a", b"\0"), Put(b"k", b"1")],
    ],
)
def test_a_txn_branch_writing_a_key_twice_is_refused(
    store: MvccStore, branch: list[Put | DeleteRange]
) -> None:
    # Refused in either branch, whichever the compares would choose.
    for request in (Txn(success=list(branch)), Txn(failure=list(branch))):
        with pytest.raises(DuplicateKey) as refused:
            store.txn(request)
        assert refused.value.key == b"k"
    assert store.current_revision() == 1


def test_overlapping_deletes_in_one_txn_are_allowed_and_delete_once(store: MvccStore) -> None:
    for key in (b"a", b"b", b"c"):
        store.put(Put(key, b"v"))
    result = store.txn(Txn(success=[DeleteRange(b"a", b"c"), DeleteRange(b"b", b"\0")]))
    assert result.responses == [
        DeleteRangeResponse(ResponseHeader(5), 2),
        DeleteRangeResponse(ResponseHeader(5), 1),
    ]


def test_a_txn_whose_read_fails_changes_nothing(store: MvccStore) -> None:
    store.put(Put(b"k", b"v"))
    before = list(store.staged.scan(b"", b"\xff"))
    with pytest.raises(FutureRevision):
        store.txn(Txn(success=[Put(b"k", b"new"), Put(b"j", b"x"), Range(b"k", revision=4)]))
    assert store.current_revision() == 2
    assert list(store.staged.scan(b"", b"\xff")) == before
    # A read at the txn's own new revision is not in the future.
    result = store.txn(Txn(success=[Put(b"k", b"new"), Range(b"k", revision=3)]))
    assert result.responses[1] == RangeResponse(
        ResponseHeader(3), [MvccKeyValue(b"k", b"new", 2, 3, 2)], 1
    )


# -- compact --------------------------------------------------------------------------------


def test_compact_refuses_future_and_already_compacted_revisions(store: MvccStore) -> None:
    store.put(Put(b"k", b"v"))
    with pytest.raises(FutureRevision):
        store.compact(Compact(3))
    assert store.compact(Compact(2)) == CompactResponse(ResponseHeader(2))
    for revision in (2, 1, 0):
        with pytest.raises(Compacted) as refused:
            store.compact(Compact(revision))
        assert refused.value.compact_revision == 2
    assert store.current_revision() == 2  # compaction does not create a revision


def test_compact_keeps_what_reads_at_or_after_it_need(store: MvccStore) -> None:
    store.put(Put(b"k", b"v1"))  # 2
    store.put(Put(b"k", b"v2"))  # 3
    store.put(Put(b"gone", b"x"))  # 4
    store.delete_range(DeleteRange(b"gone"))  # 5
    store.put(Put(b"k", b"v3"))  # 6
    assert history_entries(store) == 5
    store.compact(Compact(5))
    # k keeps v2 (newest at or below 5) and v3; "gone" is dropped with its tombstone.
    assert history_entries(store) == 2
    assert get(store, b"k", revision=5) == MvccKeyValue(b"k", b"v2", 2, 3, 2)
    assert get(store, b"gone", revision=5) is None
    with pytest.raises(Compacted) as refused:
        store.range(Range(b"k", revision=4))
    assert (refused.value.revision, refused.value.compact_revision) == (4, 5)
    # The revision log before the compaction is gone too; at it, the puts it kept (none).
    assert revision_log(store) == {5: [], 6: [b"k"]}


def test_a_second_compaction_drops_what_the_first_kept(store: MvccStore) -> None:
    store.put(Put(b"k", b"v1"))  # 2
    store.put(Put(b"still", b"s"))  # 3
    store.compact(Compact(3))
    assert revision_log(store) == {3: [b"still"]}
    store.put(Put(b"k", b"v2"))  # 4
    store.delete_range(DeleteRange(b"still"))  # 5
    store.compact(Compact(5))
    assert history_entries(store) == 1
    assert keys(store.range(Range(b"\0", b"\0", revision=5))) == [b"k"]
    assert get(store, b"k") == MvccKeyValue(b"k", b"v2", 2, 4, 2)
    assert revision_log(store) == {5: []}


def test_compaction_keeps_the_puts_at_its_revision_for_watches_from_it(store: MvccStore) -> None:
    """etcd serves a watch from its compaction revision C with the puts at C (the keys
    whose newest version at or below C is at C) and not the deletes at C, whose
    tombstones compaction drops: the revision log keeps C's entry, trimmed to the puts."""
    store.put(Put(b"b", b"1"))  # 2
    store.put(Put(b"d", b"1"))  # 3
    store.txn(
        Txn(success=[Put(b"c", b"2"), DeleteRange(b"b"), Put(b"a", b"2"), DeleteRange(b"d")])
    )  # 4
    store.put(Put(b"e", b"1"))  # 5
    assert store.oldest_watch_revision() == 1
    store.compact(Compact(4))
    assert revision_log(store) == {4: [b"c", b"a"], 5: [b"e"]}  # in the order made
    assert store.oldest_watch_revision() == 4
    store.compact(Compact(5))
    assert revision_log(store) == {5: [b"e"]}
    assert store.oldest_watch_revision() == 5


def test_compacting_an_untouched_store_keeps_an_empty_entry(store: MvccStore) -> None:
    """Revision 1 changed nothing, yet a watch from it is served: the entry says so."""
    store.compact(Compact(1))
    assert (revision_log(store), store.oldest_watch_revision()) == ({1: []}, 1)


def compacted(compact_at: int) -> MemoryAppData:
    """A committed store: k written at revisions 2 and 3, then compacted at `compact_at`."""
    app = MemoryAppData()
    store = MvccStore(app)
    store.put(Put(b"k", b"v"))  # 2
    store.put(Put(b"k", b"w"))  # 3
    store.compact(Compact(compact_at))
    store.commit(1, 1)
    return app


def test_the_oldest_watch_revision_survives_a_reopen() -> None:
    assert MvccStore(compacted(2)).oldest_watch_revision() == 2


def test_a_store_compacted_by_an_older_raftkv_watches_from_after_its_compaction() -> None:
    """An older raftkv's compaction at C dropped C's revision log entry too: the store
    opens as before, reads at C work, and a watch can start at C + 1 only."""
    app = compacted(3)
    app.commit(AppBatch(deletes=[b"r" + (3).to_bytes(8, "big")]), 2, 1)  # as it was left
    reopened = MvccStore(app)
    assert (reopened.compacted_revision(), reopened.oldest_watch_revision()) == (3, 4)
    assert get(reopened, b"k", revision=3) == MvccKeyValue(b"k", b"w", 2, 3, 2)
    reopened.put(Put(b"k", b"x"))  # 4
    reopened.compact(Compact(4))  # this build's compaction keeps its entry again
    assert (revision_log(reopened), reopened.oldest_watch_revision()) == ({4: [b"k"]}, 4)


# -- staging and commit ---------------------------------------------------------------------


def test_staged_writes_are_visible_before_commit_and_stored_by_it() -> None:
    app = MemoryAppData()
    store = MvccStore(app)
    store.put(Put(b"k", b"v"))
    assert app.get(b"meta:mvcc") is None
    assert get(store, b"k") is not None
    store.commit(7, 2)
    assert app.applied() == (7, 2)
    reopened = MvccStore(app)
    assert reopened.current_revision() == 2
    assert get(reopened, b"k") == MvccKeyValue(b"k", b"v", 2, 2, 1)


def test_requests_that_change_nothing_write_nothing() -> None:
    """The data depends on the commands only: no meta record until the revision moves."""
    app = MemoryAppData()
    store = MvccStore(app)
    store.txn(Txn(success=[Range(b"k")]))
    store.delete_range(DeleteRange(b"k"))
    store.commit(1, 1)
    assert list(app.scan()) == []


def test_requests_are_checked_against_the_settings() -> None:
    store = MvccStore(MemoryAppData(), KvSettings(max_key_bytes=4, max_value_bytes=2))
    with pytest.raises(EmptyKey):
        store.put(Put(b"", b""))
    with pytest.raises(LimitExceeded) as refused:
        store.put(Put(b"k", b"too long"))
    assert (refused.value.setting, refused.value.limit) == ("max_value_bytes", 2)
    with pytest.raises(LimitExceeded):
        store.range(Range(b"key45"))
    assert store.current_revision() == 1


class FullDiskAppData(MemoryAppData):
    """An AppData whose disk fills up: commits fail once `full` is set."""

    full = False

    def commit(self, batch: AppBatch, applied_index: int, applied_term: int) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        super().commit(batch, applied_index, applied_term)


def test_after_a_failed_commit_no_read_sees_the_state_that_was_not_stored() -> None:
    """Found by the chaos run: a leader whose disk filled up failed its apply, and a GET
    served before the node had stopped took a view of the half-applied store: a 500 and
    a traceback (InvariantViolation). Its reads now get the stopped node's answer."""
    app = FullDiskAppData()
    store = MvccStore(app)
    store.execute(Put(b"a", b"1"))
    store.commit(1, 1)
    app.full = True
    store.execute(Put(b"a", b"2"))
    with pytest.raises(OSError, match="No space left"):
        store.commit(2, 1)
    for threaded in (False, True):
        with pytest.raises(StorageClosed, match=r"could not write: .*No space left"):
            store.view(threaded=threaded)
    assert app.applied()[0] == 1
