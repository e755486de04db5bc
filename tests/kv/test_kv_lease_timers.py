"""LeaseTimers: each lease's countdown on this node's clock (a ManualClock here)."""

from __future__ import annotations

import math
import random

from raftkv.kv.lease_timers import LeaseTimer, LeaseTimers
from raftkv.raft.clock import ManualClock


def timers(start: float = 100.0) -> tuple[ManualClock, LeaseTimers]:
    clock = ManualClock(start)
    return clock, LeaseTimers(clock.now)


def expired_ids(lease_timers: LeaseTimers, limit: int = 1000) -> list[int]:
    return [lease_id for lease_id, _ in lease_timers.expired(limit)]


def test_set_starts_a_countdown_from_now() -> None:
    clock, lease_timers = timers()
    lease_timers.set(7, 2500, ttl=5, renewed_index=11)
    assert lease_timers.get(7) == LeaseTimer(deadline=102.5, ttl=5, renewed_index=11)
    assert 7 in lease_timers and len(lease_timers) == 1
    assert lease_timers.remaining_s(7) == 2.5
    assert lease_timers.remaining_whole_s(7) == 2
    clock.advance(2)
    assert lease_timers.remaining_s(7) == 0.5
    assert lease_timers.remaining_whole_s(7) == 0
    clock.advance(10)
    assert lease_timers.remaining_s(7) == 0.0  # never negative
    assert lease_timers.remaining_whole_s(7) == 0


def test_unknown_leases_have_no_remaining_time() -> None:
    _, lease_timers = timers()
    assert lease_timers.get(1) is None
    assert lease_timers.remaining_s(1) is None
    assert lease_timers.remaining_whole_s(1) is None
    assert 1 not in lease_timers
    assert lease_timers.expired(10) == []
    assert lease_timers.remaining_all_ms() == []


def test_expired_returns_only_past_deadlines_earliest_first() -> None:
    clock, lease_timers = timers()
    lease_timers.set(1, 3000, ttl=3, renewed_index=1)
    lease_timers.set(2, 1000, ttl=1, renewed_index=2)
    lease_timers.set(3, 5000, ttl=5, renewed_index=3)
    lease_timers.set(4, 2000, ttl=2, renewed_index=4)
    assert expired_ids(lease_timers) == []
    clock.advance(0.999)
    assert expired_ids(lease_timers) == []
    clock.advance(0.001)  # exactly at lease 2's deadline: expired
    assert expired_ids(lease_timers) == [2]
    clock.advance(2)
    assert expired_ids(lease_timers) == [2, 4, 1]
    # They stay until removed (their expiry has not applied yet), with their renewal.
    assert lease_timers.expired(10)[0] == (2, LeaseTimer(101.0, 1, 2))
    lease_timers.remove(2)
    assert expired_ids(lease_timers) == [4, 1]
    clock.advance(10)
    assert expired_ids(lease_timers) == [4, 1, 3]


def test_expired_respects_the_limit_and_keeps_the_rest_for_later() -> None:
    clock, lease_timers = timers()
    for lease_id in range(1, 11):
        lease_timers.set(lease_id, 100 * lease_id, ttl=1, renewed_index=lease_id)
    clock.advance(5)
    assert expired_ids(lease_timers, limit=3) == [1, 2, 3]
    assert expired_ids(lease_timers, limit=3) == [1, 2, 3]  # nothing was consumed
    for lease_id in (1, 2, 3):
        lease_timers.remove(lease_id)
    assert expired_ids(lease_timers, limit=3) == [4, 5, 6]
    assert expired_ids(lease_timers) == [4, 5, 6, 7, 8, 9, 10]


