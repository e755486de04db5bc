"""Watches and compaction. As etcd serves them (`from_compaction_revision`, etcd's API): a
watch from the compaction revision C gets the puts at C (not its deletes, whose tombstones
compaction drops), one from below C is canceled with C, prev_kv after a compaction, the
shared cache, and stores compacted by an older raftkv (which kept nothing of C). raftkv's
own API starts after C, so that no watch misses a delete made at C."""

from __future__ import annotations

import pytest
from kv_helpers import log_command
from watch_helpers import EVERYTHING, Store, delete, drain, events_of, put, run

from raftkv.kv import (
    Compact,
    DeleteRange,
    Event,
    EventBatch,
    KvError,
    KvStateMachine,
    MvccKeyValue,
    Put,
    Range,
    Txn,
    WatchCanceled,
    WatchSettings,
    WatchSpec,
)
from raftkv.raft.storage.base import AppBatch
from raftkv.raft.storage.memory import MemoryAppData

# Every key, with etcd's rule (its API's watches): a watch may start at the compaction
# revision. EVERYTHING (raftkv's own API) starts after it.
ETCD = WatchSpec(b"\0", b"\0", from_compaction_revision=True)
ETCD_PREV = WatchSpec(b"\0", b"\0", prev_kv=True, from_compaction_revision=True)


def test_prev_kv_after_compaction_is_the_newest_kept_version() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"k", b"1"), Put(b"k", b"2"), Put(b"k", b"3"))  # revisions 2, 3, 4
        store.apply(Put(b"gone", b"x"), DeleteRange(b"gone"))  # revisions 5, 6
        store.apply(Compact(4))
        store.apply(Put(b"k", b"4"), Put(b"gone", b"again"))  # revisions 7, 8
        with pytest.raises(KvError):
            store.machine.range(Range(b"k", revision=2))  # v1 is compacted away
        watch = store.watch(ETCD_PREV, start=5)
        assert watch.check_start() is None
        events = events_of(await drain(watch))
        assert [(event.kv.key, event.kv.mod_revision) for event in events] == [
            (b"gone", 5),
            (b"gone", 6),
            (b"k", 7),
            (b"gone", 8),
        ]
        assert [event.prev_kv for event in events] == [
            None,
            MvccKeyValue(b"gone", b"x", 5, 5, 1),
            MvccKeyValue(b"k", b"3", 2, 4, 3),  # kept as the newest entry at or below 4
            None,  # just before 8 the key was deleted (the tombstone at 6)
        ]
        # Compact past the delete: the tombstone goes, and prev_kv is still None.
        store.apply(Compact(7))
        gone = WatchSpec(b"gone", prev_kv=True, from_compaction_revision=True)
        again = events_of(await drain(store.watch(gone, start=8)))
        assert [(event.kv.value, event.prev_kv) for event in again] == [(b"again", None)]

    run(scenario)


def test_a_start_below_the_compacted_revision_is_refused_with_it() -> None:
    """etcd cancels a watch from below its compaction revision C with compact_revision C,
    and serves one from C."""
    store = Store()
    store.apply(*(Put(b"k", b"%d" % number) for number in range(1, 6)))  # revisions 2..6
    store.apply(Compact(4))
    for start in (1, 3):
        canceled = store.watch(ETCD, start=start).check_start()
        assert canceled is not None
        assert (canceled.code, canceled.compact_revision, canceled.oldest_revision) == (
            "compacted",
            4,
            4,
        )
        assert canceled.revision == start - 1
    for start in (4, 5, 0):
        assert store.watch(ETCD, start=start).check_start() is None


def test_a_watch_from_the_compacted_revision_gets_its_puts_not_its_deletes() -> None:
    """As etcd: compaction at C drops the tombstones of the deletes at C, so a watch from
    C gets the puts at C (without prev_kv: what came before C is compacted), then all
    after C."""

    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"a", b"1"), Put(b"b", b"1"))  # revisions 2, 3
        store.apply(Txn(success=[Put(b"a", b"2"), DeleteRange(b"b"), Put(b"c", b"1")]))  # 4
        store.apply(Put(b"d", b"1"), DeleteRange(b"a"))  # revisions 5, 6
        store.apply(Compact(4))
        watch = store.watch(ETCD_PREV, start=4)
        assert watch.check_start() is None
        batches = await drain(watch)
        assert batches[0].events[:2] == [
            put(b"a", b"2", 4, 2, version=2),
            put(b"c", b"1", 4, 4),
        ]
        assert events_of(batches)[2:] == [
            put(b"d", b"1", 5, 5),
            Event("delete", delete(b"a", 6).kv, MvccKeyValue(b"a", b"2", 2, 4, 2)),
        ]
        # A compaction revision with only deletes gives nothing at it.
        store.apply(Compact(6))
        assert events_of(await drain(store.watch(ETCD, start=6))) == []
        canceled = await store.watch(ETCD, start=5).next()
        assert isinstance(canceled, WatchCanceled)
        assert (canceled.compact_revision, canceled.oldest_revision) == (6, 6)

    run(scenario)


