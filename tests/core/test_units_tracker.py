"""Flow control and follower progress (`raftkv.raft.core.tracker`), modelled on etcd-io/raft's
`tracker/inflights_test.go` and `tracker/progress_test.go`."""

from __future__ import annotations

import pytest

from raftkv.raft.core.errors import InvariantViolation
from raftkv.raft.core.quorum import JointConfig, MajorityConfig, VoteResult
from raftkv.raft.core.tracker import Inflights, Progress, ProgressTracker, ReplicationState
from raftkv.raft.core.types import ConfState, NodeId

PROBE = ReplicationState.PROBE
REPLICATE = ReplicationState.REPLICATE
SNAPSHOT = ReplicationState.SNAPSHOT


def make_progress(
    match: int,
    next_index: int,
    state: ReplicationState = PROBE,
    *,
    pending_snapshot: int = 0,
    max_count: int = 256,
    max_bytes: int = 0,
) -> Progress:
    return Progress(
        match=match,
        next=next_index,
        inflights=Inflights(max_count, max_bytes),
        state=state,
        pending_snapshot=pending_snapshot,
    )


def inflight_state(inflights: Inflights) -> tuple[int, int, bool]:
    return inflights.count(), inflights.bytes, inflights.full()


# -- Inflights -------------------------------------------------------------------------------


def test_inflights_add_counts_messages_and_bytes() -> None:
    inflights = Inflights(10, 0)
    for index in range(1, 6):
        inflights.add(index, 100)
    assert inflights.count() == 5
    assert inflights.bytes == 500
    assert not inflights.full()


def test_inflights_free_to_frees_in_order() -> None:
    inflights = Inflights(10, 0)
    for index in range(10):
        inflights.add(index, 10 + index)
    inflights.free_to(0)
    assert inflight_state(inflights) == (9, sum(range(11, 20)), False)
    inflights.free_to(4)
    assert inflight_state(inflights) == (5, sum(range(15, 20)), False)
    # Freeing below the oldest inflight message (a stale acknowledgement) does nothing.
    inflights.free_to(2)
    assert inflight_state(inflights) == (5, sum(range(15, 20)), False)
    inflights.free_to(8)
    assert inflight_state(inflights) == (1, 19, False)
    # Beyond the newest frees everything.
    inflights.free_to(100)
    assert inflight_state(inflights) == (0, 0, False)


def test_inflights_free_to_between_indexes() -> None:
    inflights = Inflights(10, 0)
    for index in (3, 7, 12):
        inflights.add(index, 1)
    # 10 acknowledges the message ending at 7 (and 3) but not the one ending at 12.
    inflights.free_to(10)
    assert inflight_state(inflights) == (1, 1, False)


@pytest.mark.parametrize(
    ("max_count", "max_bytes", "full_at", "free_le", "again_at"),
    [
        # etcd-io/raft TestInflightsFull; message i carries 100 + i bytes.
        (1, 0, 1, 1, 2),  # single entry
        (1, 10, 1, 1, 2),  # single entry that overflows the byte budget
        (15, 0, 15, 6, 22),  # count limit only
        (8, 400, 4, 2, 7),  # the fourth message overshoots the byte budget
        (8, 406, 4, 3, 8),  # exactly at the byte budget is full
        (15, 408, 5, 1, 6),  # a larger overshoot
    ],
)
def test_inflights_full_by_count_and_bytes(
    max_count: int, max_bytes: int, full_at: int, free_le: int, again_at: int
) -> None:
    inflights = Inflights(max_count, max_bytes)

    def add_until_full(begin: int, end: int) -> None:
        for index in range(begin, end):
            assert not inflights.full(), f"full at {index}, want {end}"
            inflights.add(index, 100 + index)
        assert inflights.full()

    add_until_full(0, full_at)
    inflights.free_to(free_le)
    add_until_full(full_at, again_at)


def test_inflights_with_zero_capacity_is_always_full() -> None:
    inflights = Inflights(0, 0)
    assert inflights.full()
    with pytest.raises(InvariantViolation):
        inflights.add(1, 1)


def test_inflights_add_when_full_by_count_raises_and_changes_nothing() -> None:
    inflights = Inflights(3, 0)
    for index in (1, 2, 3):
        inflights.add(index, 5)
    before = inflight_state(inflights)
    assert before == (3, 15, True)
    with pytest.raises(InvariantViolation):
        inflights.add(4, 5)
    assert inflight_state(inflights) == before


