"""etcd's Cluster service — MemberList, MemberAdd, MemberRemove, MemberPromote,
MemberUpdate — over raftkv's membership (`KvService`: one change at a time, through the
leader, as the HTTP API's /v1/members). How a member looks: `cluster_members`.

Each change is checked against the membership this node has applied after a ReadIndex (so
a member just added through another node is seen), with etcd's errors: an unknown or
removed id is NotFound "etcdserver: member not found"; promoting a voter is "can only
promote a learner member"; a learner that lags is "... which is in sync with leader".
Every change answers the members as they are once it has applied here.

Where raftkv differs (docs/etcd.md):
- MemberAdd needs an id, which etcd draws at random: raftkv takes one above every id the
  cluster has used (members and removed ones, never reused). raftkv adds learners only:
  `isLearner=false` adds a learner too, and the answer says so (isLearner true); it becomes
  a voter by `member promote` once caught up, or by itself when started with
  `--join ... --auto-promote`.
"""

from __future__ import annotations

from typing import Final

from raftkv.etcd.calls import Context, translated
from raftkv.etcd.cluster_members import (
    MEMBER_EXISTS,
    PEER_URL_EXISTS,
    members_of,
    peer_address,
    peer_url_of,
)
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.errors import MEMBER_NOT_FOUND, MEMBER_NOT_LEARNER, EtcdError
from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.errors import MembershipError
from raftkv.raft.driver.status import NodeStatus

# Ids tried by one MemberAdd when the one chosen was taken meanwhile (another add, through
# another member, that this node had not applied yet).
_ADD_ATTEMPTS: Final = 3
# raftkv's member ids, as its settings bound them (etcd's are uint64 too).
_MAX_MEMBER_ID: Final = 2**64 - 1


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, context: EtcdContext) -> None:
        self.context = context
        self.service = context.service

    def _members(self) -> list[rpc_pb2.Member]:
        service = self.service
        return members_of(
            service.status(), service.member_client_urls(), service.member_etcd_urls()
        )

    async def _applied_status(self, call: Context) -> NodeStatus:
        """The membership with every change committed before the call applied here."""
        await self.service.read_barrier(timeout=self.context.timeout(call))
        return self.service.status()

    async def _existing(self, member_id: int, call: Context) -> tuple[NodeId, NodeStatus]:
        status = await self._applied_status(call)
        member = NodeId(member_id)
        if member_id <= 0 or member not in {*status.voters, *status.learners}:
            raise EtcdError(MEMBER_NOT_FOUND)
        return member, status

    @translated
    async def MemberList(
        self, request: rpc_pb2.MemberListRequest, call: Context
    ) -> rpc_pb2.MemberListResponse:
        if request.linearizable:
            await self.service.read_barrier(timeout=self.context.timeout(call))
        return rpc_pb2.MemberListResponse(header=self.context.header(), members=self._members())

    @translated
    async def MemberAdd(
        self, request: rpc_pb2.MemberAddRequest, call: Context
    ) -> rpc_pb2.MemberAddResponse:
        address = peer_address(list(request.peerURLs))
        status = await self._applied_status(call)
        if address in status.peers.values():
            raise EtcdError(PEER_URL_EXISTS)
        timeout = self.context.timeout(call)
        used = {*status.voters, *status.learners, *self.service.removed_member_ids()}
        member = NodeId(max(used, default=0) + 1)
        for attempt in range(_ADD_ATTEMPTS):
            if member > _MAX_MEMBER_ID:
                raise EtcdError(MEMBER_EXISTS)
            try:
                await self.service.add_learner(member, address, timeout=timeout)
                break
            except MembershipError as error:
                # Taken meanwhile (a member now, or removed: never reused): the next id.
                if error.code != "invalid" or attempt == _ADD_ATTEMPTS - 1:
                    raise
                if address in self.service.status().peers.values():
                    raise EtcdError(PEER_URL_EXISTS) from None
                member = NodeId(member + 1)
        return rpc_pb2.MemberAddResponse(
            header=self.context.header(),
            member=rpc_pb2.Member(ID=int(member), peerURLs=[peer_url_of(address)], isLearner=True),
            members=self._members(),
        )

    @translated
    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, call: Context
    ) -> rpc_pb2.MemberRemoveResponse:
        member, _ = await self._existing(request.ID, call)
        await self.service.remove_member(member, timeout=self.context.timeout(call))
        return rpc_pb2.MemberRemoveResponse(header=self.context.header(), members=self._members())

    @translated
    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, call: Context
    ) -> rpc_pb2.MemberPromoteResponse:
        member, status = await self._existing(request.ID, call)
        if member not in status.learners:
            raise EtcdError(MEMBER_NOT_LEARNER)
        await self.service.promote(member, timeout=self.context.timeout(call))
        return rpc_pb2.MemberPromoteResponse(header=self.context.header(), members=self._members())

    @translated
    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, call: Context
    ) -> rpc_pb2.MemberUpdateResponse:
        member, status = await self._existing(request.ID, call)
        address = peer_address(list(request.peerURLs))
        if any(peer != member and taken == address for peer, taken in status.peers.items()):
            raise EtcdError(PEER_URL_EXISTS)
        await self.service.update_member(member, address, timeout=self.context.timeout(call))
        return rpc_pb2.MemberUpdateResponse(header=self.context.header(), members=self._members())
