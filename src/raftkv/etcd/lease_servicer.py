"""etcd's Lease service — LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
LeaseLeases — over `KvService`'s leases.

As etcd answers:
- LeaseGrant: ID 0 lets the server pick one; a TTL under the minimum is raised to it (and
  answered so); a TTL over the maximum is OutOfRange "etcdserver: too large lease TTL".
  raftkv's maximum is KvSettings.max_lease_ttl_s (a year by default) where etcd's is 9e9 s.
- LeaseRevoke of an unknown lease: NotFound "etcdserver: requested lease not found".
- LeaseKeepAlive: one answer per request, in order, each a renewal through the log; an
  unknown lease is answered TTL 0 and the stream stays open. Other failures (no leader in
  time) end the stream with etcd's status, as etcd's does.
- LeaseTimeToLive of an unknown lease: TTL -1 (no error); TTL is the whole seconds left.
- LeaseLeases: the ids only.

Ids: etcd's lease ids are int64; raftkv's are 1..2**63-1. A non-positive id names no lease
(as in etcd, where 0 is "no lease"): revoke answers NotFound, keep-alive TTL 0,
time-to-live -1. A grant asking for a negative id is refused (etcd would grant it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv.etcd.calls import Context, fail, translated
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.errors import LEASE_NOT_FOUND, LEASE_TTL_TOO_LARGE, EtcdError
from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.kv.errors import LeaseNotFound


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, context: EtcdContext) -> None:
        self.context = context
        self.service = context.service

    @translated
    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, call: Context
    ) -> rpc_pb2.LeaseGrantResponse:
        asked = request.TTL
        if asked > self.service.settings.max_lease_ttl_s:
            raise EtcdError(LEASE_TTL_TOO_LARGE)
        # etcd raises a TTL under its minimum (0 and negative ones too) to the minimum; the
        # state machine raises anything from 1 to min_lease_ttl_s.
        ttl = max(asked, 1)
        granted = await self.service.lease_grant(
            ttl, request.ID, timeout=self.context.timeout(call)
        )
        return rpc_pb2.LeaseGrantResponse(
            header=self.context.header(granted.header.revision), ID=granted.id, TTL=granted.ttl
        )

    @translated
    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, call: Context
    ) -> rpc_pb2.LeaseRevokeResponse:
        if request.ID <= 0:
            raise EtcdError(LEASE_NOT_FOUND)
        revoked = await self.service.lease_revoke(request.ID, timeout=self.context.timeout(call))
        return rpc_pb2.LeaseRevokeResponse(header=self.context.header(revoked.header.revision))

    async def LeaseKeepAlive(
        self, requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], call: Context
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        # One renewal at a time: the answers come in the order of the requests, and a
        # client that sends without reading is held back by gRPC's flow control.
        async for request in requests:
            # The header is taken before the renewal, as etcd's: a client never sees a
            # renewal answered at a revision after the one its lease was revoked at.
            header = self.context.header()
            ttl = 0
            if request.ID > 0:
                try:
                    renewed = await self.service.lease_keep_alive(
                        request.ID, timeout=self.context.request_timeout_s
                    )
                    ttl = renewed.ttl
                except LeaseNotFound:
                    ttl = 0
                except Exception as error:
                    await fail(call, error)
            yield rpc_pb2.LeaseKeepAliveResponse(header=header, ID=request.ID, TTL=ttl)

    @translated
    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, call: Context
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        timeout = self.context.timeout(call)
        try:
            if request.ID <= 0:
                raise LeaseNotFound(request.ID)
            status = await self.service.lease_status(request.ID, keys=request.keys, timeout=timeout)
        except LeaseNotFound:
            return rpc_pb2.LeaseTimeToLiveResponse(
                header=self.context.header(), ID=request.ID, TTL=-1
            )
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=self.context.header(),
            ID=status.id,
            # Whole seconds left, as etcd truncates them.
            TTL=max(int(status.remaining_s), 0),
            grantedTTL=status.granted_ttl,
            keys=status.keys,
        )

    @translated
    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, call: Context
    ) -> rpc_pb2.LeaseLeasesResponse:
        leases = await self.service.leases(timeout=self.context.timeout(call))
        return rpc_pb2.LeaseLeasesResponse(
            header=self.context.header(),
            leases=[rpc_pb2.LeaseStatus(ID=lease.id) for lease in leases],
        )
