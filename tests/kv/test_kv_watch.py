"""Watches over a KvStateMachine (MemoryAppData, ManualClock): order, filters, prev_kv,
resuming, progress, limits, the shared cache, snapshot restores, and a property check
against random workloads (compaction: test_kv_watch_compaction.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from kv_helpers import random_workload
from watch_helpers import EVERYTHING, Store, delete, drain, events_of, put, run, settle

from raftkv.kv import (
    Compact,
    DeleteRange,
    Event,
    EventBatch,
    KvError,
    LeaseGrant,
    LeaseRevoke,
    MvccKeyValue,
    Put,
    Range,
    TooManyWatches,
    Txn,
    Watch,
    WatchCanceled,
    WatchHub,
    WatchProgress,
    WatchSettings,
    WatchSpec,
    decode_command,
)
from raftkv.kv.events import EventReader, RevisionEvents
from raftkv.kv.watch import event_bytes

# -- order and grouping ---------------------------------------------------------------------


def test_events_come_in_revision_order_each_revision_once() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"a", b"1"), Put(b"b", b"1"), Put(b"a", b"2"))
        watch = store.watch()
        first = await drain(watch)
        store.apply(DeleteRange(b"a"), Put(b"c", b"1"))
        second = await drain(watch)
        assert events_of(first) == [
            put(b"a", b"1", 2, 2),
            put(b"b", b"1", 3, 3),
            put(b"a", b"2", 4, 2, version=2),
        ]
        assert events_of(second) == [delete(b"a", 5), put(b"c", b"1", 6, 6)]
        watermarks = [batch.revision for batch in first + second]
        assert watermarks == sorted(set(watermarks))
        assert watermarks[-1] == 6 == watch.watermark

    run(scenario)


def test_a_txn_revision_is_delivered_in_one_batch() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"b", b"old"))
        watch = store.watch(start=0)  # from the next revision
        waiting = asyncio.ensure_future(watch.next())
        await settle()
        assert not waiting.done()
        store.apply(Txn(success=[Put(b"a", b"1"), DeleteRange(b"b"), Put(b"c", b"3")]))
        outcome = await waiting
        assert outcome == EventBatch(
            3, [put(b"a", b"1", 3, 3), delete(b"b", 3), put(b"c", b"3", 3, 3)]
        )

    run(scenario)


def test_a_lease_revoke_is_one_revision_of_deletes() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(LeaseGrant(1, 10), Put(b"x", b"1", lease=1), Put(b"y", b"2", lease=1))
        watch = store.watch(start=0)
        revision = store.apply(LeaseRevoke(1))
        assert await watch.next() == EventBatch(
            revision, [delete(b"x", revision), delete(b"y", revision)]
        )

    run(scenario)


# -- filters --------------------------------------------------------------------------------

FILTERS: list[tuple[str, WatchSpec, list[tuple[str, bytes]]]] = [
    ("one key", WatchSpec(b"ab"), [("put", b"ab"), ("delete", b"ab")]),
    (
        "prefix",
        WatchSpec(b"ab", b"ac"),
        [("put", b"ab"), ("put", b"abc"), ("delete", b"ab"), ("delete", b"abc")],
    ),
    (
        "range",
        WatchSpec(b"abc", b"c"),
        [("put", b"abc"), ("put", b"b"), ("delete", b"abc"), ("delete", b"b")],
    ),
    ("from a key on", WatchSpec(b"b", b"\0"), [("put", b"b"), ("put", b"c"), ("delete", b"b")]),
    ("empty range", WatchSpec(b"c", b"a"), []),
    (
        "no puts",
        WatchSpec(b"\0", b"\0", no_put=True),
        [("delete", b"ab"), ("delete", b"abc"), ("delete", b"b")],
    ),
    (
        "no deletes",
        WatchSpec(b"a", b"b", no_delete=True),
        [("put", b"a"), ("put", b"ab"), ("put", b"abc")],
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(spec, expected) for _, spec, expected in FILTERS],
    ids=[name for name, _, _ in FILTERS],
)
def test_a_watch_sees_only_the_events_its_spec_selects(
    spec: WatchSpec, expected: list[tuple[str, bytes]]
) -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"a", b"1"), Put(b"ab", b"2"), Put(b"abc", b"3"))
        store.apply(Put(b"b", b"4"), Put(b"c", b"5"))
        store.apply(Txn(success=[DeleteRange(b"ab", b"ac"), DeleteRange(b"b")]))
        events = events_of(await drain(store.watch(spec)))
        assert [(event.type, event.kv.key) for event in events] == expected

    run(scenario)


# -- prev_kv --------------------------------------------------------------------------------


def test_prev_kv_is_the_key_just_before_each_event() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"k", b"1"), Put(b"k", b"2"), DeleteRange(b"k"), Put(b"k", b"3"))
        events = events_of(await drain(store.watch(WatchSpec(b"k", prev_kv=True))))
        assert [event.prev_kv for event in events] == [
            None,
            MvccKeyValue(b"k", b"1", 2, 2, 1),
            MvccKeyValue(b"k", b"2", 2, 3, 2),
            None,
        ]
        # Without prev_kv the events carry none.
        plain = events_of(await drain(store.watch(WatchSpec(b"k"))))
        assert [event.prev_kv for event in plain] == [None] * 4

    run(scenario)


# -- where a watch starts -------------------------------------------------------------------


def test_a_start_revision_in_the_past_replays_from_there() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(*(Put(b"k", b"%d" % number) for number in range(1, 6)))  # revisions 2..6
        events = events_of(await drain(store.watch(start=4)))
        assert [event.kv.mod_revision for event in events] == [4, 5, 6]
        assert [event.kv.value for event in events] == [b"3", b"4", b"5"]
        # Start 0 means "from the next revision": nothing old.
        assert await drain(store.watch(start=0)) == []

    run(scenario)


def test_a_start_beyond_the_current_revision_waits_until_it_is_applied() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"k", b"1"))  # revision 2
        watch = store.watch(start=4)
        waiting = asyncio.ensure_future(watch.next())
        await settle()
        store.apply(Put(b"k", b"2"))  # revision 3: not yet
        await settle()
        assert not waiting.done()
        store.apply(Put(b"k", b"3"))  # revision 4
        assert await waiting == EventBatch(4, [put(b"k", b"3", 4, 2, version=3)])

    run(scenario)


# -- progress and stopping ------------------------------------------------------------------


def test_a_quiet_watch_reports_progress_after_the_interval() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"x", b"1"))
        watch = store.watch(WatchSpec(b"x"), start=0)
        waiting = asyncio.ensure_future(watch.next(progress_interval=2.0))
        await settle()
        store.clock.advance(1.5)
        store.apply(Put(b"other", b"1"), Put(b"other", b"2"))  # revisions 3, 4: no match
        await settle()
        assert not waiting.done()
        store.clock.advance(0.5)
        await settle()
        assert waiting.done()
        assert waiting.result() == WatchProgress(4)
        # With nothing new at all it reports its watermark again after the interval.
        again = asyncio.ensure_future(watch.next(progress_interval=1.0))
        await settle()
        assert not again.done()
        store.clock.advance(1.0)
        assert await again == WatchProgress(4)
        # A matching event comes before the interval ends: a batch, not progress.
        third = asyncio.ensure_future(watch.next(progress_interval=1.0))
        await settle()
        store.apply(Put(b"x", b"2"))
        assert await third == EventBatch(5, [put(b"x", b"2", 5, 2, version=2)])

    run(scenario)


def test_progress_never_claims_a_revision_the_store_has_not_reached() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"a", b"1"))  # revision 2
        watch = store.watch(start=10)
        waiting = asyncio.ensure_future(watch.next(progress_interval=1.0))
        await settle()
        store.clock.advance(1.0)
        outcome = await waiting
        assert isinstance(outcome, WatchProgress)
        assert outcome.revision <= store.machine.current_revision()

    run(scenario)


def test_closing_the_hub_ends_every_watch_with_stopping() -> None:
    async def scenario() -> None:
        store = Store()
        store.apply(Put(b"k", b"1"))
        waiting_watch = store.watch(start=0)
        waiting = asyncio.ensure_future(waiting_watch.next())
        lagging = store.watch(start=1)
        await settle()
        store.hub.close()
        stopped = await waiting
        assert isinstance(stopped, WatchCanceled)
        assert (stopped.code, stopped.revision, stopped.compact_revision) == ("stopping", 2, None)
        behind = await lagging.next()
        assert isinstance(behind, WatchCanceled)
        assert (behind.code, behind.revision) == ("stopping", 0)
        late = await store.watch().next()
        assert isinstance(late, WatchCanceled) and late.code == "stopping"

    run(scenario)


def test_max_watches_refuses_more_and_release_frees_a_slot() -> None:
    store = Store(WatchSettings(max_watches=2))
    first = store.watch()
    store.watch()
    with pytest.raises(TooManyWatches):
        store.watch()
    assert store.hub.active == 2
    first.release()
    first.release()  # releasing twice frees one slot, not two
    assert store.hub.active == 1
    store.watch()
    with pytest.raises(TooManyWatches):
        store.watch()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_watches"):
        WatchSettings(max_watches=0)
    with pytest.raises(ValueError, match="cache_revisions"):
        WatchSettings(cache_revisions=True)


# -- batching and the cache -----------------------------------------------------------------


def test_max_events_per_message_splits_only_at_revision_boundaries() -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(max_events_per_message=2))
        store.apply(Put(b"a", b"1"))  # revision 2: 1 event
        store.apply(Txn(success=[Put(b"a", b"2"), Put(b"b", b"2"), Put(b"c", b"2")]))  # 3
        store.apply(Put(b"d", b"1"), Put(b"e", b"1"))  # revisions 4, 5
        store.apply(Txn(success=[Put(b"a", b"3"), Put(b"b", b"3")]))  # revision 6: 2 events
        batches = await drain(store.watch())
        assert [
            (batch.revision, [event.kv.mod_revision for event in batch.events]) for batch in batches
        ] == [(3, [2, 3, 3, 3]), (5, [4, 5]), (6, [6, 6])]

    run(scenario)


def test_a_small_cache_gives_the_same_events_as_reading_the_history() -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(cache_revisions=3, max_events_per_message=4))
        machine = store.machine
        store.hub.reader = cached_reader = CountingReader(machine.app)
        uncached = WatchHub(
            plain_reader := CountingReader(machine.app),
            machine.current_revision,
            machine.compacted_revision,
            machine.oldest_watch_revision,
            settings=WatchSettings(cache_bytes=1, max_events_per_message=4),  # keeps nothing
            clock=store.clock,
        )
        commands = [
            data for data in random_workload(seed=21, count=160) if not _is_compaction(data)
        ]
        specs = [EVERYTHING, WatchSpec(b"a", b"b"), WatchSpec(b"\0", prev_kv=True)]
        # (step opened, start revision, spec number) -> the watch on each hub
        cached: dict[tuple[int, int, int], Watch] = {}
        plain: dict[tuple[int, int, int], Watch] = {}
        seen: dict[tuple[int, int, int], tuple[list[EventBatch], list[EventBatch]]] = {}

        async def read_all() -> None:
            for key, watch in cached.items():
                cached_batches, plain_batches = seen.setdefault(key, ([], []))
                cached_batches.extend(await drain(watch))
                plain_batches.extend(await drain(plain[key]))

        for step, data in enumerate(commands):
            store.apply_data(data)
            if step % 20 == 0:  # watches starting at several points, some in the cache
                for start in {1, max(1, machine.current_revision() - 2)}:
                    for number, spec in enumerate(specs):
                        cached[step, start, number] = store.hub.open(spec, start)
                        plain[step, start, number] = uncached.open(spec, start)
            if step % 7 == 0:
                await read_all()
                revisions = [item.revision for item in store.hub._cache]
                assert len(revisions) <= 3
                assert not revisions or revisions == list(range(revisions[0], revisions[-1] + 1))
        await read_all()
        for key, (cached_batches, plain_batches) in seen.items():
            assert cached_batches == plain_batches, key
        # The watches from revision 1 saw everything; a new one reads the same again.
        for number, spec in enumerate(specs):
            late = await drain(store.hub.open(spec, 1))
            assert events_of(late) == events_of(seen[0, 1, number][1])
        assert events_of(seen[0, 1, 0][0])
        # A cache smaller than what arrives between two reads helps little, but never
        # costs reads.
        assert cached_reader.read <= plain_reader.read

    run(scenario)


def test_watchers_that_keep_up_read_each_revision_from_the_history_once() -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(cache_revisions=16))
        store.hub.reader = reader = CountingReader(store.machine.app)
        watches = [store.watch(start=0) for _ in range(10)]
        store.apply(*(Put(b"k%d" % number, b"v") for number in range(5)))  # revisions 2..6
        batches = [await drain(watch) for watch in watches]
        assert all(watch_batches == batches[0] for watch_batches in batches)
        assert reader.read == 5

    run(scenario)


def test_the_cache_picks_up_again_after_every_watcher_skipped_past_it() -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(cache_revisions=16))
        store.hub.reader = reader = CountingReader(store.machine.app)
        early = store.watch(start=0)
        store.apply(Put(b"a", b"1"), Put(b"a", b"2"))  # revisions 2, 3: cached
        await drain(early)
        early.release()
        store.apply(Put(b"a", b"3"), Put(b"a", b"4"))  # revisions 4, 5: nobody reads them
        watches = [store.watch(start=0) for _ in range(5)]  # from revision 6
        store.apply(Put(b"b", b"1"), Put(b"b", b"2"))  # revisions 6, 7
        reader.read = 0
        for watch in watches:
            assert len(events_of(await drain(watch))) == 2
        assert reader.read == 2  # read once, then from the cache

    run(scenario)


class CountingReader(EventReader):
    """Counts the revisions read from the history."""

    read = 0

    def revisions(self, start: int, end: int) -> Iterator[RevisionEvents]:
        for item in super().revisions(start, end):
            self.read += 1
            yield item


def _is_compaction(data: bytes) -> bool:
    try:
        return isinstance(decode_command(data).request, Compact)
    except KvError:
        return False


# -- byte budgets ---------------------------------------------------------------------------

KIB = b"v" * 1000
EVENT = 1 + len(KIB) + 64  # event_bytes of a put of KIB under a one-byte key


def test_a_message_is_cut_to_the_byte_budget_at_revision_boundaries() -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(max_buffered_bytes=3 * EVENT - 1))
        watch = store.watch(start=0)
        store.apply(*(Put(key, KIB) for key in (b"a", b"b", b"c", b"d", b"e")))  # 2..6
        store.apply(Txn(success=[Put(key, KIB) for key in (b"f", b"g", b"h", b"i")]))  # 7
        cuts: list[tuple[list[int], int]] = []
        while watch.watermark < store.machine.current_revision():
            outcome = await watch.next()
            assert isinstance(outcome, EventBatch)
            assert outcome.buffered_bytes == sum(event_bytes(event) for event in outcome.events)
            # Held from hand-out until written (or the next call).
            assert watch.buffered_bytes == store.hub.buffered_bytes == outcome.buffered_bytes
            revisions = sorted({event.kv.mod_revision for event in outcome.events})
            cuts.append((revisions, outcome.buffered_bytes))
            watch.written()
            assert watch.buffered_bytes == store.hub.buffered_bytes == 0
        # Two events fit, three do not; the txn's revision, over the budget alone, goes
        # alone and whole.
        assert cuts == [([2, 3], 2 * EVENT), ([4, 5], 2 * EVENT), ([6], EVENT), ([7], 4 * EVENT)]

    run(scenario)


def test_previous_values_count_and_are_read_once_for_every_watcher() -> None:
    async def scenario() -> None:
        store = Store()
        store.hub.reader = reader = CountingPreviousReader(store.machine.app)
        store.apply(Put(b"k", KIB))
        watches = [store.watch(WatchSpec(b"k", prev_kv=True), start=0) for _ in range(5)]
        store.apply(Put(b"k", b"w" * 2000))
        size = (1 + 2000 + 64) + (1 + len(KIB))  # the event, and the key's previous value
        for watch in watches:
            outcome = await watch.next()
            assert isinstance(outcome, EventBatch)
            (event,) = outcome.events
            assert event.prev_kv is not None and event.prev_kv.value == KIB
            assert outcome.buffered_bytes == size
        assert store.hub.buffered_bytes == 5 * size
        assert reader.previous_calls == 1

    run(scenario)


def test_over_the_total_budget_the_watch_holding_the_most_is_ended_too_slow() -> None:
    async def scenario() -> None:
        store = Store(
            WatchSettings(max_buffered_bytes=3 * EVENT, max_total_buffered_bytes=5 * EVENT)
        )
        first, second, third = (store.watch(start=0) for _ in range(3))
        store.apply(Put(b"a", KIB), Put(b"b", KIB))  # revisions 2, 3
        for watch in (first, second):
            assert isinstance(await watch.next(), EventBatch)  # held: not written yet
        ended = first.ended()
        assert not ended.done()
        # The third batch takes the total to 6 events: the oldest of the equal holders
        # ends, at once (its consumer may be blocked writing), its bytes forgotten.
        assert isinstance(await third.next(), EventBatch)
        assert ended.done()
        assert (ended.result().code, ended.result().revision) == ("too_slow", 3)
        assert "watch_max_total_buffered_bytes" in ended.result().message
        assert store.hub.buffered_bytes == 4 * EVENT and first.buffered_bytes == 0
        assert store.hub.total_budget_cancels == 1
        assert await first.next() == ended.result()
        # A watch whose own batch is the largest ends before it hands it out: its
        # watermark does not move past what it never delivered.
        store.apply(Txn(success=[Put(key, KIB) for key in (b"c", b"d", b"e", b"f")]))  # 4
        late = store.watch(start=4)
        canceled = await late.next()
        assert isinstance(canceled, WatchCanceled)
        assert (canceled.code, canceled.revision, late.watermark) == ("too_slow", 3, 3)
        assert store.hub.buffered_bytes == 4 * EVENT and store.hub.total_budget_cancels == 2

    run(scenario)


def test_the_largest_holder_is_found_among_many_watches_that_wrote_and_read_again() -> None:
    async def scenario() -> None:
        store = Store(
            WatchSettings(max_buffered_bytes=8 * EVENT, max_total_buffered_bytes=8 * EVENT)
        )
        small = [store.watch(WatchSpec(b"s"), start=0) for _ in range(100)]
        large = store.watch(WatchSpec(b"l", b"o"), start=0)
        for _ in range(5):  # 500 charges, each written: stale entries, rebuilds
            store.apply(Put(b"s", KIB))
            for watch in small:
                assert isinstance(await watch.next(), EventBatch)
                watch.written()
        store.apply(Txn(success=[Put(key, KIB) for key in (b"l", b"m", b"n")]))
        assert isinstance(await large.next(), EventBatch)  # holds 3 events, not written
        assert len(store.hub._holders) <= 2 * len(small) + 64 + 1
        store.apply(Put(b"s", KIB))
        for watch in small[:5]:
            assert isinstance(await watch.next(), EventBatch)  # 3 + 5 = 8 events: fits
        assert store.hub.total_budget_cancels == 0
        assert isinstance(await small[5].next(), EventBatch)  # 9: the largest one ends
        assert large.ended().done() and store.hub.total_budget_cancels == 1
        assert store.hub.buffered_bytes == 6 * EVENT

    run(scenario)


def test_closing_the_hub_ends_a_watch_whose_consumer_is_busy_writing() -> None:
    async def scenario() -> None:
        store = Store()
        watch = store.watch(start=0)
        store.apply(Put(b"a", KIB))
        assert isinstance(await watch.next(), EventBatch)  # being written
        ended = watch.ended()
        store.hub.close("removed", "the node was removed")
        assert ended.done()
        canceled = ended.result()
        assert (canceled.code, canceled.revision, canceled.message) == (
            "removed",
            2,
            "the node was removed",
        )
        assert watch.buffered_bytes == store.hub.buffered_bytes == 0
        assert await watch.next() == canceled
        # The first reason stays, for the watches opened later too.
        store.hub.close()
        late = await store.watch().next()
        assert isinstance(late, WatchCanceled) and late.code == "removed"

    run(scenario)


def test_a_released_watch_leaves_nothing_behind_in_the_hub() -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(max_buffered_bytes=EVENT, max_total_buffered_bytes=EVENT))
        watches = [store.watch(WatchSpec(b"\0", b"\0", prev_kv=True), start=0) for _ in range(3)]
        store.apply(Put(b"a", KIB), Put(b"a", KIB))
        for watch in watches:
            await watch.next()  # holding, or ended at the total budget
        references = [weakref.ref(watch) for watch in watches]
        for watch in watches:
            watch.release()
        del watch, watches
        gc.collect()
        assert store.hub.active == 0 and store.hub.buffered_bytes == 0
        assert [reference() for reference in references] == [None, None, None]

    run(scenario)


def test_byte_budgets_are_validated() -> None:
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        WatchSettings(max_buffered_bytes=0)
    with pytest.raises(ValueError, match="at least max_buffered_bytes"):
        WatchSettings(max_buffered_bytes=2 << 20, max_total_buffered_bytes=1 << 20)


class CountingPreviousReader(EventReader):
    """Counts the previous values looked up in the history."""

    previous_calls = 0

    def previous(self, key: bytes, revision: int) -> MvccKeyValue | None:
        self.previous_calls += 1
        return super().previous(key, revision)


# -- snapshot restores ----------------------------------------------------------------------


def test_after_a_restore_a_watch_continues_from_the_new_state() -> None:
    async def scenario() -> None:
        target, source = Store(), Store()
        shared = [Put(b"a", b"1"), Put(b"b", b"1")]
        target.apply(*shared)
        source.apply(*shared)
        watch = target.watch()
        assert [event.kv.key for event in events_of(await drain(watch))] == [b"a", b"b"]
        waiting = asyncio.ensure_future(target.watch(start=0).next())
        await settle()
        source.apply(Put(b"c", b"1"), DeleteRange(b"a"), Put(b"b", b"2"))  # revisions 4..6
        target.machine.restore(source.machine.snapshot(), source.index, 1)
        assert target.hub._cache == type(target.hub._cache)()  # the cache was reset
        expected = await drain(source.watch(start=4))
        assert [event.kv.mod_revision for event in events_of(expected)] == [4, 5, 6]
        # The waiting watch woke up with the restored state's new revisions, and the
        # other one carries on from its watermark: neither sees revisions 2..3 again.
        assert await waiting == expected[0]
        assert await drain(watch) == expected

    run(scenario)


def test_after_a_restore_past_its_revision_a_watch_is_compacted() -> None:
    async def scenario() -> None:
        target, source = Store(), Store()
        target.apply(Put(b"a", b"1"))
        source.apply(Put(b"a", b"1"))
        watch = target.watch()
        await drain(watch)
        source.apply(Put(b"a", b"2"), Put(b"a", b"3"), Compact(4))
        target.machine.restore(source.machine.snapshot(), source.index, 1)
        canceled = await watch.next()
        assert isinstance(canceled, WatchCanceled)
        assert (canceled.code, canceled.revision, canceled.compact_revision) == ("compacted", 2, 4)

    run(scenario)


# -- property: a watch of everything reconstructs the store ---------------------------------


def reconstruct(events: list[Event]) -> dict[bytes, MvccKeyValue]:
    state: dict[bytes, MvccKeyValue] = {}
    for event in events:
        if event.type == "put":
            state[event.kv.key] = event.kv
        else:
            del state[event.kv.key]
    return state


def check_revisions(batches: list[EventBatch], current: int) -> None:
    """Batches end on increasing watermarks; each event's revision is above the previous
    batch's watermark and at most its own; every revision 2..current appears."""
    previous = 1
    seen: list[int] = []
    for batch in batches:
        revisions = [event.kv.mod_revision for event in batch.events]
        assert revisions == sorted(revisions)
        assert previous < revisions[0] and revisions[-1] == batch.revision
        previous = batch.revision
        seen.extend(revisions)
    assert sorted(set(seen)) == list(range(2, current + 1))


