"""etcd's Maintenance service — Status, Alarm, Hash, HashKV, Snapshot, MoveLeader,
Defragment — over `KvService`.

- Status: `version` is etcd's API level with raftkv's own version as build metadata
  (VERSION, e.g. "3.5.0+raftkv.0.1.0": a semantic-version comparison sees 3.5.0); dbSize
  and dbSizeInUse are the bytes of this member's storage directory (RocksDB's files: it
  has no free pages to tell apart); leader, raftIndex (the commit index), raftTerm,
  raftAppliedIndex and isLearner as this node knows them; errors name a missing leader and
  every alarm, in etcd's words.
- Alarm: GET lists the cluster's CORRUPT and NOSPACE alarms. Alarms are raised by raftkv's
  own checks (hash checks; each member's space monitor): ACTIVATE is refused. DEACTIVATE
  of a raised NOSPACE alarm disarms it through the log (`etcdctl alarm disarm`; a member
  still out of space raises it again within a second); of an alarm that is not raised it
  answers as etcd does (nothing); of a raised CORRUPT alarm it is refused — that ends when
  its member is removed (or the cluster restored from a backup).
- Hash / HashKV: the first 4 bytes of a SHA-256 as a uint32 — the same on every member
  that has applied the same entries, but not etcd's crc32 (compare raftkv's members with
  each other, never with an etcd's). Hash covers the whole replicated state. HashKV covers
  the MVCC history up to its `revision` (0 or less: the current one;
  raftkv.kv.history_hash): equal at R before and after later writes; a future revision
  or one below the compacted revision is refused with etcd's errors; it scans every
  stored version, at most the node's `max_scan_entries` (RESOURCE_EXHAUSTED beyond).
  `compact_revision` is -1 until the first compaction, as etcd's.
- Snapshot: raftkv's backup file (`raftkv snapshot restore` reads it, not etcd's tools),
  streamed as etcd streams its database; `remaining_bytes` counts down to 0.
- MoveLeader: on the leader only, as in etcd ("etcdserver: not leader" elsewhere; etcdctl
  finds the leader itself); the target must be a voter.
- Defragment: compacts this member's RocksDB files whole (KvService.defragment, on a
  worker thread; the member serves meanwhile): the space of deleted and compacted data is
  given back now rather than when RocksDB's background compactions reach it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import grpc

from raftkv.etcd.calls import Context, fail, translated
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.errors import (
    BAD_LEADER_TRANSFEREE,
    NO_LEADER,
    TOO_MANY_REQUESTS,
    EtcdError,
)
from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.kv.layout import CorruptAlarm, NoSpaceAlarm
from raftkv.raft.core.types import NodeId


def _version() -> str:
    try:
        own = importlib.metadata.version("raftkv")
    except importlib.metadata.PackageNotFoundError:
        own = "unknown"
    # Build metadata holds [0-9A-Za-z-] in dot-separated parts.
    return "3.5.0+raftkv." + re.sub(r"[^0-9A-Za-z.-]", "-", own)


VERSION: Final = _version()
NOT_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: not leader")
TRANSFER_TIMEOUT = (
    grpc.StatusCode.UNAVAILABLE,
    "etcdserver: request timed out, leader transfer took too long",
)
ALARMS_ARE_RAFTKVS = (
    grpc.StatusCode.FAILED_PRECONDITION,
    "raftkv: alarms are raised by the cluster's own checks, not by clients",
)
CORRUPT_STAYS = (
    grpc.StatusCode.FAILED_PRECONDITION,
    "raftkv: a CORRUPT alarm ends when its member is removed (then added back with a new id "
    "and an empty data dir) or the cluster is restored from a backup; it cannot be "
    "deactivated",
)
# Bytes of the backup in one Snapshot message.
SNAPSHOT_CHUNK_BYTES: Final = 256 * 1024
# Snapshots made at once through one port (each holds a whole backup in memory).
MAX_CONCURRENT_SNAPSHOTS: Final = 2
# Tries at hashing a state that stays put while it is read (writes may apply meanwhile).
_HASH_ATTEMPTS: Final = 3
_CORRUPT = rpc_pb2.CORRUPT
_NOSPACE = rpc_pb2.NOSPACE
_ACTIONS: Final = frozenset(
    {rpc_pb2.AlarmRequest.GET, rpc_pb2.AlarmRequest.ACTIVATE, rpc_pb2.AlarmRequest.DEACTIVATE}
)
_ALARM_TYPES: Final = frozenset({rpc_pb2.NONE, rpc_pb2.NOSPACE, rpc_pb2.CORRUPT})


def uint32_of(sha256_hex: str) -> int:
    """A raftkv state hash (hex SHA-256) as the uint32 etcd's hash fields hold."""
    return int(sha256_hex[:8], 16)


