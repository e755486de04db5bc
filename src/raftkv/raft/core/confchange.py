"""Membership changes: the simple one-voter change and joint consensus (Raft thesis §4.3).

Pure functions from a tracker's configuration to a new one; the caller installs the result.
Nothing here mutates its input: a rejected change raises ConfChangeInvalid and leaves the
tracker untouched.

Rules:
- A simple change may alter at most one voter (adding, removing, or turning it into a
  learner); more needs joint consensus, where decisions need majorities of both the old
  (outgoing) and the new (incoming) voter sets.
- Only one joint configuration at a time; it is left with an empty ConfChange (explicitly, or
  automatically by the leader when `auto_leave`).
- A voter demoted while the old configuration still counts it stays a voter of the outgoing
  half and becomes a learner on leaving (`learners_next`).
- A configuration never has zero voters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from raftkv.raft.core.errors import ConfChangeInvalid
from raftkv.raft.core.quorum import JointConfig, MajorityConfig
from raftkv.raft.core.tracker import Inflights, Progress
from raftkv.raft.core.types import (
    MAX_NODE_ID,
    NO_NODE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    NodeId,
)


@dataclass(frozen=True, slots=True)
class Membership:
    """A configuration together with the progress of each of its members."""

    voters: JointConfig
    learners: frozenset[NodeId]
    learners_next: frozenset[NodeId]
    auto_leave: bool
    progress: dict[NodeId, Progress]


@dataclass(frozen=True, slots=True)
class ProgressFactory:
    """Builds the Progress of a member that was not tracked before."""

    next_index: int
    max_inflight_messages: int
    max_inflight_bytes: int
    max_inflight_entries: int = 0

    def __call__(self, is_learner: bool) -> Progress:
        return Progress(
            match=0,
            next=max(self.next_index, 1),
            inflights=Inflights(
                self.max_inflight_messages, self.max_inflight_bytes, self.max_inflight_entries
            ),
            is_learner=is_learner,
            recent_active=True,
        )


def apply(current: Membership, change: ConfChange, new_progress: ProgressFactory) -> Membership:
    """The membership after applying `change` (enter joint, leave joint, or simple)."""
    if change.leave_joint():
        return leave_joint(current)
    uses_joint, auto_leave = change.enters_joint()
    if uses_joint:
        return enter_joint(current, auto_leave, change.changes, new_progress)
    return simple(current, change.changes, new_progress)


def enter_joint(
    current: Membership,
    auto_leave: bool,
    changes: tuple[ConfChangeSingle, ...],
    new_progress: ProgressFactory,
) -> Membership:
    if current.voters.is_joint():
        raise ConfChangeInvalid("configuration is already joint")
    if not current.voters.incoming.voters:
        raise ConfChangeInvalid("cannot make a zero-voter configuration joint")
    # The old voters become the outgoing half; the changes apply to the incoming half.
    start = replace(
        current,
        voters=JointConfig(current.voters.incoming, current.voters.incoming),
        progress=_copy_progress(current.progress),
    )
    result = _apply_changes(start, changes, new_progress)
    result = replace(result, auto_leave=auto_leave)
    _check_invariants(result)
    return result


def leave_joint(current: Membership) -> Membership:
    if not current.voters.is_joint():
        raise ConfChangeInvalid("cannot leave a non-joint configuration")
    progress = _copy_progress(current.progress)
    learners = set(current.learners)
    for node_id in current.learners_next:
        learners.add(node_id)
        progress[node_id].is_learner = True
    incoming = current.voters.incoming.voters
    for node_id in current.voters.outgoing.voters:
        if node_id not in incoming and node_id not in learners:
            del progress[node_id]
    result = Membership(
        voters=JointConfig(current.voters.incoming, MajorityConfig()),
        learners=frozenset(learners),
        learners_next=frozenset(),
        auto_leave=False,
        progress=progress,
    )
    _check_invariants(result)
    return result


def simple(
    current: Membership,
    changes: tuple[ConfChangeSingle, ...],
    new_progress: ProgressFactory,
) -> Membership:
    if current.voters.is_joint():
        raise ConfChangeInvalid("cannot apply a simple change in a joint configuration")
    start = replace(current, progress=_copy_progress(current.progress))
    result = _apply_changes(start, changes, new_progress)
    before = current.voters.incoming.voters
    after = result.voters.incoming.voters
    if len(before ^ after) > 1:
        raise ConfChangeInvalid("more than one voter changed without entering joint consensus")
    _check_invariants(result)
    return result


def restore(conf_state: ConfState, new_progress: ProgressFactory) -> Membership:
    """The membership described by `conf_state`, with fresh progress for every member."""
    voters = JointConfig(
        MajorityConfig(conf_state.voters), MajorityConfig(conf_state.voters_outgoing)
    )
    progress: dict[NodeId, Progress] = {}
    for node_id in voters.ids():
        progress[node_id] = new_progress(is_learner=False)
    for node_id in conf_state.learners:
        progress[node_id] = new_progress(is_learner=True)
    # learners_next are outgoing voters, already tracked (as voters until leaving).
    result = Membership(
        voters=voters,
        learners=conf_state.learners,
        learners_next=conf_state.learners_next,
        auto_leave=conf_state.auto_leave,
        progress=progress,
    )
    _check_invariants(result)
    return result


def check_conf_state(conf_state: ConfState) -> None:
    """Raise ConfChangeInvalid unless some sequence of changes could have produced
    `conf_state`: valid node ids, at least one incoming voter, and `restore`'s invariants
    (for a configuration that arrives from a peer, in a snapshot)."""
    if not conf_state.voters:
        raise ConfChangeInvalid("a configuration without voters")
    for node_id in conf_state.members():
        if not NO_NODE < node_id <= MAX_NODE_ID:
            raise ConfChangeInvalid(f"invalid node id {node_id}")
    restore(
        conf_state, ProgressFactory(next_index=1, max_inflight_messages=1, max_inflight_bytes=0)
    )


def _copy_progress(progress: dict[NodeId, Progress]) -> dict[NodeId, Progress]:
    # Progress is mutable; the candidate membership must not alias the current one's flags.
    return {node_id: replace(item) for node_id, item in progress.items()}


def _apply_changes(
    start: Membership,
    changes: tuple[ConfChangeSingle, ...],
    new_progress: ProgressFactory,
) -> Membership:
    incoming = set(start.voters.incoming.voters)
    outgoing = start.voters.outgoing.voters
    learners = set(start.learners)
    learners_next = set(start.learners_next)
    progress = start.progress
    for change in changes:
        node_id = change.node_id
        match change.type:
            case ConfChangeType.ADD_NODE:
                if node_id not in progress:
                    progress[node_id] = new_progress(is_learner=False)
                progress[node_id].is_learner = False
                learners.discard(node_id)
                learners_next.discard(node_id)
                incoming.add(node_id)
            case ConfChangeType.ADD_LEARNER_NODE:
                if node_id not in progress:
                    progress[node_id] = new_progress(is_learner=True)
                incoming.discard(node_id)
                if node_id in outgoing:
                    # Still a voter of the outgoing half: becomes a learner on leaving.
                    learners_next.add(node_id)
                else:
                    progress[node_id].is_learner = True
                    learners.add(node_id)
            case ConfChangeType.REMOVE_NODE:
                incoming.discard(node_id)
                learners.discard(node_id)
                learners_next.discard(node_id)
                if node_id not in outgoing:
                    progress.pop(node_id, None)
            case ConfChangeType.UPDATE_NODE:
                # The configuration stays; only a member may be updated.
                if node_id not in progress:
                    raise ConfChangeInvalid(f"{node_id} is not a member: nothing to update")
    if not incoming:
        raise ConfChangeInvalid("removed all voters")
    return Membership(
        voters=JointConfig(MajorityConfig(frozenset(incoming)), start.voters.outgoing),
        learners=frozenset(learners),
        learners_next=frozenset(learners_next),
        auto_leave=start.auto_leave,
        progress=progress,
    )


def _check_invariants(membership: Membership) -> None:
    """Raise ConfChangeInvalid if the membership is inconsistent (a caller error)."""
    voters = membership.voters.ids()
    for node_id in voters | membership.learners | membership.learners_next:
        if node_id not in membership.progress:
            raise ConfChangeInvalid(f"no progress for member {node_id}")
    for node_id in membership.learners_next:
        if node_id not in membership.voters.outgoing.voters:
            raise ConfChangeInvalid(f"{node_id} is in learners_next but not an outgoing voter")
        if membership.progress[node_id].is_learner:
            raise ConfChangeInvalid(f"{node_id} is in learners_next but already a learner")
    for node_id in membership.learners:
        if node_id in voters:
            raise ConfChangeInvalid(f"{node_id} is both a voter and a learner")
        if not membership.progress[node_id].is_learner:
            raise ConfChangeInvalid(f"{node_id} is a learner but its progress says voter")
    if not membership.voters.is_joint() and (membership.learners_next or membership.auto_leave):
        raise ConfChangeInvalid("learners_next or auto_leave set outside a joint configuration")
    members = voters | membership.learners | membership.learners_next
    for node_id in membership.progress:
        if node_id not in members:
            raise ConfChangeInvalid(f"progress tracked for non-member {node_id}")
