"""Quorum arithmetic (`raftkv.raft.core.quorum`), modelled on etcd-io/raft's `quorum/`.

A majority configuration commits the largest index a majority has acknowledged and wins a
vote once a majority granted it; a joint configuration needs both halves (thesis §4.3), and
an empty outgoing half agrees to everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core.quorum import INFINITE_INDEX, JointConfig, MajorityConfig, VoteResult
from raftkv.raft.core.types import NodeId

PENDING = VoteResult.PENDING
LOST = VoteResult.LOST
WON = VoteResult.WON


def ids(*numbers: int) -> frozenset[NodeId]:
    return frozenset(NodeId(number) for number in numbers)


def majority(*numbers: int) -> MajorityConfig:
    return MajorityConfig(ids(*numbers))


def joint(incoming: tuple[int, ...], outgoing: tuple[int, ...] = ()) -> JointConfig:
    return JointConfig(majority(*incoming), majority(*outgoing))


def acked_from(indexes: Mapping[int, int]) -> Callable[[NodeId], int | None]:
    """An `acked` callback: the index each listed node acknowledged, None for the others."""

    def acked(node_id: NodeId) -> int | None:
        return indexes.get(node_id)

    return acked


def votes_from(votes: Mapping[int, bool]) -> dict[NodeId, bool]:
    return {NodeId(node_id): granted for node_id, granted in votes.items()}


def brute_force_committed(voters: frozenset[NodeId], acked: Mapping[int, int]) -> int:
    """The definition: the largest index that at least a majority acknowledged (or more)."""
    if not voters:
        return INFINITE_INDEX
    quorum = len(voters) // 2 + 1
    candidates = {0} | {acked.get(voter, 0) for voter in voters}
    return max(
        index
        for index in candidates
        if sum(1 for voter in voters if acked.get(voter, 0) >= index) >= quorum
    )


# -- majority: committed index -------------------------------------------------------------


@pytest.mark.parametrize(
    ("voters", "acked", "expected"),
    [
        # One voter: whatever it acknowledged.
        ((1,), {1: 5}, 5),
        ((1,), {}, 0),
        # Two voters: both are needed, so the smaller index.
        ((1, 2), {1: 10, 2: 7}, 7),
        ((1, 2), {1: 10}, 0),
        # Three voters: the middle index.
        ((1, 2, 3), {1: 10, 2: 7, 3: 3}, 7),
        ((1, 2, 3), {1: 10, 2: 10, 3: 3}, 10),
        ((1, 2, 3), {1: 10, 2: 7}, 7),
        ((1, 2, 3), {1: 10}, 0),
        ((1, 2, 3), {}, 0),
        # Four voters need three.
        ((1, 2, 3, 4), {1: 10, 2: 9, 3: 8, 4: 7}, 8),
        ((1, 2, 3, 4), {1: 10, 2: 9}, 0),
        ((1, 2, 3, 4), {1: 10, 2: 9, 3: 1}, 1),
        # Five voters need three.
        ((1, 2, 3, 4, 5), {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}, 3),
        ((1, 2, 3, 4, 5), {1: 9, 2: 9, 4: 2}, 2),
        # Acknowledgements from non-voters never count.
        ((1, 2, 3), {1: 10, 7: 10, 8: 10}, 0),
    ],
)
def test_majority_committed_index(
    voters: tuple[int, ...], acked: dict[int, int], expected: int
) -> None:
    assert majority(*voters).committed_index(acked_from(acked)) == expected


def test_empty_majority_commits_anything() -> None:
    # min() with another configuration must ignore the empty one.
    assert MajorityConfig().committed_index(acked_from({1: 3})) == INFINITE_INDEX


# -- majority: votes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voters", "votes", "expected"),
    [
        ((), {}, WON),  # an empty configuration agrees to everything
        ((1,), {}, PENDING),
        ((1,), {1: True}, WON),
        ((1,), {1: False}, LOST),
        ((1, 2), {1: True}, PENDING),
        ((1, 2), {1: True, 2: True}, WON),
        ((1, 2), {1: True, 2: False}, LOST),
        ((1, 2, 3), {}, PENDING),
        ((1, 2, 3), {1: True}, PENDING),
        ((1, 2, 3), {1: True, 2: False}, PENDING),
        ((1, 2, 3), {1: True, 2: True}, WON),
        ((1, 2, 3), {1: False, 2: False}, LOST),
        ((1, 2, 3), {1: True, 2: False, 3: False}, LOST),
        ((1, 2, 3, 4), {1: True, 2: True}, PENDING),
        ((1, 2, 3, 4), {1: True, 2: True, 3: False}, PENDING),
        ((1, 2, 3, 4), {1: True, 2: False, 3: False}, LOST),
        ((1, 2, 3, 4), {1: True, 2: True, 3: True}, WON),
        ((1, 2, 3, 4, 5), {1: True, 2: True, 3: False, 4: False}, PENDING),
        ((1, 2, 3, 4, 5), {1: True, 2: True, 3: True, 4: False, 5: False}, WON),
        # Votes from non-voters are ignored.
        ((1, 2, 3), {1: True, 8: True, 9: True}, PENDING),
    ],
)
def test_majority_vote_result(
    voters: tuple[int, ...], votes: dict[int, bool], expected: VoteResult
) -> None:
    assert majority(*voters).vote_result(votes_from(votes)) is expected


# -- joint configurations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("incoming", "outgoing", "acked", "expected"),
    [
        # Both halves agree.
        ((1, 2, 3), (1, 2, 3), {1: 5, 2: 5, 3: 1}, 5),
        # The outgoing half lags: it decides.
        ((1, 2, 3), (4, 5, 6), {1: 9, 2: 9, 3: 9, 4: 3, 5: 3, 6: 1}, 3),
        # The incoming half lags: it decides.
        ((1, 2, 3), (3, 4, 5), {1: 2, 2: 1, 3: 8, 4: 8, 5: 8}, 2),
        # Overlapping halves, one shared voter missing.
        ((1, 2), (2, 3), {1: 7, 3: 7}, 0),
        ((1, 2, 3), (2, 3, 4), {1: 7, 2: 6, 3: 5, 4: 4}, 5),
    ],
)
def test_joint_committed_index_needs_both_halves(
    incoming: tuple[int, ...],
    outgoing: tuple[int, ...],
    acked: dict[int, int],
    expected: int,
) -> None:
    config = joint(incoming, outgoing)
    callback = acked_from(acked)
    assert config.committed_index(callback) == expected
    assert expected == min(
        majority(*incoming).committed_index(callback),
        majority(*outgoing).committed_index(callback),
    )


@pytest.mark.parametrize(
    ("incoming", "outgoing", "votes", "expected"),
    [
        # Won in one half, pending in the other: pending.
        ((1, 2, 3), (4, 5, 6), {1: True, 2: True}, PENDING),
        # Won in both.
        ((1, 2, 3), (4, 5, 6), {1: True, 2: True, 4: True, 5: True}, WON),
        # Won in one half, lost in the other: lost.
        ((1, 2, 3), (4, 5, 6), {1: True, 2: True, 4: False, 5: False}, LOST),
        # Pending in one half, lost in the other: lost.
        ((1, 2, 3), (4, 5, 6), {1: True, 4: False, 5: False}, LOST),
        # Shared voters count in both halves.
        ((1, 2, 3), (2, 3, 4), {2: True, 3: True}, WON),
        ((1, 2, 3), (2, 3, 4), {1: True, 2: True}, PENDING),
        ((1, 2, 3), (2, 3, 4), {2: False, 3: False}, LOST),
        # Nothing yet.
        ((1, 2, 3), (4, 5, 6), {}, PENDING),
    ],
)
def test_joint_vote_result_needs_both_halves(
    incoming: tuple[int, ...],
    outgoing: tuple[int, ...],
    votes: dict[int, bool],
    expected: VoteResult,
) -> None:
    assert joint(incoming, outgoing).vote_result(votes_from(votes)) is expected


@pytest.mark.parametrize(
    "votes",
    [
        {},
        {1: True},
        {1: True, 2: True},
        {1: False, 2: False},
        {1: True, 2: False, 3: True},
        {1: False, 2: False, 3: False},
    ],
)
def test_joint_with_empty_outgoing_behaves_like_incoming_for_votes(
    votes: dict[int, bool],
) -> None:
    config = joint((1, 2, 3))
    assert not config.is_joint()
    given_votes = votes_from(votes)
    assert config.vote_result(given_votes) is majority(1, 2, 3).vote_result(given_votes)


@pytest.mark.parametrize("acked", [{}, {1: 4}, {1: 4, 2: 6}, {1: 1, 2: 2, 3: 3}])
def test_joint_with_empty_outgoing_behaves_like_incoming_for_commit(
    acked: dict[int, int],
) -> None:
    callback = acked_from(acked)
    assert joint((1, 2, 3)).committed_index(callback) == majority(1, 2, 3).committed_index(callback)


def test_joint_ids_and_is_joint() -> None:
    config = joint((1, 2, 3), (3, 4))
    assert config.is_joint()
    assert config.ids() == ids(1, 2, 3, 4)
    assert JointConfig().ids() == frozenset()
    assert not JointConfig().is_joint()


@pytest.mark.parametrize(
    ("incoming", "outgoing", "active", "expected"),
    [
        ((1, 2, 3), (), (1, 2), True),
        ((1, 2, 3), (), (1,), False),
        ((1, 2, 3), (), (), False),
        ((1, 2, 3), (), (1, 7, 8), False),  # non-voters do not make a quorum
        ((1,), (), (1,), True),
        ((1, 2, 3), (4, 5, 6), (1, 2, 4), False),
        ((1, 2, 3), (4, 5, 6), (1, 2, 4, 5), True),
        ((1, 2, 3), (2, 3, 4), (2, 3), True),
        ((1, 2, 3), (2, 3, 4), (1, 4), False),
    ],
)
def test_has_quorum(
    incoming: tuple[int, ...],
    outgoing: tuple[int, ...],
    active: tuple[int, ...],
    expected: bool,
) -> None:
    config = joint(incoming, outgoing)
    assert config.has_quorum(NodeId(node_id) for node_id in active) is expected


# -- properties ------------------------------------------------------------------------------

voter_sets = st.frozensets(st.integers(min_value=1, max_value=9), max_size=7).map(
    lambda numbers: frozenset(NodeId(number) for number in numbers)
)
acked_maps = st.dictionaries(
    st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=20), max_size=9
)
vote_maps = st.dictionaries(st.integers(min_value=1, max_value=9), st.booleans(), max_size=9)


@given(voters=voter_sets, acked=acked_maps)
def test_majority_committed_index_matches_definition(
    voters: frozenset[NodeId], acked: dict[int, int]
) -> None:
    committed = MajorityConfig(voters).committed_index(acked_from(acked))
    assert committed == brute_force_committed(voters, acked)


@given(incoming=voter_sets, outgoing=voter_sets, acked=acked_maps)
def test_joint_committed_index_is_min_of_halves(
    incoming: frozenset[NodeId], outgoing: frozenset[NodeId], acked: dict[int, int]
) -> None:
    callback = acked_from(acked)
    committed = JointConfig(MajorityConfig(incoming), MajorityConfig(outgoing)).committed_index(
        callback
    )
    assert committed == min(
        brute_force_committed(incoming, acked), brute_force_committed(outgoing, acked)
    )


@given(incoming=voter_sets, outgoing=voter_sets, votes=vote_maps)
def test_joint_vote_result_combines_halves(
    incoming: frozenset[NodeId], outgoing: frozenset[NodeId], votes: dict[int, bool]
) -> None:
    given_votes = votes_from(votes)
    first = MajorityConfig(incoming).vote_result(given_votes)
    second = MajorityConfig(outgoing).vote_result(given_votes)
    result = JointConfig(MajorityConfig(incoming), MajorityConfig(outgoing)).vote_result(
        given_votes
    )
    if LOST in (first, second):
        assert result is LOST
    elif first is WON and second is WON:
        assert result is WON
    else:
        assert result is PENDING


@given(voters=voter_sets, votes=vote_maps)
def test_majority_vote_result_matches_counting(
    voters: frozenset[NodeId], votes: dict[int, bool]
) -> None:
    result = MajorityConfig(voters).vote_result(votes_from(votes))
    quorum = len(voters) // 2 + 1
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    undecided = sum(1 for voter in voters if voter not in votes)
    if not voters or granted >= quorum:
        assert result is WON
    elif granted + undecided >= quorum:
        assert result is PENDING
    else:
        assert result is LOST
