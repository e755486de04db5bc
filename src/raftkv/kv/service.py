"""`KvService`: the KV store's API on a running node — what the HTTP server (and anyone
embedding raftkv as a KV store) calls.

- Writes are checked here first, so a refused request costs no log entry, then proposed
  through Raft (any node accepts them; followers forward to the leader) and answered with
  the state machine's result once applied on this node.
- Reads are linearizable by default: ReadIndex confirms the read point with a quorum and the
  local state machine answers once it has applied that far, on any node. With
  `serializable=True` the local state answers as it is (possibly stale; no leader needed).
- Exactly-once: a write may carry `client_id` and `sequence`. After an unknown outcome
  (ProposalTimeout, a lost connection) retrying with the same pair returns the original
  result instead of applying twice.

Leases: grant, keep-alive and revoke go through the log like writes; a grant without an id
gets a random one (retried on the rare collision). `lease_status` and `leases` read this
node's view (linearizable by default: ReadIndex first), with the remaining TTL from its own
countdown (`raftkv.kv.lease_timers`).

Errors: a `KvError` for a refused request (the same on every node), or the driver's own:
NotLeader, ProposalDropped, ProposalTimeout (outcome unknown), ReadTimeout, Overloaded,
Stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

from raftkv.kv.commands import (
    Compact,
    CompactResult,
    DeleteRange,
    DeleteResult,
    KvCommand,
    LeaseCheckpoint,
    LeaseCheckpointResult,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResult,
    LeaseKeepAlive,
    LeaseKeepAliveResult,
    LeaseRemaining,
    LeaseRevoke,
    LeaseRevokeResult,
    PublishMember,
    PublishMemberResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnResult,
    WriteRequest,
    encode_command,
)
from raftkv.kv.errors import LeaseExists, LeaseNotFound
from raftkv.kv.settings import KvSettings
from raftkv.kv.state_machine import KvStateMachine
from raftkv.kv.validation import check_request, check_session
from raftkv.raft.core.errors import InvariantViolation
from raftkv.raft.driver.node import Node

ResultT = TypeVar(
    "ResultT",
    PutResult,
    DeleteResult,
    TxnResult,
    CompactResult,
    PublishMemberResult,
    LeaseGrantResult,
    LeaseKeepAliveResult,
    LeaseRevokeResult,
    LeaseCheckpointResult,
)
# Random lease ids drawn before giving up on collisions (each collision costs a log entry).
_GRANT_ATTEMPTS = 3
_MAX_LEASE_ID = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    id: int
    # Seconds left by this node's countdown, and the TTL the lease was granted with.
    remaining_s: float
    granted_ttl: int
    # The attached keys, when asked for.
    keys: list[bytes]


class KvService:
    """`rng`: where lease ids granted without one come from; by default the OS's
    randomness (`random.SystemRandom`, as `secrets`), a seeded `Random` in simulations."""

    def __init__(
        self,
        node: Node,
        machine: KvStateMachine,
        settings: KvSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if node.state_machine is not machine:
            raise ValueError("the KvStateMachine must be the one the node applies to")
        self.node = node
        self.machine = machine
        self.settings = settings if settings is not None else KvSettings()
        self._rng = rng if rng is not None else random.SystemRandom()

    # -- writes ---------------------------------------------------------------------------

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> PutResult:
        request = Put(key=key, value=value, lease=lease, prev_kv=prev_kv)
        return await self._write(request, PutResult, client_id, sequence, timeout)

    async def delete_range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prev_kv: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> DeleteResult:
        request = DeleteRange(key=key, range_end=range_end, prev_kv=prev_kv)
        return await self._write(request, DeleteResult, client_id, sequence, timeout)

    async def txn(
        self,
        request: Txn,
        *,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> TxnResult:
        return await self._write(request, TxnResult, client_id, sequence, timeout)

    async def compact(self, revision: int, *, timeout: float | None = None) -> CompactResult:
        return await self._write(Compact(revision=revision), CompactResult, "", 0, timeout)

    async def publish_member(
        self, member_id: int, client_url: str, *, timeout: float | None = None
    ) -> PublishMemberResult:
        """Record, through the log, where clients reach member `member_id`."""
        request = PublishMember(member_id=member_id, client_url=client_url)
        return await self._write(request, PublishMemberResult, "", 0, timeout)

    async def lease_grant(
        self, ttl: int, lease_id: int = 0, *, timeout: float | None = None
    ) -> LeaseGrantResult:
        """A lease of `ttl` seconds (raised to min_lease_ttl_s). `lease_id` 0: a random id."""
        if lease_id:
            return await self._write(LeaseGrant(lease_id, ttl), LeaseGrantResult, "", 0, timeout)
        for attempt in range(_GRANT_ATTEMPTS):
            chosen = self._rng.randint(1, _MAX_LEASE_ID)
            try:
                return await self._write(LeaseGrant(chosen, ttl), LeaseGrantResult, "", 0, timeout)
            except LeaseExists:
                if attempt == _GRANT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def lease_keep_alive(
        self, lease_id: int, *, timeout: float | None = None
    ) -> LeaseKeepAliveResult:
        return await self._write(LeaseKeepAlive(lease_id), LeaseKeepAliveResult, "", 0, timeout)

    async def lease_revoke(
        self, lease_id: int, *, timeout: float | None = None
    ) -> LeaseRevokeResult:
        return await self._write(LeaseRevoke(lease_id), LeaseRevokeResult, "", 0, timeout)

    async def lease_expire(
        self, lease_id: int, renewed_index: int, *, timeout: float | None = None
    ) -> LeaseRevokeResult:
        """The leader's expiry (see LeaseExpire): a no-op if renewed since `renewed_index`."""
        request = LeaseExpire(lease_id, renewed_index)
        return await self._write(request, LeaseRevokeResult, "", 0, timeout)

    async def lease_checkpoint(
        self, leases: list[LeaseRemaining], *, timeout: float | None = None
    ) -> LeaseCheckpointResult:
        return await self._write(LeaseCheckpoint(leases), LeaseCheckpointResult, "", 0, timeout)

    async def lease_status(
        self,
        lease_id: int,
        *,
        keys: bool = False,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> LeaseStatus:
        """The lease as this node knows it; LeaseNotFound if it does not exist."""
        if not serializable:
            await self.node.read_index(timeout=timeout)
        record = self.machine.lease(lease_id)
        remaining = self.machine.lease_timers.remaining_s(lease_id)
        if record is None or remaining is None:
            raise LeaseNotFound(lease_id)
        attached = self.machine.lease_keys(lease_id) if keys else []
        return LeaseStatus(lease_id, remaining, record.ttl, attached)

    async def leases(
        self, *, serializable: bool = False, timeout: float | None = None
    ) -> list[LeaseStatus]:
        """Every lease (without keys), by id."""
        if not serializable:
            await self.node.read_index(timeout=timeout)
        timers = self.machine.lease_timers
        found = []
        for lease_id in self.machine.lease_ids():
            timer = timers.get(lease_id)
            remaining = timers.remaining_s(lease_id)
            if timer is not None and remaining is not None:
                found.append(LeaseStatus(lease_id, remaining, timer.ttl, []))
        return found

    async def _write(
        self,
        request: WriteRequest,
        expected: type[ResultT],
        client_id: str,
        sequence: int,
        timeout: float | None,
    ) -> ResultT:
        command = KvCommand(request=request, client_id=client_id, sequence=sequence)
        check_request(request, self.settings)
        check_session(command, self.settings)
        # A refusal applied in the log comes back as the KvError raised by propose.
        result = await self.node.propose(encode_command(command), timeout=timeout)
        if not isinstance(result, expected):
            raise InvariantViolation(
                f"{type(request).__name__} answered with {type(result).__name__}"
            )
        return result

    # -- reads ----------------------------------------------------------------------------

    async def range(
        self, request: Range, *, serializable: bool = False, timeout: float | None = None
    ) -> RangeResult:
        check_request(request, self.settings)
        if not serializable:
            await self.node.read_index(timeout=timeout)
        return self.machine.range(request)

    async def get(
        self, key: bytes, *, serializable: bool = False, timeout: float | None = None
    ) -> RangeResult:
        return await self.range(Range(key=key), serializable=serializable, timeout=timeout)