def alarm_text(alarm: CorruptAlarm | NoSpaceAlarm) -> str:
    """An alarm as etcd's Status errors spell it (the Go text form of AlarmMember)."""
    kind = "CORRUPT" if isinstance(alarm, CorruptAlarm) else "NOSPACE"
    return f"memberID:{alarm.member_id} alarm:{kind} "


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, context: EtcdContext) -> None:
        self.context = context
        self.service = context.service
        # Snapshot calls under way (at most MAX_CONCURRENT_SNAPSHOTS).
        self.snapshots_in_progress = 0

    @translated
    async def Status(self, request: rpc_pb2.StatusRequest, call: Context) -> rpc_pb2.StatusResponse:
        service = self.service
        status = service.status()
        size = await asyncio.to_thread(service.storage_bytes) or 0
        errors = [] if status.leader_id else [NO_LEADER[1]]
        errors += [alarm_text(alarm) for alarm in service.corrupt_alarms()]
        errors += [alarm_text(alarm) for alarm in service.nospace_alarms()]
        return rpc_pb2.StatusResponse(
            header=self.context.header(),
            version=VERSION,
            dbSize=size,
            dbSizeInUse=size,
            leader=int(status.leader_id),
            raftIndex=status.commit_index,
            raftTerm=status.term,
            raftAppliedIndex=status.applied_index,
            errors=errors,
            isLearner=status.id in status.learners,
        )

    @translated
    async def Alarm(self, request: rpc_pb2.AlarmRequest, call: Context) -> rpc_pb2.AlarmResponse:
        if request.action not in _ACTIONS:
            raise EtcdError((grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: unknown alarm action"))
        if request.alarm not in _ALARM_TYPES:
            raise EtcdError((grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: unknown alarm type"))
        service, member = self.service, request.memberID
        # Every alarm of the kind asked (NONE: all), as etcd's GET answers whatever memberID.
        corrupt = [
            rpc_pb2.AlarmMember(memberID=alarm.member_id, alarm=_CORRUPT)
            for alarm in service.corrupt_alarms()
            if request.alarm in (rpc_pb2.NONE, _CORRUPT)
        ]
        nospace = [
            rpc_pb2.AlarmMember(memberID=alarm.member_id, alarm=_NOSPACE)
            for alarm in service.nospace_alarms()
            if request.alarm in (rpc_pb2.NONE, _NOSPACE)
        ]
        raised = corrupt + nospace
        match request.action:
            case rpc_pb2.AlarmRequest.ACTIVATE:
                raise EtcdError(ALARMS_ARE_RAFTKVS)
            case rpc_pb2.AlarmRequest.DEACTIVATE:
                if any(alarm.memberID == member for alarm in corrupt):
                    raise EtcdError(CORRUPT_STAYS)
                if request.alarm == _NOSPACE and any(alarm.memberID == member for alarm in nospace):
                    # The alarm deactivated, as etcd answers (`etcdctl alarm disarm`).
                    await service.disarm_nospace_alarms(member, timeout=self.context.timeout(call))
                    raised = [rpc_pb2.AlarmMember(memberID=member, alarm=_NOSPACE)]
                else:
                    raised = []  # nothing raised to deactivate: etcd answers no alarm
        return rpc_pb2.AlarmResponse(header=self.context.header(), alarms=raised)

    async def _stable_hash(self, hashing: Callable[[], Awaitable[str]]) -> tuple[str, int]:
        """`hashing()`'s hash and the revision it was taken at: retried while entries apply
        during the hash; under a steady stream of writes, the last try's."""
        service = self.service
        for _ in range(_HASH_ATTEMPTS):
            applied, revision = service.status().applied_index, service.current_revision()
            digest = await hashing()
            if service.status().applied_index == applied:
                break
        return digest, revision

    @translated
    async def Hash(self, request: rpc_pb2.HashRequest, call: Context) -> rpc_pb2.HashResponse:
        digest, revision = await self._stable_hash(self.service.state_hash)
        return rpc_pb2.HashResponse(header=self.context.header(revision), hash=uint32_of(digest))

    @translated
    async def HashKV(self, request: rpc_pb2.HashKVRequest, call: Context) -> rpc_pb2.HashKVResponse:
        # One snapshot answers all three numbers: the hash, the compacted revision it was
        # taken above, and the current revision (the header's, as etcd's).
        hashed = await self.service.history_hash(request.revision)
        return rpc_pb2.HashKVResponse(
            header=self.context.header(hashed.current_revision),
            hash=uint32_of(hashed.digest.hex()),
            # etcd answers -1 until its first compaction; raftkv's compacted revision is 0.
            compact_revision=hashed.compacted_revision or -1,
        )

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, call: Context
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        backup = self.context.backup
        if backup is None:
            await call.abort(
                grpc.StatusCode.UNIMPLEMENTED, "raftkv: this server makes no snapshots"
            )
        if self.snapshots_in_progress >= MAX_CONCURRENT_SNAPSHOTS:
            await fail(call, EtcdError(TOO_MANY_REQUESTS))
        self.snapshots_in_progress += 1
        try:
            try:
                data = await backup(self.context.timeout(call))
            except Exception as error:
                await fail(call, error)
            header = self.context.header()
            for offset in range(0, len(data), SNAPSHOT_CHUNK_BYTES):
                blob = data[offset : offset + SNAPSHOT_CHUNK_BYTES]
                yield rpc_pb2.SnapshotResponse(
                    header=header, remaining_bytes=len(data) - offset - len(blob), blob=blob
                )
        finally:
            self.snapshots_in_progress -= 1

    @translated
    async def MoveLeader(
        self, request: rpc_pb2.MoveLeaderRequest, call: Context
    ) -> rpc_pb2.MoveLeaderResponse:
        status = self.service.status()
        if status.leader_id != status.id:
            raise EtcdError(NOT_LEADER)
        target = NodeId(request.targetID)
        if request.targetID <= 0 or target not in status.voters:
            raise EtcdError(BAD_LEADER_TRANSFEREE)
        if target != status.id:
            try:
                await self.service.transfer_leadership(target, timeout=self.context.timeout(call))
            except TimeoutError as error:
                # Not raftkv's ReadTimeout or ProposalTimeout: the transfer's own wait.
                if type(error) is not TimeoutError:
                    raise
                raise EtcdError(TRANSFER_TIMEOUT) from None
        return rpc_pb2.MoveLeaderResponse(header=self.context.header())

    @translated
    async def Defragment(
        self, request: rpc_pb2.DefragmentRequest, call: Context
    ) -> rpc_pb2.DefragmentResponse:
        await self.service.defragment()
        return rpc_pb2.DefragmentResponse(header=self.context.header())
