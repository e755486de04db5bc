"""The cluster view and membership changes behind `/v1/cluster`, `/v1/members` and
`/v1/leader/transfer` (the HTTP handlers in `raftkv.server.http` call these).

Membership changes go through the node (`raftkv.raft.driver.membership`): one change at a
time, through the leader (a follower forwards), idempotent (adding a member already there
at the same address, or promoting a voter, answers with the membership as it is).
Promotion is refused (`NotCaughtUp`, 409 `not_caught_up`) while the learner lags.
"""

from __future__ import annotations

from raftkv.kv import KvStateMachine
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.node import Node
from raftkv.server.api import ClusterAnswer, MemberAnswer, MemberRole


def cluster_answer(node: Node, machine: KvStateMachine) -> ClusterAnswer:
    """The members as `node` knows them; match indexes only if it leads."""
    status = node.status()
    client_urls = machine.member_client_urls()
    is_leader = status.leader_id == status.id

    def match_index(member: NodeId) -> int | None:
        if not is_leader:
            return None
        if member == status.id:
            return status.last_index
        progress = status.progress.get(member)
        return None if progress is None else progress.match

    def active(member: NodeId) -> bool | None:
        if not is_leader:
            return None
        if member == status.id:
            return True
        progress = status.progress.get(member)
        return None if progress is None else progress.recent_active

    members = []
    # A member that knows it was removed may learn so from a peer before it applies the
    # change that removed it; it is not one of the members whatever its log says.
    for member in sorted(
        {*status.voters, *status.learners} - ({status.id} if status.removed else set())
    ):
        matched = match_index(member)
        role: MemberRole = (
            "leader"
            if member == status.leader_id
            else ("learner" if member in status.learners else "voter")
        )
        members.append(
            MemberAnswer(
                id=int(member),
                peer_url=status.peers.get(member, ""),
                client_url=client_urls.get(int(member), ""),
                role=role,
                match_index=matched,
                lag=None if matched is None else status.last_index - matched,
                active=active(member),
                last_contact_s=(
                    None
                    if member == status.id or member not in status.last_contact_s
                    else round(status.last_contact_s[member], 3)
                ),
            )
        )
    return ClusterAnswer(
        id=int(status.id),
        leader=int(status.leader_id),
        term=status.term,
        commit_index=status.commit_index,
        members=members,
    )
