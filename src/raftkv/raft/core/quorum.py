"""Quorum arithmetic: majority and joint configurations (Raft thesis §4.3).

A joint configuration is two majority configurations; a decision needs a majority in
each. An empty majority configuration agrees to everything, so a joint configuration with
an empty outgoing half behaves exactly like its incoming half.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from raftkv.raft.core.types import NodeId

# The committed index an empty configuration reports: "anything", so min() ignores it.
INFINITE_INDEX = 2**63 - 1


class VoteResult(enum.Enum):
    PENDING = "pending"  # not decided yet
    LOST = "lost"  # can no longer win
    WON = "won"


@dataclass(frozen=True, slots=True)
class MajorityConfig:
    voters: frozenset[NodeId] = frozenset()

    def committed_index(self, acked: Callable[[NodeId], int | None]) -> int:
        """The largest index acknowledged by a majority (`acked` returns None if unknown)."""
        if not self.voters:
            return INFINITE_INDEX
        indexes = sorted((acked(voter) or 0 for voter in self.voters), reverse=True)
        return indexes[len(indexes) // 2]

    def vote_result(self, votes: Mapping[NodeId, bool]) -> VoteResult:
        if not self.voters:
            return VoteResult.WON
        granted = sum(1 for voter in self.voters if votes.get(voter) is True)
        missing = sum(1 for voter in self.voters if voter not in votes)
        quorum = len(self.voters) // 2 + 1
        if granted >= quorum:
            return VoteResult.WON
        if granted + missing >= quorum:
            return VoteResult.PENDING
        return VoteResult.LOST


@dataclass(frozen=True, slots=True)
class JointConfig:
    incoming: MajorityConfig = MajorityConfig()
    outgoing: MajorityConfig = MajorityConfig()

    def ids(self) -> frozenset[NodeId]:
        return self.incoming.voters | self.outgoing.voters

    def is_joint(self) -> bool:
        return bool(self.outgoing.voters)

    def committed_index(self, acked: Callable[[NodeId], int | None]) -> int:
        return min(self.incoming.committed_index(acked), self.outgoing.committed_index(acked))

    def vote_result(self, votes: Mapping[NodeId, bool]) -> VoteResult:
        first = self.incoming.vote_result(votes)
        second = self.outgoing.vote_result(votes)
        if first is second:
            return first
        if VoteResult.LOST in (first, second):
            return VoteResult.LOST
        return VoteResult.PENDING

    def has_quorum(self, active: Iterable[NodeId]) -> bool:
        """Whether the nodes in `active` form a quorum of this configuration."""
        active_set = set(active)
        votes = {voter: voter in active_set for voter in self.ids()}
        return self.vote_result(votes) is VoteResult.WON