@pytest.mark.parametrize("seed", range(6))
def test_a_live_watch_of_everything_rebuilds_the_final_state(seed: int) -> None:
    """Compactions included: the watch keeps up (it drains after every entry), so it is
    never behind a compaction."""

    async def scenario() -> None:
        store = Store(WatchSettings(max_events_per_message=5, cache_revisions=8))
        watch = store.watch(WatchSpec(b"\0", b"\0", prev_kv=True), start=1)
        batches: list[EventBatch] = []
        for data in random_workload(seed=seed, count=300):
            store.apply_data(data)
            batches.extend(await drain(watch))
        events = events_of(batches)
        current = {kv.key: kv for kv in store.machine.range(Range(b"\0", b"\0")).kvs}
        assert reconstruct(events) == current
        check_revisions(batches, store.machine.current_revision())
        # prev_kv agrees with the stream itself.
        state: dict[bytes, MvccKeyValue] = {}
        for event in events:
            assert event.prev_kv == state.get(event.kv.key)
            if event.type == "put":
                state[event.kv.key] = event.kv
            else:
                del state[event.kv.key]

    run(scenario)


@pytest.mark.parametrize("seed", range(6, 10))
def test_a_late_watch_from_revision_1_replays_what_a_live_one_saw(seed: int) -> None:
    async def scenario() -> None:
        store = Store(WatchSettings(max_events_per_message=7, cache_revisions=4))
        live = store.watch(WatchSpec(b"\0", b"\0", prev_kv=True))
        live_batches: list[EventBatch] = []
        for data in random_workload(seed=seed, count=250):
            if _is_compaction(data):
                continue
            store.apply_data(data)
            live_batches.extend(await drain(live))
        late_batches = await drain(store.watch(WatchSpec(b"\0", b"\0", prev_kv=True)))
        assert events_of(late_batches) == events_of(live_batches)
        check_revisions(late_batches, store.machine.current_revision())
        current = {kv.key: kv for kv in store.machine.range(Range(b"\0", b"\0")).kvs}
        assert reconstruct(events_of(late_batches)) == current

    run(scenario)