def test_a_renewal_makes_the_old_deadline_stale() -> None:
    clock, lease_timers = timers()
    lease_timers.set(1, 1000, ttl=1, renewed_index=5)
    lease_timers.set(2, 1250, ttl=1, renewed_index=6)
    clock.advance(0.5)
    lease_timers.set(1, 1000, ttl=1, renewed_index=9)  # a keep-alive applied: now + 1 s
    clock.advance(0.625)  # past lease 1's old deadline, before its new one
    assert expired_ids(lease_timers) == []
    clock.advance(0.375)
    assert lease_timers.expired(10) == [
        (2, LeaseTimer(101.25, 1, 6)),
        (1, LeaseTimer(101.5, 1, 9)),
    ]


def test_a_removed_lease_is_never_expired() -> None:
    clock, lease_timers = timers()
    lease_timers.set(1, 1000, ttl=1, renewed_index=1)
    lease_timers.remove(1)
    lease_timers.remove(1)  # removing twice is harmless
    assert 1 not in lease_timers and len(lease_timers) == 0
    clock.advance(5)
    assert lease_timers.expired(10) == []
    lease_timers.set(1, 1000, ttl=1, renewed_index=3)  # granted again
    assert expired_ids(lease_timers) == []
    clock.advance(1)
    assert lease_timers.expired(10) == [(1, LeaseTimer(106.0, 1, 3))]


def test_clear_forgets_every_lease() -> None:
    clock, lease_timers = timers()
    lease_timers.set(1, 1000, ttl=1, renewed_index=1)
    lease_timers.set(2, 1000, ttl=1, renewed_index=2)
    lease_timers.clear()
    clock.advance(5)
    assert len(lease_timers) == 0
    assert lease_timers.expired(10) == []


def test_remaining_all_ms_is_what_a_checkpoint_records() -> None:
    clock, lease_timers = timers()
    lease_timers.set(1, 4000, ttl=4, renewed_index=10)
    lease_timers.set(2, 1000, ttl=1, renewed_index=12)
    clock.advance(1.25)
    assert sorted(lease_timers.remaining_all_ms()) == [(1, 2750, 10), (2, 0, 12)]
    lease_timers.set(2, 1000, ttl=1, renewed_index=20)
    assert sorted(lease_timers.remaining_all_ms()) == [(1, 2750, 10), (2, 1000, 20)]


def test_a_lease_renewed_twice_at_the_same_instant_is_expired_once() -> None:
    clock, lease_timers = timers()
    lease_timers.set(1, 1000, ttl=1, renewed_index=5)  # grant and keep-alive applied in the
    lease_timers.set(1, 1000, ttl=1, renewed_index=6)  # same batch: same now(), same deadline
    lease_timers.set(2, 1500, ttl=1, renewed_index=7)
    clock.advance(2)
    assert expired_ids(lease_timers, limit=2) == [1, 2]


def test_many_renewals_keep_the_heap_bounded_and_the_answers_right() -> None:
    clock, lease_timers = timers()
    rng = random.Random(4)
    leases = range(1, 21)
    renewals: dict[int, int] = {}
    for step in range(5000):
        lease_id = rng.choice(leases)
        lease_timers.set(lease_id, rng.randint(1, 3000), ttl=3, renewed_index=step)
        renewals[lease_id] = step
        # Not a rational multiple of a millisecond: no two renewals of a lease compute the
        # same deadline (the case the test above pins).
        clock.advance(math.pi * 1e-4)
        # Stale entries are dropped once they are most of the heap.
        assert len(lease_timers._heap) <= 2 * len(lease_timers) + 65
    # Every lease's current timer, as the reference.
    expected = sorted(
        (timer.deadline, lease_id)
        for lease_id in leases
        if (timer := lease_timers.get(lease_id)) is not None
    )
    assert {lease_id: timer.renewed_index for lease_id, timer in lease_timers.expired(100)} == {
        lease_id: renewals[lease_id] for deadline, lease_id in expected if deadline <= clock.now()
    }
    clock.advance(10)
    found = lease_timers.expired(100)
    assert [(timer.deadline, lease_id) for lease_id, timer in found] == expected
    assert [timer.renewed_index for _, timer in found] == [renewals[i] for _, i in expected]