def test_inflights_add_when_full_by_bytes_raises_and_changes_nothing() -> None:
    inflights = Inflights(100, 50)
    inflights.add(1, 30)
    assert not inflights.full()
    inflights.add(2, 30)  # 60 >= 50: full by bytes with one message sent over the budget
    assert inflights.full()
    with pytest.raises(InvariantViolation):
        inflights.add(3, 1)
    assert inflight_state(inflights) == (2, 60, True)
    inflights.free_to(1)
    assert inflight_state(inflights) == (1, 30, False)


def test_inflights_fill_by_entries_and_free_them_with_their_messages() -> None:
    # The window of a follower catching up: each message's entries count, however small.
    inflights = Inflights(100, 0, max_entries=10)
    inflights.add(4, 40, entries=4)
    inflights.add(9, 50, entries=5)
    assert not inflights.full()
    inflights.add(10, 10, entries=1)
    assert inflights.full()
    with pytest.raises(InvariantViolation):
        inflights.add(11, 1, entries=1)
    assert (inflights.entries, inflights.bytes) == (10, 100)
    inflights.free_to(4)
    assert (inflights.entries, inflights.bytes, inflights.full()) == (6, 60, False)
    inflights.reset()
    assert (inflights.entries, inflights.bytes) == (0, 0)


def test_a_replicating_progress_counts_the_entries_it_sends() -> None:
    progress = Progress(match=3, next=4, inflights=Inflights(100, 0, max_entries=8))
    progress.become_replicate()
    progress.sent_entries(5, 50)
    assert (progress.next, progress.inflights.entries, progress.is_paused()) == (9, 5, False)
    progress.sent_entries(3, 30)
    assert (progress.next, progress.inflights.entries, progress.is_paused()) == (12, 8, True)
    progress.maybe_update(8)
    progress.inflights.free_to(8)
    assert progress.inflights.entries == 3


@pytest.mark.parametrize("index", [5, 4, 0])
def test_inflights_index_must_increase(index: int) -> None:
    inflights = Inflights(10, 0)
    inflights.add(5, 1)
    with pytest.raises(InvariantViolation):
        inflights.add(index, 1)
    assert inflight_state(inflights) == (1, 1, False)


def test_inflights_reset_empties() -> None:
    inflights = Inflights(2, 0)
    inflights.add(1, 7)
    inflights.add(2, 7)
    assert inflights.full()
    inflights.reset()
    assert inflight_state(inflights) == (0, 0, False)
    # After a reset any index may be added again.
    inflights.add(1, 3)
    assert inflight_state(inflights) == (1, 3, False)


# -- Progress: state transitions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "expected_next"),
    [
        (make_progress(1, 5, REPLICATE), 2),
        # The snapshot was applied: the follower has at least its index.
        (make_progress(1, 5, SNAPSHOT, pending_snapshot=10), 11),
        # The snapshot failed (pending reset to 0): probe from match.
        (make_progress(1, 5, SNAPSHOT, pending_snapshot=0), 2),
        # A pending snapshot older than match does not move next back.
        (make_progress(20, 21, SNAPSHOT, pending_snapshot=10), 21),
        (make_progress(3, 9, PROBE), 4),
    ],
)
def test_become_probe(progress: Progress, expected_next: int) -> None:
    progress.flow_paused = True
    progress.inflights.add(7, 1)
    match_before = progress.match
    progress.become_probe()
    assert progress.state is PROBE
    assert progress.next == expected_next
    assert progress.match == match_before
    assert progress.pending_snapshot == 0
    assert not progress.flow_paused
    assert progress.inflights.count() == 0


def test_become_replicate() -> None:
    progress = make_progress(1, 5, PROBE)
    progress.flow_paused = True
    progress.become_replicate()
    assert (progress.state, progress.match, progress.next) == (REPLICATE, 1, 2)
    assert not progress.flow_paused


def test_become_snapshot() -> None:
    progress = make_progress(1, 5, REPLICATE)
    progress.inflights.add(4, 1)
    progress.become_snapshot(10)
    assert (progress.state, progress.match, progress.pending_snapshot) == (SNAPSHOT, 1, 10)
    assert progress.inflights.count() == 0


@pytest.mark.parametrize(
    ("update", "expected_match", "expected_next", "expected_updated"),
    [
        (2, 3, 5, False),  # never decrease match or next
        (3, 3, 5, False),  # the same match: nothing moves
        (4, 4, 5, True),  # increase match, next stays ahead
        (5, 5, 6, True),  # increase match and next
        (9, 9, 10, True),
    ],
)
def test_maybe_update(
    update: int, expected_match: int, expected_next: int, expected_updated: bool
) -> None:
    progress = make_progress(3, 5, PROBE)
    progress.flow_paused = True
    assert progress.maybe_update(update) is expected_updated
    assert (progress.match, progress.next) == (expected_match, expected_next)
    # An acknowledgement that moves match answers the outstanding probe.
    assert progress.flow_paused is (not expected_updated)


