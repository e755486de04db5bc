"""The linearizability checker on known-good and known-bad key-value histories."""

from __future__ import annotations

import random

import pytest

from raftkv.testing.linearizability import (
    CheckLimitExceeded,
    Operation,
    OpKind,
    cas,
    check_history,
    delete,
    get,
    put,
    with_unknown_outcome,
)

# -- linearizable histories ---------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check_history([])
    assert result.ok
    assert result.describe() == "linearizable: 0 operations on 0 keys"


def test_read_of_absent_key_returns_none() -> None:
    assert check_history([get("x", None, 0, 1)]).ok


def test_sequential_puts_and_gets() -> None:
    history = [
        put("x", 1, 0, 1),
        get("x", 1, 2, 3),
        put("x", 2, 4, 5),
        get("x", 2, 6, 7),
    ]
    assert check_history(history).ok


def test_concurrent_read_may_see_either_value() -> None:
    # The read overlaps the second write: both the old and the new value are allowed.
    for seen in (1, 2):
        history = [
            put("x", 1, 0, 1),
            put("x", 2, 2, 10),
            get("x", seen, 3, 4),
        ]
        assert check_history(history).ok, seen


def test_operations_touching_at_one_instant_count_as_concurrent() -> None:
    # The read is called at the instant the write returns: the clock cannot order them.
    history = [put("x", 1, 0, 5), get("x", None, 5, 6)]
    assert check_history(history).ok


def test_reads_must_agree_on_one_order_of_concurrent_writes() -> None:
    # Two concurrent writes; two later readers both see 2, then 1 is impossible... but
    # while the writes are still running, one reader may see 1 then 2.
    history = [
        put("x", 1, 0, 10, client=1),
        put("x", 2, 0, 10, client=2),
        get("x", 1, 1, 2, client=3),
        get("x", 2, 3, 4, client=3),
    ]
    assert check_history(history).ok


def test_unknown_outcome_write_may_take_effect_later() -> None:
    # The client never learnt the result of put(x, 1); a read long after sees it.
    history = [
        put("x", 1, 0, None),
        get("x", None, 5, 6),
        get("x", 1, 100, 101),
    ]
    assert check_history(history).ok


def test_unknown_outcome_write_may_never_take_effect() -> None:
    history = [put("x", 1, 0, None), get("x", None, 50, 60)]
    assert check_history(history).ok


def test_unknown_outcome_read_constrains_nothing() -> None:
    history = [put("x", 1, 0, 1), get("x", "garbage", 2, None)]
    assert check_history(history).ok


def test_keys_are_independent_registers() -> None:
    history = [
        put("x", 1, 0, 1),
        put("y", 2, 0, 1),
        get("x", 1, 2, 3),
        get("y", 2, 2, 3),
    ]
    result = check_history(history)
    assert result.ok
    assert result.keys_checked == 2
    assert result.operations_checked == 4


def test_delete_and_cas() -> None:
    history = [
        put("x", 1, 0, 1),
        cas("x", 1, 2, 2, 3, succeeded=True),
        cas("x", 1, 3, 4, 5, succeeded=False),
        get("x", 2, 6, 7),
        delete("x", 8, 9, existed=True),
        get("x", None, 10, 11),
        delete("x", 12, 13, existed=False),
        cas("x", None, 7, 14, 15, succeeded=True),
        get("x", 7, 16, 17),
    ]
    assert check_history(history).ok


def test_unknown_outcome_cas_may_have_swapped() -> None:
    history = [
        put("x", 1, 0, 1),
        cas("x", 1, 2, 2, None, succeeded=False),  # output ignored: the outcome is unknown
        get("x", 2, 10, 11),
    ]
    assert check_history(history).ok


# -- non-linearizable histories -----------------------------------------------------------


def test_stale_read_is_caught() -> None:
    history = [
        put("x", 1, 0, 1),
        put("x", 2, 2, 3),
        get("x", 1, 4, 5),  # 2 was acknowledged before this read started
    ]
    result = check_history(history)
    assert not result.ok
    assert result.key == "x"
    assert set(result.excerpt) == set(history)


def test_lost_write_is_caught() -> None:
    history = [
        put("x", 1, 0, 1),
        get("x", None, 2, 3),  # the acknowledged write vanished
    ]
    result = check_history(history)
    assert not result.ok
    assert result.key == "x"


