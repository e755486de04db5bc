"""Membership changes (`raftkv.raft.core.confchange`), modelled on etcd-io/raft's `confchange/`.

Every function is pure: it returns a new `Membership` or raises ConfChangeInvalid, and in
both cases the input is left exactly as it was (h11's "a rejected input changes nothing").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core import confchange
from raftkv.raft.core.confchange import Membership, ProgressFactory
from raftkv.raft.core.errors import ConfChangeInvalid
from raftkv.raft.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    NodeId,
)

ADD = ConfChangeType.ADD_NODE
ADD_LEARNER = ConfChangeType.ADD_LEARNER_NODE
REMOVE = ConfChangeType.REMOVE_NODE

FACTORY = ProgressFactory(next_index=10, max_inflight_messages=16, max_inflight_bytes=0)


def ids(*numbers: int) -> frozenset[NodeId]:
    return frozenset(NodeId(number) for number in numbers)


def change(kind: ConfChangeType, node_id: int) -> ConfChangeSingle:
    return ConfChangeSingle(kind, NodeId(node_id))


def membership(
    voters: tuple[int, ...],
    learners: tuple[int, ...] = (),
    outgoing: tuple[int, ...] = (),
    learners_next: tuple[int, ...] = (),
    auto_leave: bool = False,
) -> Membership:
    """A membership restored from a ConfState, each member's match set to 10 × its id so
    tests can tell carried-over progress from fresh progress."""
    result = confchange.restore(
        ConfState(
            voters=ids(*voters),
            learners=ids(*learners),
            voters_outgoing=ids(*outgoing),
            learners_next=ids(*learners_next),
            auto_leave=auto_leave,
        ),
        FACTORY,
    )
    for node_id, progress in result.progress.items():
        progress.match = 10 * node_id
        progress.next = 10 * node_id + 1
    return result


def conf_state_of(value: Membership) -> ConfState:
    return ConfState(
        voters=value.voters.incoming.voters,
        learners=value.learners,
        voters_outgoing=value.voters.outgoing.voters,
        learners_next=value.learners_next,
        auto_leave=value.auto_leave,
    )


@dataclass(frozen=True)
class Frozen:
    """Everything observable about a Membership, including the identity of its mutable
    parts, to prove a call did not touch it."""

    conf_state: ConfState
    progress_dict_id: int
    progress: tuple[tuple[NodeId, int, int, int, bool, bool, bool, int], ...]


def freeze(value: Membership) -> Frozen:
    return Frozen(
        conf_state=conf_state_of(value),
        progress_dict_id=id(value.progress),
        progress=tuple(
            (
                node_id,
                id(item),
                item.match,
                item.next,
                item.is_learner,
                item.recent_active,
                item.flow_paused,
                item.pending_snapshot,
            )
            for node_id, item in sorted(value.progress.items())
        ),
    )


def check_invariants(value: Membership) -> None:
    """The invariants of a membership, restated independently of the module under test."""
    incoming = value.voters.incoming.voters
    outgoing = value.voters.outgoing.voters
    assert incoming, "a configuration never has zero voters"
    assert not value.learners & (incoming | outgoing), "voters and learners overlap"
    assert value.learners_next <= outgoing, "learners_next must be outgoing voters"
    assert not value.learners_next & incoming, "learners_next must not be incoming voters"
    members = incoming | outgoing | value.learners | value.learners_next
    assert set(value.progress) == members, "progress is tracked for exactly the members"
    for node_id, progress in value.progress.items():
        assert progress.is_learner is (node_id in value.learners), node_id
    if not value.voters.is_joint():
        assert not value.learners_next
        assert not value.auto_leave


# -- simple changes --------------------------------------------------------------------------


def test_simple_add_voter() -> None:
    result = confchange.simple(membership((1,)), (change(ADD, 2),), FACTORY)
    assert conf_state_of(result) == ConfState(voters=ids(1, 2))
    new = result.progress[NodeId(2)]
    assert (new.match, new.next, new.is_learner) == (0, 10, False)
    # Existing members keep their progress.
    assert (result.progress[NodeId(1)].match, result.progress[NodeId(1)].next) == (10, 11)
    check_invariants(result)


def test_simple_add_learner() -> None:
    result = confchange.simple(membership((1,)), (change(ADD_LEARNER, 2),), FACTORY)
    assert conf_state_of(result) == ConfState(voters=ids(1), learners=ids(2))
    assert result.progress[NodeId(2)].is_learner
    check_invariants(result)


def test_simple_remove_voter() -> None:
    result = confchange.simple(membership((1, 2, 3)), (change(REMOVE, 3),), FACTORY)
    assert conf_state_of(result) == ConfState(voters=ids(1, 2))
    assert NodeId(3) not in result.progress
    check_invariants(result)


def test_simple_remove_learner() -> None:
    result = confchange.simple(membership((1,), learners=(2,)), (change(REMOVE, 2),), FACTORY)
    assert conf_state_of(result) == ConfState(voters=ids(1))
    assert set(result.progress) == {NodeId(1)}


def test_an_update_leaves_the_configuration_and_needs_a_member() -> None:
    start = membership((1, 2), learners=(3,))
    for member in (1, 3):
        result = confchange.simple(start, (change(ConfChangeType.UPDATE_NODE, member),), FACTORY)
        assert conf_state_of(result) == conf_state_of(start)
        check_invariants(result)
    with pytest.raises(ConfChangeInvalid, match="4 is not a member"):
        confchange.simple(start, (change(ConfChangeType.UPDATE_NODE, 4),), FACTORY)


def test_an_update_keeps_its_code_in_the_stored_encoding() -> None:
    update = ConfChange((change(ConfChangeType.UPDATE_NODE, 7),), context=b"ctx")
    assert update.encode()[4] == 3  # the codes before it keep theirs
    assert ConfChange.decode(update.encode()) == update


def test_simple_promote_learner_keeps_its_progress() -> None:
    result = confchange.simple(membership((1,), learners=(2,)), (change(ADD, 2),), FACTORY)
    assert conf_state_of(result) == ConfState(voters=ids(1, 2))
    promoted = result.progress[NodeId(2)]
    assert (promoted.match, promoted.is_learner) == (20, False)
    check_invariants(result)


def test_simple_demote_voter_to_learner() -> None:
    result = confchange.simple(membership((1, 2)), (change(ADD_LEARNER, 2),), FACTORY)
    assert conf_state_of(result) == ConfState(voters=ids(1), learners=ids(2))
    assert result.progress[NodeId(2)].is_learner
    assert result.progress[NodeId(2)].match == 20
    check_invariants(result)


def test_simple_no_op_changes() -> None:
    start = membership((1, 2), learners=(3,))
    changes = (change(ADD, 1), change(ADD_LEARNER, 3), change(REMOVE, 9))
    result = confchange.simple(start, changes, FACTORY)
    assert conf_state_of(result) == conf_state_of(start)


@pytest.mark.parametrize("node_id", [0, -1, 2**64])
def test_a_change_naming_an_impossible_node_id_cannot_be_built(node_id: int) -> None:
    # Node id 0 means "nobody": a change for it is refused when built, so neither encode
    # nor apply ever sees one (etcd instead skips such changes silently).
    with pytest.raises(ValueError, match="invalid node id"):
        ConfChangeSingle(ConfChangeType.ADD_NODE, NodeId(node_id))


def test_simple_one_voter_and_learners_at_once() -> None:
    result = confchange.simple(
        membership((1, 2)),
        (change(ADD, 3), change(ADD_LEARNER, 4), change(ADD_LEARNER, 5)),
        FACTORY,
    )
    assert conf_state_of(result) == ConfState(voters=ids(1, 2, 3), learners=ids(4, 5))


def test_simple_from_empty_configuration_may_add_one_voter() -> None:
    # Convenient for bootstrapping: the first voter joins an empty configuration.
    empty = membership(())
    result = confchange.simple(empty, (change(ADD, 1),), FACTORY)
    assert conf_state_of(result) == ConfState(voters=ids(1))


def test_apply_routes_single_auto_change_to_simple() -> None:
    result = confchange.apply(membership((1,)), ConfChange((change(ADD, 2),)), FACTORY)
    assert not result.voters.is_joint()
    assert conf_state_of(result) == ConfState(voters=ids(1, 2))


# -- joint consensus -------------------------------------------------------------------------


def test_enter_joint_keeps_old_voters_as_outgoing() -> None:
    result = confchange.enter_joint(
        membership((1, 2, 3)), False, (change(ADD, 4), change(REMOVE, 1)), FACTORY
    )
    assert conf_state_of(result) == ConfState(voters=ids(2, 3, 4), voters_outgoing=ids(1, 2, 3))
    # The removed voter still votes in the outgoing half, so it is still tracked.
    assert result.progress[NodeId(1)].match == 10
    check_invariants(result)
    left = confchange.leave_joint(result)
    assert conf_state_of(left) == ConfState(voters=ids(2, 3, 4))
    assert NodeId(1) not in left.progress
    check_invariants(left)


def test_demoting_a_voter_through_joint_uses_learners_next() -> None:
    entered = confchange.enter_joint(
        membership((1, 2, 3)), True, (change(ADD_LEARNER, 3),), FACTORY
    )
    assert conf_state_of(entered) == ConfState(
        voters=ids(1, 2),
        voters_outgoing=ids(1, 2, 3),
        learners_next=ids(3),
        auto_leave=True,
    )
    # Still a voter of the outgoing half until the joint configuration is left.
    assert not entered.progress[NodeId(3)].is_learner
    assert NodeId(3) not in entered.learners
    check_invariants(entered)

    left = confchange.leave_joint(entered)
    assert conf_state_of(left) == ConfState(voters=ids(1, 2), learners=ids(3))
    assert left.progress[NodeId(3)].is_learner
    assert left.progress[NodeId(3)].match == 30
    check_invariants(left)


def test_demoting_then_promoting_in_one_joint_change_cancels_out() -> None:
    entered = confchange.enter_joint(
        membership((1, 2, 3)), False, (change(ADD_LEARNER, 3), change(ADD, 3)), FACTORY
    )
    assert entered.learners_next == frozenset()
    assert conf_state_of(confchange.leave_joint(entered)) == ConfState(voters=ids(1, 2, 3))


def test_new_learner_in_joint_is_a_learner_immediately() -> None:
    entered = confchange.enter_joint(membership((1, 2)), False, (change(ADD_LEARNER, 5),), FACTORY)
    assert entered.learners == ids(5)
    assert entered.learners_next == frozenset()
    assert entered.progress[NodeId(5)].is_learner


def test_promoting_a_learner_in_joint() -> None:
    entered = confchange.enter_joint(
        membership((1, 2), learners=(3,)), False, (change(ADD, 3),), FACTORY
    )
    assert conf_state_of(entered) == ConfState(voters=ids(1, 2, 3), voters_outgoing=ids(1, 2))
    assert not entered.progress[NodeId(3)].is_learner
    check_invariants(entered)


@pytest.mark.parametrize(
    ("transition", "changes", "expect_joint", "expect_auto_leave"),
    [
        (ConfChangeTransition.AUTO, (change(ADD, 4),), False, False),
        (ConfChangeTransition.AUTO, (change(ADD, 4), change(ADD, 5)), True, True),
        (ConfChangeTransition.JOINT_IMPLICIT, (change(ADD, 4),), True, True),
        (ConfChangeTransition.JOINT_EXPLICIT, (change(ADD, 4),), True, False),
        (ConfChangeTransition.JOINT_EXPLICIT, (), True, False),
    ],
)
def test_apply_auto_leave_flag(
    transition: ConfChangeTransition,
    changes: tuple[ConfChangeSingle, ...],
    expect_joint: bool,
    expect_auto_leave: bool,
) -> None:
    result = confchange.apply(membership((1, 2, 3)), ConfChange(changes, transition), FACTORY)
    assert result.voters.is_joint() is expect_joint
    assert result.auto_leave is expect_auto_leave
    check_invariants(result)
    if expect_joint:
        left = confchange.apply(result, ConfChange(), FACTORY)
        assert not left.voters.is_joint()
        assert left.auto_leave is False
        check_invariants(left)


# -- rejections leave the input untouched ----------------------------------------------------

Call = Callable[[Membership], Membership]

REJECTIONS: list[tuple[str, Membership, Call]] = [
    (
        "two voters added without joint",
        membership((1,)),
        lambda m: confchange.simple(m, (change(ADD, 2), change(ADD, 3)), FACTORY),
    ),
    (
        "voter swapped without joint",
        membership((1, 2, 3)),
        lambda m: confchange.simple(m, (change(ADD, 4), change(REMOVE, 1)), FACTORY),
    ),
    (
        "learner promoted and voter demoted without joint",
        membership((1, 2), learners=(3,)),
        lambda m: confchange.simple(m, (change(ADD, 3), change(ADD_LEARNER, 2)), FACTORY),
    ),
    (
        "last voter removed",
        membership((1,), learners=(2,)),
        lambda m: confchange.simple(m, (change(REMOVE, 1),), FACTORY),
    ),
    (
        "last voter demoted",
        membership((1,)),
        lambda m: confchange.simple(m, (change(ADD_LEARNER, 1),), FACTORY),
    ),
    (
        "all voters removed in joint",
        membership((1, 2)),
        lambda m: confchange.enter_joint(m, False, (change(REMOVE, 1), change(REMOVE, 2)), FACTORY),
    ),
    (
        "all voters demoted in joint",
        membership((1, 2)),
        lambda m: confchange.enter_joint(
            m, True, (change(ADD_LEARNER, 1), change(ADD_LEARNER, 2)), FACTORY
        ),
    ),
    (
        "enter joint twice",
        membership((1, 2), outgoing=(1, 2, 3), learners_next=(3,), auto_leave=True),
        lambda m: confchange.enter_joint(m, False, (change(ADD, 4),), FACTORY),
    ),
    (
        "simple change while joint",
        membership((1, 2), outgoing=(1, 2, 3)),
        lambda m: confchange.simple(m, (change(ADD_LEARNER, 4),), FACTORY),
    ),
    (
        "apply a change while joint",
        membership((1, 2), outgoing=(1, 2, 3)),
        lambda m: confchange.apply(m, ConfChange((change(ADD, 4),)), FACTORY),
    ),
    (
        "leave a non-joint configuration",
        membership((1, 2, 3), learners=(4,)),
        confchange.leave_joint,
    ),
    (
        "apply a leave to a non-joint configuration",
        membership((1, 2, 3)),
        lambda m: confchange.apply(m, ConfChange(), FACTORY),
    ),
]


@pytest.mark.parametrize(
    ("start", "call"),
    [(start, call) for _, start, call in REJECTIONS],
    ids=[name for name, _, _ in REJECTIONS],
)
def test_rejected_change_leaves_membership_untouched(start: Membership, call: Call) -> None:
    before = freeze(start)
    with pytest.raises(ConfChangeInvalid):
        call(start)
    assert freeze(start) == before


def test_enter_joint_from_zero_voters_rejected() -> None:
    empty = membership(())
    with pytest.raises(ConfChangeInvalid, match="zero-voter"):
        confchange.enter_joint(empty, False, (change(ADD, 1),), FACTORY)


ACCEPTED: list[tuple[str, Membership, Call]] = [
    (
        "demote in a simple change",
        membership((1, 2)),
        lambda m: confchange.simple(m, (change(ADD_LEARNER, 2),), FACTORY),
    ),
    (
        "promote in a simple change",
        membership((1,), learners=(2,)),
        lambda m: confchange.simple(m, (change(ADD, 2),), FACTORY),
    ),
    (
        "enter joint",
        membership((1, 2, 3), learners=(4,)),
        lambda m: confchange.enter_joint(
            m, True, (change(ADD, 4), change(ADD_LEARNER, 3), change(REMOVE, 1)), FACTORY
        ),
    ),
    (
        "leave joint",
        membership((1, 2), outgoing=(1, 2, 3), learners_next=(3,), auto_leave=True),
        confchange.leave_joint,
    ),
]


@pytest.mark.parametrize(
    ("start", "call"),
    [(start, call) for _, start, call in ACCEPTED],
    ids=[name for name, _, _ in ACCEPTED],
)
def test_accepted_change_does_not_mutate_its_input(start: Membership, call: Call) -> None:
    before = freeze(start)
    result = call(start)
    assert freeze(start) == before
    assert result.progress is not start.progress
    # The result's progress objects are its own: mutating them cannot reach the input.
    for node_id, progress in result.progress.items():
        assert progress is not start.progress.get(node_id)


# -- restore ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conf_state",
    [
        ConfState(voters=ids(1)),
        ConfState(voters=ids(1, 2, 3), learners=ids(4, 5)),
        ConfState(voters=ids(1, 2), voters_outgoing=ids(1, 2, 3)),
        ConfState(
            voters=ids(1, 2),
            learners=ids(5),
            voters_outgoing=ids(1, 2, 3),
            learners_next=ids(3),
            auto_leave=True,
        ),
        ConfState(voters=ids(4, 5, 6), voters_outgoing=ids(1, 2, 3)),
    ],
)
def test_restore_round_trips(conf_state: ConfState) -> None:
    restored = confchange.restore(conf_state, FACTORY)
    assert conf_state_of(restored) == conf_state
    check_invariants(restored)
    for progress in restored.progress.values():
        assert (progress.match, progress.next) == (0, 10)


@pytest.mark.parametrize(
    "conf_state",
    [
        ConfState(voters=ids(1, 2), learners=ids(2)),  # both voter and learner
        ConfState(voters=ids(1, 2), learners_next=ids(3)),  # learners_next outside joint
        ConfState(voters=ids(1, 2), voters_outgoing=ids(1), learners_next=ids(2)),  # incoming
        ConfState(voters=ids(1), auto_leave=True),  # auto_leave outside joint
    ],
)
def test_restore_rejects_inconsistent_conf_state(conf_state: ConfState) -> None:
    with pytest.raises(ConfChangeInvalid):
        confchange.restore(conf_state, FACTORY)


# -- properties ------------------------------------------------------------------------------

node_ids = st.integers(min_value=1, max_value=6)
singles = st.builds(change, st.sampled_from([ADD, ADD_LEARNER, REMOVE]), node_ids)
change_batches = st.lists(singles, max_size=4).map(tuple)


@st.composite
def starting_memberships(draw: st.DrawFn) -> Membership:
    voters = draw(st.sets(node_ids, min_size=1, max_size=5))
    learners = draw(st.sets(node_ids, max_size=3)) - voters
    return membership(tuple(sorted(voters)), tuple(sorted(learners)))


def model(
    voters: frozenset[NodeId], learners: frozenset[NodeId], changes: tuple[ConfChangeSingle, ...]
) -> tuple[frozenset[NodeId], frozenset[NodeId]]:
    """Where each change leaves voters and learners once any joint configuration is left."""
    new_voters, new_learners = set(voters), set(learners)
    for single in changes:
        match single.type:
            case ConfChangeType.ADD_NODE:
                new_voters.add(single.node_id)
                new_learners.discard(single.node_id)
            case ConfChangeType.ADD_LEARNER_NODE:
                new_voters.discard(single.node_id)
                new_learners.add(single.node_id)
            case ConfChangeType.REMOVE_NODE:
                new_voters.discard(single.node_id)
                new_learners.discard(single.node_id)
    return frozenset(new_voters), frozenset(new_learners)


def check_round_trip(value: Membership) -> None:
    restored = confchange.restore(conf_state_of(value), FACTORY)
    assert conf_state_of(restored) == conf_state_of(value)


@given(
    start=starting_memberships(),
    steps=st.lists(st.tuples(st.booleans(), st.booleans(), change_batches), max_size=12),
)
def test_random_changes_keep_invariants(
    start: Membership, steps: list[tuple[bool, bool, tuple[ConfChangeSingle, ...]]]
) -> None:
    current = start
    check_invariants(current)
    for use_joint, auto_leave, changes in steps:
        before = freeze(current)
        old_voters = current.voters.incoming.voters
        old_matches = {node_id: item.match for node_id, item in current.progress.items()}
        expected_voters, expected_learners = model(old_voters, current.learners, changes)
        simple_allowed = len(old_voters ^ expected_voters) <= 1
        if not expected_voters or (not use_joint and not simple_allowed):
            with pytest.raises(ConfChangeInvalid):
                if use_joint:
                    confchange.enter_joint(current, auto_leave, changes, FACTORY)
                else:
                    confchange.simple(current, changes, FACTORY)
            assert freeze(current) == before
            continue

        if use_joint:
            entered = confchange.enter_joint(current, auto_leave, changes, FACTORY)
            assert freeze(current) == before
            check_invariants(entered)
            check_round_trip(entered)
            assert entered.voters.outgoing.voters == old_voters
            assert entered.voters.incoming.voters == expected_voters
            assert entered.auto_leave is auto_leave
            entered_before = freeze(entered)
            result = confchange.leave_joint(entered)
            assert freeze(entered) == entered_before
        else:
            result = confchange.simple(current, changes, FACTORY)
            assert freeze(current) == before

        check_invariants(result)
        check_round_trip(result)
        assert not result.voters.is_joint()
        assert (result.voters.incoming.voters, result.learners) == (
            expected_voters,
            expected_learners,
        )
        # Members that stay keep their progress; newcomers start fresh. (A member removed
        # and re-added within one change may legitimately start fresh too.)
        removed = {single.node_id for single in changes if single.type is REMOVE}
        for node_id, progress in result.progress.items():
            if node_id not in removed:
                assert progress.match == old_matches.get(node_id, 0)
        current = result