@pytest.mark.parametrize(
    ("state", "match", "next_index", "rejected", "hint", "expected", "expected_next"),
    [
        # etcd-io/raft TestProgressMaybeDecr.
        # Replicate: a rejection at or below match is stale.
        (REPLICATE, 5, 10, 5, 5, False, 10),
        (REPLICATE, 5, 10, 4, 4, False, 10),
        # Replicate: a fresh rejection goes straight back to match + 1.
        (REPLICATE, 5, 10, 9, 9, True, 6),
        (REPLICATE, 5, 10, 9, 2, True, 6),
        # Probe: only the answer to the probe at next - 1 counts.
        (PROBE, 0, 0, 0, 0, False, 0),
        (PROBE, 0, 10, 5, 5, False, 10),
        (PROBE, 0, 10, 10, 5, False, 10),
        # Probe: fresh, decrement by one (hint at or above the rejected index).
        (PROBE, 0, 10, 9, 9, True, 9),
        (PROBE, 0, 2, 1, 1, True, 1),
        # Probe: never below 1 (etcd answers True, to probe again at once; nothing
        # changed, so here that waits for the next heartbeat, as below).
        (PROBE, 0, 1, 0, 0, False, 1),
        # Probe: a follower refusing the entry at its own acknowledged match (it lost
        # entries it acknowledged) would be refused again at once, forever: no resend
        # now (not in etcd).
        (PROBE, 5, 6, 5, 5, False, 6),
        (PROBE, 5, 6, 5, 0, False, 6),
        # Probe: jump to the follower's hint + 1 ...
        (PROBE, 0, 10, 9, 2, True, 3),
        (PROBE, 0, 10, 9, 0, True, 1),
        # ... but never at or below match.
        (PROBE, 5, 10, 9, 2, True, 6),
    ],
)
def test_maybe_decrement_to(
    *,
    state: ReplicationState,
    match: int,
    next_index: int,
    rejected: int,
    hint: int,
    expected: bool,
    expected_next: int,
) -> None:
    progress = make_progress(match, next_index, state)
    assert progress.maybe_decrement_to(rejected, hint) is expected
    assert progress.next == expected_next
    assert progress.match == match
    assert progress.state is state


def test_fresh_probe_rejection_unpauses_stale_does_not() -> None:
    progress = make_progress(0, 10, PROBE)
    progress.flow_paused = True
    assert progress.is_paused()
    # Stale: an answer to an older probe.
    assert not progress.maybe_decrement_to(5, 5)
    assert progress.is_paused()
    # Fresh: the answer to the probe at next - 1; the leader may probe again.
    assert progress.maybe_decrement_to(9, 9)
    assert not progress.is_paused()


# -- Progress: pausing and sending -----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "flow_paused", "expected"),
    [
        (PROBE, False, False),
        (PROBE, True, True),
        (REPLICATE, False, False),
        (REPLICATE, True, True),  # the window is (or was) full
        (SNAPSHOT, False, True),
        (SNAPSHOT, True, True),
    ],
)
def test_is_paused_per_state(state: ReplicationState, flow_paused: bool, expected: bool) -> None:
    progress = make_progress(0, 1, state)
    progress.flow_paused = flow_paused
    assert progress.is_paused() is expected


def test_replicate_pauses_when_inflights_full() -> None:
    progress = make_progress(0, 1, REPLICATE, max_count=2)
    progress.sent_entries(1, 10)
    assert not progress.is_paused()
    progress.sent_entries(1, 10)
    assert progress.is_paused()
    assert progress.maybe_update(1)
    progress.inflights.free_to(1)
    assert not progress.is_paused()


def test_replicate_pauses_when_inflight_bytes_full() -> None:
    progress = make_progress(0, 1, REPLICATE, max_count=100, max_bytes=25)
    progress.sent_entries(3, 20)
    assert not progress.is_paused()
    progress.sent_entries(2, 20)
    assert progress.is_paused()


def test_sent_entries_in_replicate_advances_next_optimistically() -> None:
    progress = make_progress(4, 5, REPLICATE)
    progress.sent_entries(4, 40)
    assert (progress.match, progress.next) == (4, 9)
    assert inflight_state(progress.inflights) == (1, 40, False)
    progress.sent_entries(2, 5)
    assert (progress.match, progress.next) == (4, 11)
    assert inflight_state(progress.inflights) == (2, 45, False)