def test_read_of_a_value_never_written_is_caught() -> None:
    result = check_history([put("x", 1, 0, 1), get("x", 9, 0, 2)])
    assert not result.ok


def test_reads_disagreeing_on_write_order_are_caught() -> None:
    # After both writes returned, reads flip-flop: no single order explains them.
    history = [
        put("x", 1, 0, 2, client=1),
        put("x", 2, 0, 2, client=2),
        get("x", 1, 3, 4, client=3),
        get("x", 2, 5, 6, client=3),
    ]
    assert not check_history(history).ok


def test_unknown_outcome_write_cannot_take_effect_before_its_call() -> None:
    history = [
        get("x", 1, 0, 1),
        put("x", 1, 2, None),
    ]
    result = check_history(history)
    assert not result.ok


def test_unknown_outcome_write_cannot_take_effect_twice() -> None:
    # put(x, 1) is unknown, but once 2 overwrote it, 1 cannot come back.
    history = [
        put("x", 1, 0, None),
        get("x", 1, 1, 2),
        put("x", 2, 3, 4),
        get("x", 1, 5, 6),
    ]
    assert not check_history(history).ok


def test_failed_cas_that_should_have_succeeded_is_caught() -> None:
    history = [put("x", 1, 0, 1), cas("x", 1, 2, 2, 3, succeeded=False)]
    assert not check_history(history).ok


def test_delete_that_reports_a_missing_value_is_caught() -> None:
    history = [put("x", 1, 0, 1), delete("x", 2, 3, existed=False)]
    assert not check_history(history).ok


def test_failure_names_the_key_and_gives_a_minimal_readable_excerpt() -> None:
    history: list[Operation] = []
    # Plenty of innocent traffic on both keys ...
    for step in range(20):
        history.append(put("y", step, 10 * step, 10 * step + 1, client=1))
        history.append(get("y", step, 10 * step + 2, 10 * step + 3, client=2))
        history.append(put("x", step, 10 * step + 4, 10 * step + 5, client=1))
    # ... and one stale read of x.
    history.append(get("x", 3, 500, 501, client=7))
    result = check_history(history)
    assert not result.ok
    assert result.key == "x"
    assert result.key_operations == 21
    # Minimal: the write of the value read, one later acknowledged write, the read.
    excerpt = result.excerpt
    assert len(excerpt) == 3
    assert excerpt[0].describe() == "[34, 35] client 1: put('x', 3)"
    assert excerpt[1].kind is OpKind.PUT and excerpt[1].value in range(4, 20)
    assert excerpt[2].describe() == "[500, 501] client 7: get('x') -> 3"
    text = result.describe()
    assert "NOT linearizable: key 'x' (21 operations)" in text
    assert "get('x') -> 3" in text


def test_describe_renders_unknown_outcomes() -> None:
    assert put("k", "v", 1, None, client=2).describe() == "[1, ?] client 2: put('k', 'v') -> ?"
    assert get("k", "v", 1, 2).describe() == "[1, 2] client 0: get('k') -> 'v'"
    assert (
        cas("k", 1, 2, 1.5, 2, succeeded=True).describe()
        == "[1.5, 2] client 0: cas('k', 1, 2) -> True"
    )
    unknown = with_unknown_outcome(get("k", "v", 1, 2))
    assert unknown.return_time is None
    assert unknown.kind is OpKind.GET


def test_operation_that_returns_before_its_call_is_rejected() -> None:
    with pytest.raises(ValueError, match="returns before it is called"):
        put("x", 1, 5, 4)


# -- limits -------------------------------------------------------------------------------


def test_too_many_operations_on_one_key_raises() -> None:
    history = [put("x", step, step, step) for step in range(11)]
    with pytest.raises(CheckLimitExceeded, match="11 operations"):
        check_history(history, max_operations_per_key=10)


def test_search_step_limit_raises_instead_of_hanging() -> None:
    # Many concurrent writes then a read of a value never written: the search must try a
    # lot of orders before it can say no.
    history = [put("x", value, 0, 100, client=value) for value in range(40)]
    history.append(get("x", "never", 101, 102))
    with pytest.raises(CheckLimitExceeded, match="exceeded 1000 steps"):
        check_history(history, max_steps=1000)