def test_a_second_compaction_cancels_a_watch_from_the_first_one() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"k", b"1"), Put(b"k", b"2"), Put(b"k", b"3"))  # revisions 2, 3, 4
        store.apply(Compact(3))
        assert events_of(await drain(store.watch(ETCD, start=3))) == [
            put(b"k", b"2", 3, 2, version=2),
            put(b"k", b"3", 4, 2, version=3),
        ]
        store.apply(Compact(4))
        canceled = await store.watch(ETCD, start=3).next()
        assert isinstance(canceled, WatchCanceled)
        assert (canceled.compact_revision, canceled.oldest_revision) == (4, 4)
        assert events_of(await drain(store.watch(ETCD, start=4))) == [put(b"k", b"3", 4, 2, 3)]

    run(scenario)


def test_the_cache_does_not_serve_a_compacted_revision_as_it_was_before() -> None:
    """Revision C read (and cached) before the compaction at C had its delete; a watch
    from C after it gets only the puts the store kept, as a watch with no cache would."""

    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"a", b"1"))  # revision 2
        store.apply(Txn(success=[Put(b"b", b"1"), DeleteRange(b"a")]))  # 3
        before = events_of(await drain(store.watch(ETCD_PREV)))
        assert [event.type for event in before] == ["put", "put", "delete"]
        store.apply(Compact(3))
        after = events_of(await drain(store.watch(ETCD_PREV, 3)))
        assert after == [put(b"b", b"1", 3, 3)]

    run(scenario)


def test_a_store_compacted_by_an_older_raftkv_refuses_a_watch_from_its_compaction() -> None:
    """An older raftkv's compaction dropped the compacted revision's log entry, so its
    puts cannot be told: the watch is refused (as that raftkv refused it), naming the
    revision after it as the oldest to watch from."""

    async def scenario() -> None:
        app = MemoryAppData()
        old = KvStateMachine(app)
        old.apply([log_command(1, Put(b"k", b"1")), log_command(2, Put(b"k", b"2"))], 2, 1)
        old.apply([log_command(3, Compact(3))], 3, 1)
        app.commit(AppBatch(deletes=[b"r" + (3).to_bytes(8, "big")]), 3, 1)
        machine = KvStateMachine(app)
        assert machine.oldest_watch_revision() == 4
        canceled = machine.watch_hub.open(ETCD, 3).check_start()
        assert canceled is not None
        assert (canceled.compact_revision, canceled.oldest_revision) == (3, 4)
        assert "watch from revision 4" in canceled.message
        assert machine.watch_hub.open(ETCD, 4).check_start() is None

    run(scenario)


def test_a_watch_that_falls_behind_a_compaction_is_canceled() -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(max_events_per_message=1))
        store.apply(*(Put(b"k%d" % number, b"v") for number in range(5)))  # revisions 2..6
        watch = store.watch(ETCD)
        first = await watch.next()
        assert isinstance(first, EventBatch) and first.revision == 2
        store.apply(Compact(5))
        canceled = await watch.next()
        assert isinstance(canceled, WatchCanceled)
        assert (canceled.code, canceled.revision) == ("compacted", 2)
        assert (canceled.compact_revision, canceled.oldest_revision) == (5, 5)

    run(scenario)


def test_a_watch_ahead_of_a_compaction_carries_on() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"a", b"1"), Put(b"a", b"2"))
        watch = store.watch(ETCD)
        await drain(watch)
        store.apply(Compact(3), Put(b"a", b"3"))
        assert await watch.next() == EventBatch(4, [put(b"a", b"3", 4, 2, version=3)])

    run(scenario)


def test_without_etcds_rule_a_watch_starts_after_the_compacted_revision() -> None:
    """raftkv's own API: from C (or lagging at C when the compaction comes) is canceled,
    naming C + 1, where nothing has been compacted away; the deletes at C are never
    silently skipped."""

    async def scenario() -> None:
        store = Store(WatchSettings(max_events_per_message=1))
        store.apply(Put(b"a", b"1"), Put(b"b", b"1"))  # revisions 2, 3
        store.apply(Txn(success=[Put(b"a", b"2"), DeleteRange(b"b")]))  # 4
        store.apply(Put(b"c", b"1"))  # 5
        lagging = store.watch(EVERYTHING, start=4)
        store.apply(Compact(4))
        for watch in (lagging, store.watch(EVERYTHING, start=4)):
            canceled = await watch.next()
            assert isinstance(canceled, WatchCanceled)
            assert (canceled.compact_revision, canceled.oldest_revision) == (4, 5)
            assert canceled.revision == 3
            assert "watch from revision 5" in canceled.message
        assert events_of(await drain(store.watch(EVERYTHING, start=5))) == [put(b"c", b"1", 5, 5)]

    run(scenario)
