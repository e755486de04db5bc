"""The cluster routes: `GET /v1/cluster` (the members), `POST /v1/members` (add a learner),
`POST /v1/members/{id}/promote`, `DELETE /v1/members/{id}` and `POST /v1/leader/transfer`.

Membership changes go through the node (`raftkv.raft.driver.membership`): one change at a
time, through the leader (a follower forwards), idempotent (adding a member already there
at the same address, or promoting a voter, answers with the membership as it is).
Promotion is refused (`LearnerNotCaughtUp`, 409 `not_caught_up`) while the learner lags.
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from raftkv.api.cluster import (
    AddMemberBody,
    ClusterAnswer,
    MemberAnswer,
    MemberRole,
    TransferAnswer,
    TransferBody,
    UpdateMemberBody,
)
from raftkv.kv.service import KvService
from raftkv.raft.core.types import NodeId
from raftkv.server.http_common import ApiError, decode_body, json_answer

__all__ = ["ClusterHandlers", "cluster_answer"]

BodyT = TypeVar("BodyT", AddMemberBody, TransferBody, UpdateMemberBody)
_MAX_PEER_URL = 255


def cluster_answer(service: KvService, cluster_id: int = 0) -> ClusterAnswer:
    """The members as `service`'s node knows them; match indexes only if it leads."""
    status = service.status()
    client_urls = service.member_client_urls()
    etcd_urls = service.member_etcd_urls()
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
                etcd_url=etcd_urls.get(int(member), ""),
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
        cluster_id=cluster_id,
        id=int(status.id),
        leader=int(status.leader_id),
        term=status.term,
        commit_index=status.commit_index,
        members=members,
    )


def _member_id(text: str) -> NodeId:
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) < 1:
        raise ApiError(400, "invalid_request", f"a member id is a positive integer, got {text!r}")
    return NodeId(int(text))


def _peer_url(peer_url: str) -> str:
    """`peer_url` if it is one: the transport decides what an address looks like
    (host:port); here only that there is one, of a sane size."""
    if not 0 < len(peer_url) <= _MAX_PEER_URL:
        raise ApiError(400, "invalid_request", f"peer_url must have 1..{_MAX_PEER_URL} characters")
    return peer_url


class ClusterHandlers:
    def __init__(
        self, service: KvService, timeout: float, max_body_bytes: int, cluster_id: int = 0
    ) -> None:
        self.service = service
        # Answered in /v1/cluster, for a node joining to learn (0: not known here).
        self.cluster_id = cluster_id
        # How long a change waits to be made.
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes

    async def _body(self, request: web.Request, kind: type[BodyT]) -> BodyT:
        return await decode_body(request, kind, self.max_body_bytes)

    async def cluster(self, request: web.Request) -> web.Response:
        return json_answer(cluster_answer(self.service, self.cluster_id))

    async def add_member(self, request: web.Request) -> web.Response:
        body = await self._body(request, AddMemberBody)
        member = _member_id(str(body.id))
        await self.service.add_learner(member, _peer_url(body.peer_url), timeout=self.timeout)
        return json_answer(cluster_answer(self.service, self.cluster_id))

    async def update_member(self, request: web.Request) -> web.Response:
        member = _member_id(request.match_info["id"])
        body = await self._body(request, UpdateMemberBody)
        await self.service.update_member(member, _peer_url(body.peer_url), timeout=self.timeout)
        return json_answer(cluster_answer(self.service, self.cluster_id))

    async def promote_member(self, request: web.Request) -> web.Response:
        member = _member_id(request.match_info["id"])
        await self.service.promote(member, timeout=self.timeout)
        return json_answer(cluster_answer(self.service, self.cluster_id))

    async def remove_member(self, request: web.Request) -> web.Response:
        member = _member_id(request.match_info["id"])
        await self.service.remove_member(member, timeout=self.timeout)
        return json_answer(cluster_answer(self.service, self.cluster_id))

    async def transfer_leadership(self, request: web.Request) -> web.Response:
        body = await self._body(request, TransferBody)
        target = None if body.to == 0 else _member_id(str(body.to))
        try:
            leader = await self.service.transfer_leadership(target, timeout=self.timeout)
        except TimeoutError:
            raise ApiError(
                504,
                "timeout",
                "no new leader was seen in time: the transfer may still happen; "
                "see who leads with raftkv status",
            ) from None
        return json_answer(TransferAnswer(leader=int(leader)))