def test_unobserved_unknown_writes_do_not_blow_up_the_search() -> None:
    # A crashed node leaves writes of unknown outcome, concurrent with everything after
    # them. Before giving up on the stale read at the end, a naive search tries every subset
    # of them (2^30 states); none was ever read, so they cannot matter.
    history = [put("x", f"lost{n}", n, None, client=100 + n) for n in range(30)]
    for step in range(20):
        time = 100 + 10 * step
        history.append(put("x", step, time, time + 1, client=1))
        history.append(get("x", step, time + 2, time + 3, client=2))
    history.append(get("x", 3, 1000, 1001, client=3))
    result = check_history(history, max_steps=100_000)
    assert not result.ok
    assert all(operation.outcome_known for operation in result.excerpt)


def test_unknown_write_that_was_read_still_counts() -> None:
    history = [put("x", "ghost", 0, None), put("x", 1, 1, 2), get("x", "ghost", 3, 4)]
    # The ghost write may land after put(x, 1): linearizable.
    assert check_history(history).ok
    history = [put("x", "ghost", 5, None), put("x", 1, 1, 2), get("x", "ghost", 3, 4)]
    # ... but not before its own call.
    assert not check_history(history).ok


def test_memoization_keeps_wide_concurrency_tractable() -> None:
    # 12 fully concurrent writes and a read of each value after them would be 12! orders
    # without memoization of (linearized set, state).
    history = [put("x", value, 0, 100, client=value) for value in range(12)]
    history.append(get("x", 5, 101, 102))
    assert check_history(history, max_steps=1_000_000).ok


def test_random_sequential_histories_from_a_real_register_are_linearizable() -> None:
    rng = random.Random(7)
    for _ in range(50):
        state: dict[str, int | None] = {}
        history: list[Operation] = []
        time = 0
        for _ in range(40):
            key = rng.choice("ab")
            call, time = time, time + 2
            # Linearization point inside [call, call + 1]; the return may lie far later.
            returned = call + 1 + rng.randrange(3)
            if rng.random() < 0.5:
                value = rng.randrange(5)
                state[key] = value
                history.append(put(key, value, call, returned))
            else:
                history.append(get(key, state.get(key), call, returned))
        assert check_history(history).ok


def _brute_force(history: list[Operation]) -> bool:
    """Linearizable by trying every order (tiny histories only): unknown outcomes may be
    left out (never took effect) or placed anywhere after their call."""
    import itertools

    known = [operation for operation in history if operation.return_time is not None]
    unknown = [operation for operation in history if operation.return_time is None]
    for mask in range(1 << len(unknown)):
        chosen = known + [op for bit, op in enumerate(unknown) if mask >> bit & 1]
        for order in itertools.permutations(chosen):
            if _legal(list(order)):
                return True
    return False


def _legal(order: list[Operation]) -> bool:
    inf = float("inf")
    for position, first in enumerate(order):
        for second in order[position + 1 :]:
            # `second` is placed after `first`: it must not have returned before first's call.
            second_return = inf if second.return_time is None else second.return_time
            if second_return < first.call_time:
                return False
    state: object = None
    for operation in order:
        match operation.kind:
            case OpKind.PUT:
                state = operation.value
            case OpKind.GET:
                if operation.return_time is not None and operation.output != state:
                    return False
            case OpKind.CAS:
                swapped = state == operation.expected
                if operation.return_time is not None and operation.output != swapped:
                    return False
                if swapped:
                    state = operation.value
            case OpKind.DELETE:
                existed = state is not None
                if operation.return_time is not None and operation.output not in (None, existed):
                    return False
                state = None
    return True


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(11)
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        history: list[Operation] = []
        for _ in range(rng.randrange(1, 6)):
            call = rng.randrange(8)
            returned = None if rng.random() < 0.2 else call + rng.randrange(4)
            value = rng.choice([None, 1, 2])
            kind = rng.choice(list(OpKind))
            if kind is OpKind.PUT:
                history.append(put("x", rng.choice([1, 2]), call, returned))
            elif kind is OpKind.GET:
                history.append(get("x", value, call, returned))
            elif kind is OpKind.DELETE:
                history.append(delete("x", call, returned, existed=rng.choice([None, True, False])))
            else:
                history.append(
                    cas(
                        "x", value, rng.choice([1, 2]), call, returned, succeeded=rng.random() < 0.5
                    )
                )
        expected = _brute_force(history)
        assert check_history(history).ok == expected, history
        verdicts[expected] += 1
    assert verdicts[True] > 50 and verdicts[False] > 50