def test_sent_empty_append_in_replicate_changes_nothing() -> None:
    progress = make_progress(4, 5, REPLICATE)
    progress.sent_entries(0, 0)
    assert (progress.next, progress.inflights.count(), progress.flow_paused) == (5, 0, False)


def test_a_full_window_unpaused_by_a_sign_of_life_pauses_again_after_one_empty_append() -> None:
    # Regression: every inflight APPEND was lost; a heartbeat response clears the pause so
    # the leader sends one empty APPEND, whose answer frees or resets the window.
    progress = make_progress(0, 1, REPLICATE, max_count=1)
    progress.sent_entries(1, 10)
    assert progress.is_paused()
    progress.flow_paused = False  # what a heartbeat response does
    assert not progress.is_paused()
    progress.sent_entries(0, 0)
    assert progress.is_paused()
    assert progress.next == 2


def test_sent_empty_probe_does_not_pause() -> None:
    progress = make_progress(4, 5, PROBE)
    progress.sent_entries(0, 0)
    assert not progress.is_paused()


def test_sent_entries_in_probe_pauses_without_moving_next() -> None:
    progress = make_progress(4, 5, PROBE)
    progress.sent_entries(4, 40)
    assert progress.next == 5
    assert progress.flow_paused
    assert progress.is_paused()
    assert progress.inflights.count() == 0


def test_sent_entries_in_snapshot_is_an_invariant_violation() -> None:
    progress = make_progress(4, 5, SNAPSHOT, pending_snapshot=10)
    with pytest.raises(InvariantViolation):
        progress.sent_entries(8, 40)
    assert (progress.state, progress.next, progress.pending_snapshot) == (SNAPSHOT, 5, 10)


# -- ProgressTracker -------------------------------------------------------------------------


def make_tracker(
    incoming: tuple[int, ...], outgoing: tuple[int, ...] = (), learners: tuple[int, ...] = ()
) -> ProgressTracker:
    tracker = ProgressTracker(max_inflight_messages=16, max_inflight_bytes=0)
    tracker.voters = JointConfig(
        MajorityConfig(frozenset(NodeId(n) for n in incoming)),
        MajorityConfig(frozenset(NodeId(n) for n in outgoing)),
    )
    tracker.learners = frozenset(NodeId(n) for n in learners)
    for node_id in set(incoming) | set(outgoing) | set(learners):
        tracker.progress[NodeId(node_id)] = make_progress(0, 1)
        tracker.progress[NodeId(node_id)].is_learner = node_id in learners
    return tracker


def test_tracker_committed_uses_matches_of_voters_only() -> None:
    tracker = make_tracker((1, 2, 3), learners=(4,))
    for node_id, match in {1: 7, 2: 5, 3: 2, 4: 100}.items():
        tracker.progress[NodeId(node_id)].match = match
    assert tracker.committed() == 5


def test_tracker_committed_in_joint_needs_both_halves() -> None:
    tracker = make_tracker((1, 2, 3), outgoing=(4, 5, 6))
    for node_id, match in {1: 9, 2: 9, 3: 9, 4: 4, 5: 3, 6: 1}.items():
        tracker.progress[NodeId(node_id)].match = match
    assert tracker.committed() == 3


def test_tracker_quorum_active_ignores_learners() -> None:
    tracker = make_tracker((1, 2, 3), learners=(4, 5))
    for node_id in (1, 4, 5):
        tracker.progress[NodeId(node_id)].recent_active = True
    assert not tracker.quorum_active()
    tracker.progress[NodeId(2)].recent_active = True
    assert tracker.quorum_active()


def test_tracker_first_vote_counts_and_tally() -> None:
    tracker = make_tracker((1, 2, 3))
    tracker.record_vote(NodeId(1), True)
    tracker.record_vote(NodeId(2), False)
    tracker.record_vote(NodeId(2), True)  # a duplicate answer in the same term is ignored
    assert tracker.tally_votes() == (1, 1, VoteResult.PENDING)
    tracker.record_vote(NodeId(3), True)
    assert tracker.tally_votes() == (2, 1, VoteResult.WON)
    tracker.reset_votes()
    assert tracker.tally_votes() == (0, 0, VoteResult.PENDING)


def test_tracker_conf_state_and_singleton() -> None:
    tracker = make_tracker((1, 2), outgoing=(1,), learners=(3,))
    assert tracker.conf_state() == ConfState(
        voters=frozenset({NodeId(1), NodeId(2)}),
        learners=frozenset({NodeId(3)}),
        voters_outgoing=frozenset({NodeId(1)}),
    )
    assert not tracker.is_singleton()
    assert make_tracker((1,)).is_singleton()
    assert not make_tracker((1,), outgoing=(1, 2)).is_singleton()
