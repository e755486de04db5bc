"""`KvService`: the KV store's API on a running node — what the HTTP server (and anyone
embedding raftkv as a KV store) calls.

The server's one door to the store: its handlers reach the node and the state machine only
through here, for the data (reads, writes, leases, watches, backups) and for what they show
or change of the member (status, membership, leadership, CORRUPT alarms). `node` and
`machine` stay public for whoever owns them beside the service: the store's own background
tasks (`LeaseKeeper`, `CorruptChecker`), the server's runner (which builds, starts and stops
the node) and its metrics (which read counters of both, read-only).

- Writes are checked here first, so a refused request costs no log entry, then proposed
  through Raft (any node accepts them; followers forward to the leader) and answered with
  the state machine's result once applied on this node.
- Reads are linearizable by default: ReadIndex confirms the read point with a quorum and the
  local state machine answers once it has applied that far, on any node. With
  `serializable=True` the local state answers as it is (possibly stale; no leader needed).
  A txn without writes (`is_read_only`) is a read too: it never reaches the log, and it
  does not touch its exactly-once session (it changes nothing, so nothing can apply twice:
  `client_id` and `sequence` are only checked for form).
- No read stalls the event loop (which also runs Raft: a stall past the election timeout
  costs an election). A read that scans (a key range, or a past revision) runs on a worker
  thread over a snapshot of the state taken at its read point (`KvStateMachine.read_view`),
  so it answers exactly that state while applies go on; a point read at the current
  revision answers on the loop. `ReadLimits` bounds each read: the entries it may scan
  (ScanTooLarge beyond) and the bytes of key-values it answers (then `more` is set). The
  ranges of a txn that writes (and its compares' key ranges) are read on every member's
  loop when it applies, so this node scans them first, off the loop, and refuses the txn
  if they would scan more than `max_txn_scan_entries`; their answer is cut to
  `max_response_bytes` like a read's.
- Exactly-once: a write may carry `client_id` and `sequence`. After an unknown outcome
  (ProposalTimeout, a lost connection) retrying with the same pair returns the original
  result instead of applying twice.

Leases: grant, keep-alive and revoke go through the log like writes; a grant without an id
gets a random one (retried on the rare collision). `lease_status` and `leases` read this
node's view (linearizable by default: ReadIndex first), with the remaining TTL from its own
countdown (`raftkv.kv.lease_timers`).

Authorization (`raftkv.kv.authorization`): every call that reads, writes or administers
acts for the task's caller (`raftkv.kv.callers.current_caller`): a write is checked before
it is proposed and carries the auth revision of the check (refused at apply, then checked
and proposed again, if users or roles changed meanwhile); a read is checked once its read
point is reached, against state at least that recent. While auth is disabled nothing is
refused. `change_auth` proposes the changes of users and roles (`raftkv.kv.auth_service`
hashes passwords and answers logins).

Errors: a `KvError` for a refused request (the same on every node, except ScanTooLarge: a
limit of this node's), or the driver's own: NotLeader, ProposalDropped, ProposalTimeout
(outcome unknown), ReadTimeout, Overloaded, Stopped; for membership changes
LearnerNotCaughtUp and MembershipError too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from raftkv.kv.auth_commands import AuthRequest
from raftkv.kv.authorization import Authorizer
from raftkv.kv.callers import INTERNAL, acting_as, current_caller
from raftkv.kv.commands import (
    AuthChangeResponse,
    Compact,
    CompactResponse,
    DeleteRange,
    DeleteRangeResponse,
    DisarmNoSpaceAlarm,
    KvCommand,
    LeaseCheckpoint,
    LeaseCheckpointResponse,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResponse,
    LeaseKeepAlive,
    LeaseKeepAliveResponse,
    LeaseRemaining,
    LeaseRevoke,
    LeaseRevokeResponse,
    NoSpaceAlarmResponse,
    PublishMember,
    PublishMemberResponse,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    ResponseOp,
    Txn,
    TxnResponse,
    WriteRequest,
    encode_command,
    is_read_only,
)
from raftkv.kv.errors import (
    AuthRevisionChanged,
    Compacted,
    FutureRevision,
    InvalidRequest,
    LeaseExists,
    LeaseNotFound,
)
from raftkv.kv.history_hash import HistoryHash
from raftkv.kv.layout import CorruptAlarm, NoSpaceAlarm
from raftkv.kv.mvcc import MvccView
from raftkv.kv.read_budget import ReadBudget
from raftkv.kv.settings import KvSettings
from raftkv.kv.space_monitor import directory_bytes
from raftkv.kv.state_machine import FrozenSnapshot, KvStateMachine
from raftkv.kv.validation import check_request, check_session
from raftkv.kv.watch import Watch, WatchHub, WatchSpec
from raftkv.raft.clock import Clock
from raftkv.raft.core.errors import ConfigInvalid, InvariantViolation
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.errors import Overloaded, ProposalTimeout
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.status import NodeStatus

ResultT = TypeVar(
    "ResultT",
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactResponse,
    PublishMemberResponse,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseRevokeResponse,
    LeaseCheckpointResponse,
    NoSpaceAlarmResponse,
    AuthChangeResponse,
)
ReadT = TypeVar("ReadT")
# Random lease ids drawn before giving up on collisions (each collision costs a log entry).
_GRANT_ATTEMPTS = 3
_MAX_LEASE_ID = (1 << 63) - 1
# The most revisions one compaction log entry covers (see KvService.compact): a put-heavy
# history compacts about 1,000 keys per entry, tens of milliseconds of each member's loop.
COMPACT_STEP_REVISIONS = 1000
# Proposals of one write refused because users or roles changed between its check and its
# apply (AuthRevisionChanged), before the error is the answer: auth changes are rare, so a
# second refusal in a row is rarer still.
_AUTH_ATTEMPTS = 3
# The writes that may share a log entry with others (NodeSettings.batch_proposals): their
# effect never depends on their log index. Lease commands (renewals are stamped with it),
# hash checks (which commit the state at it) and the node's own bookkeeping get their own.
_BATCHABLE = (Put, DeleteRange, Txn)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """This node's bounds on the reads it serves. Node-local, unlike KvSettings: they
    decide what this node answers or refuses, never what the replicated state becomes."""

    # MVCC entries one read may scan: a range, or every range of a txn without writes,
    # `count` included (one entry per key at the current revision, per stored version at a
    # past one). Beyond: ScanTooLarge (HTTP 413 `scan_too_large`). Each costs about two
    # microseconds of a read thread; more lets bigger ranges be counted, and lets one
    # request hold a read thread (and a core) longer: 2,000,000 is about 4 s.
    max_scan_entries: int = 2_000_000
    # The same for the ranges of a txn that writes, checked by this node before proposing
    # (an estimate: the data may change before the txn applies). Every member reads them
    # on its event loop when the txn applies, where each entry delays heartbeats by a
    # couple of microseconds: 10,000 is about 20 ms.
    max_txn_scan_entries: int = 10_000
    # The key-values one read answers, in bytes (keys and values, plus KV_OVERHEAD_BYTES
    # each); past it a range answers the key-values that fit with `more` set, as `limit`
    # does (the first key-value always fits). Bounds the memory and the encoding time of
    # an answer; clients page with `limit` and a start key.
    max_response_bytes: int = 4 << 20
    # Worker threads that read scans; at most this many run at once, the others wait.
    read_threads: int = 2

    def __post_init__(self) -> None:
        for name in (
            "max_scan_entries",
            "max_txn_scan_entries",
            "max_response_bytes",
            "read_threads",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigInvalid(f"ReadLimits.{name} must be a positive integer, got {value!r}")

    def read_budget(self) -> ReadBudget:
        return ReadBudget(self.max_scan_entries, self.max_response_bytes)


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
    randomness (`random.SystemRandom`, as `secrets`), a seeded `Random` in simulations.
    `close()` stops the read threads."""

    def __init__(
        self,
        node: Node,
        machine: KvStateMachine,
        settings: KvSettings | None = None,
        *,
        read_limits: ReadLimits | None = None,
        rng: random.Random | None = None,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        if node.state_machine is not machine:
            raise ValueError("the KvStateMachine must be the one the node applies to")
        self.node = node
        self.machine = machine
        self.settings = settings if settings is not None else KvSettings()
        self.read_limits = read_limits if read_limits is not None else ReadLimits()
        self._rng = rng if rng is not None else random.SystemRandom()
        # Scans being read (or waiting for a view): at most read_threads, so that no more
        # snapshots are pinned than there are threads to read them.
        self._read_slots = asyncio.Semaphore(self.read_limits.read_threads)
        self._readers: ThreadPoolExecutor | None = None
        # A defragmentation is running (at most one per node).
        self._defragmenting = False
        # What callers may do (the state machine's auth state, read at each check: a
        # snapshot install replaces it). `wall_clock_ms`: tokens' expiry time.
        self.authorizer = Authorizer(lambda: machine.auth, wall_clock_ms)

    def close(self) -> None:
        """Stop the read threads (a scan under way ends with its view: see _read)."""
        if self._readers is not None:
            self._readers.shutdown(wait=False, cancel_futures=True)
            self._readers = None

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
    ) -> PutResponse:
        request = Put(key=key, value=value, lease=lease, prev_kv=prev_kv)
        return await self._write(request, PutResponse, client_id, sequence, timeout)

    async def delete_range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prev_kv: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> DeleteRangeResponse:
        request = DeleteRange(key=key, range_end=range_end, prev_kv=prev_kv)
        return await self._write(request, DeleteRangeResponse, client_id, sequence, timeout)

    async def txn(
        self,
        request: Txn,
        *,
        serializable: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> TxnResponse:
        """A txn without writes is a read (linearizable unless `serializable`); one that
        writes goes through the log (`serializable` is refused: it is for reads)."""
        check_request(request, self.settings)
        check_session(KvCommand(request, client_id, sequence), self.settings)
        if is_read_only(request):
            if not serializable:
                await self.node.read_index(timeout=timeout)
            self.authorizer.check(current_caller(), request)
            budget = self.read_limits.read_budget()
            return await self._read(
                lambda view: view.txn(request, budget), scans=_txn_scans(request)
            )
        if serializable:
            raise InvalidRequest(
                "consistency=serializable is for reads; a txn that writes goes through the log"
            )
        self.authorizer.check(current_caller(), request)
        if _txn_scans(request):
            limits = self.read_limits
            budget = ReadBudget(limits.max_txn_scan_entries, setting="max_txn_scan_entries")
            await self._read(lambda view: view.scan_txn_ranges(request, budget), scans=True)
        result = await self._write(request, TxnResponse, client_id, sequence, timeout)
        return _cut_to(result, self.read_limits.read_budget())

    async def compact(
        self,
        revision: int,
        *,
        timeout: float | None = None,
        step_timeout: float | None = None,
    ) -> CompactResponse:
        """Compact up to `revision`, in steps of at most COMPACT_STEP_REVISIONS revisions,
        each its own log entry: a step is applied on every member's event loop, and one
        compaction of 100,000 keys at once would hold every loop for seconds (an election).
        Each step is a compaction in its own right, so a failure part way leaves the
        history compacted up to the last step done. `timeout` bounds the whole (None: only
        the steps are bounded, and there are at most revision / COMPACT_STEP_REVISIONS of
        them); `step_timeout` bounds each step, and the first check of `revision`."""
        check_request(Compact(revision=revision), self.settings)
        self.authorizer.check(current_caller(), Compact(revision=revision))
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        done = self.compacted_revision()

        def bound() -> float | None:
            """What the next proposal or read may take: the rest of the whole, or a step."""
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if remaining is not None and remaining <= 0:
                raise ProposalTimeout(f"compacted up to {done} of {revision}; retry")
            if step_timeout is None:
                return remaining
            return step_timeout if remaining is None else min(remaining, step_timeout)

        if revision > self.current_revision():
            # Refused whole, before a first step: confirm against the cluster's revision.
            await self.node.read_index(timeout=bound())
            if revision > self.current_revision():
                raise FutureRevision(revision, self.current_revision())
        while True:
            step = min(revision, max(done, 0) + COMPACT_STEP_REVISIONS)
            limit = bound()
            try:
                result = await self._write(Compact(revision=step), CompactResponse, "", 0, limit)
            except Compacted as error:
                # Compacted further meanwhile (by another request, or this node lagged).
                if step == revision or error.compact_revision >= revision:
                    raise
                done = error.compact_revision
                continue
            if step == revision:
                return result
            done = step

    async def publish_member(
        self,
        member_id: int,
        client_url: str,
        *,
        etcd_url: str = "",
        timeout: float | None = None,
    ) -> PublishMemberResponse:
        """Record, through the log, where clients reach member `member_id` (and its etcd
        gRPC API, when it serves one)."""
        request = PublishMember(member_id=member_id, client_url=client_url, etcd_url=etcd_url)
        with acting_as(INTERNAL):
            return await self._write(request, PublishMemberResponse, "", 0, timeout)

    async def lease_grant(
        self, ttl: int, lease_id: int = 0, *, timeout: float | None = None
    ) -> LeaseGrantResponse:
        """A lease of `ttl` seconds (raised to min_lease_ttl_s). `lease_id` 0: a random id."""
        if lease_id:
            return await self._write(LeaseGrant(lease_id, ttl), LeaseGrantResponse, "", 0, timeout)
        for attempt in range(_GRANT_ATTEMPTS):
            chosen = self._rng.randint(1, _MAX_LEASE_ID)
            try:
                return await self._write(
                    LeaseGrant(chosen, ttl), LeaseGrantResponse, "", 0, timeout
                )
            except LeaseExists:
                if attempt == _GRANT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def lease_keep_alive(
        self, lease_id: int, *, timeout: float | None = None
    ) -> LeaseKeepAliveResponse:
        return await self._write(LeaseKeepAlive(lease_id), LeaseKeepAliveResponse, "", 0, timeout)

    async def lease_revoke(
        self, lease_id: int, *, timeout: float | None = None
    ) -> LeaseRevokeResponse:
        """End the lease and delete its keys; the caller needs write on every key
        attached (as in etcd)."""
        self.authorizer.check_keys_writable(current_caller(), self.machine.lease_keys(lease_id))
        return await self._write(LeaseRevoke(lease_id), LeaseRevokeResponse, "", 0, timeout)

    async def lease_expire(
        self, lease_id: int, renewed_index: int, *, timeout: float | None = None
    ) -> LeaseRevokeResponse:
        """The leader's expiry (see LeaseExpire): a no-op if renewed since `renewed_index`."""
        request = LeaseExpire(lease_id, renewed_index)
        with acting_as(INTERNAL):
            return await self._write(request, LeaseRevokeResponse, "", 0, timeout)

    async def lease_checkpoint(
        self, leases: list[LeaseRemaining], *, timeout: float | None = None
    ) -> LeaseCheckpointResponse:
        with acting_as(INTERNAL):
            return await self._write(
                LeaseCheckpoint(leases), LeaseCheckpointResponse, "", 0, timeout
            )

    async def lease_status(
        self,
        lease_id: int,
        *,
        keys: bool = False,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> LeaseStatus:
        """The lease as this node knows it; LeaseNotFound if it does not exist. With
        `keys`, the caller needs read on every key attached (their names are data)."""
        if not serializable:
            await self.node.read_index(timeout=timeout)
        caller = current_caller()
        self.authorizer.user(caller)
        record = self.machine.lease(lease_id)
        remaining = self.machine.lease_timers.remaining_s(lease_id)
        if record is None or remaining is None:
            raise LeaseNotFound(lease_id)
        attached = self.machine.lease_keys(lease_id) if keys else []
        for key in attached:
            self.authorizer.check_read(caller, key, b"")
        return LeaseStatus(lease_id, remaining, record.ttl, attached)

    async def leases(
        self, *, serializable: bool = False, timeout: float | None = None
    ) -> list[LeaseStatus]:
        """Every lease (without keys), by id."""
        if not serializable:
            await self.node.read_index(timeout=timeout)
        self.authorizer.user(current_caller())
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
        check_request(request, self.settings)
        check_session(KvCommand(request, client_id, sequence), self.settings)
        for attempt in range(_AUTH_ATTEMPTS):
            caller = current_caller()
            stamp = self.authorizer.check(caller, request)
            session = self.authorizer.session_of(caller, client_id)
            command = KvCommand(request, session, sequence, auth_revision=stamp)
            check_session(command, self.settings)
            try:
                # A refusal applied in the log comes back as the KvError raised by propose.
                result = await self.node.propose(
                    encode_command(command),
                    timeout=timeout,
                    batchable=isinstance(request, _BATCHABLE),
                )
            except AuthRevisionChanged:
                # Users or roles changed since the check, which this node has now applied
                # (the refusal applied after the change): check against them again.
                if attempt == _AUTH_ATTEMPTS - 1:
                    raise
                continue
            break
        if not isinstance(result, expected):
            raise InvariantViolation(
                f"{type(request).__name__} answered with {type(result).__name__}"
            )
        return result

    # -- reads ----------------------------------------------------------------------------

    def current_revision(self) -> int:
        """The store's revision as this node has applied it."""
        return self.machine.current_revision()

    def compacted_revision(self) -> int:
        return self.machine.compacted_revision()

    @property
    def watch_hub(self) -> WatchHub:
        """Where watches are opened (and all of them ended, when the node stops)."""
        return self.machine.watch_hub

    def open_watch(self, spec: WatchSpec, start_revision: int) -> Watch:
        """A watch of the hub (WatchHub.open) for the task's caller, who needs read on the
        watched range (PermissionDenied, AuthRequired), checked once at the start as
        etcd does."""
        self.authorizer.check_read(current_caller(), spec.key, spec.range_end)
        return self.machine.watch_hub.open(spec, start_revision)

    def member_client_urls(self) -> dict[int, str]:
        """Where each member serves clients, as published through the log."""
        return self.machine.member_client_urls()

    def member_etcd_urls(self) -> dict[int, str]:
        """Where each member serves etcd's gRPC API, as published (members that do not
        serve it are absent)."""
        records = self.machine.member_records()
        return {member: record.etcd_url for member, record in records.items() if record.etcd_url}

    async def backup_snapshot(self, *, timeout: float | None = None) -> FrozenSnapshot:
        """The state at a linearizable point (it holds every write acknowledged before the
        call), frozen to be encoded later on any thread."""
        self.authorizer.require_root(current_caller(), "take a backup")
        await self.node.read_index(timeout=timeout)
        return self.machine.frozen_snapshot()

    async def range(
        self, request: Range, *, serializable: bool = False, timeout: float | None = None
    ) -> RangeResponse:
        check_request(request, self.settings)
        if not serializable:
            await self.node.read_index(timeout=timeout)
        self.authorizer.check(current_caller(), request)
        budget = self.read_limits.read_budget()
        return await self._read(lambda view: view.range(request, budget), scans=_scans(request))

    async def get(
        self, key: bytes, *, serializable: bool = False, timeout: float | None = None
    ) -> RangeResponse:
        return await self.range(Range(key=key), serializable=serializable, timeout=timeout)

    async def state_hash(self) -> str:
        """sha256 of this node's committed state (MvccStore.state_hash), read off the loop."""
        self.authorizer.require_root(current_caller(), "hash the state")
        return await self._read(lambda view: view.state_hash(), scans=True)

    async def state_and_data_hashes(self) -> tuple[str, str]:
        """The state hash and the hash of the user's data only (keys, history, leases, the
        revision: not the members' client URLs, hash checks or client sessions), in one
        scan off the loop (MvccView.state_and_data_hashes)."""
        self.authorizer.require_root(current_caller(), "hash the state")
        return await self._read(lambda view: view.state_and_data_hashes(), scans=True)

    # -- this member ----------------------------------------------------------------------

    @property
    def member_id(self) -> NodeId:
        return self.node.id

    @property
    def leader_id(self) -> NodeId:
        """The leader this node knows (0: none)."""
        return self.node.leader_id

    @property
    def clock(self) -> Clock:
        """The node's clock (manual in tests and simulations)."""
        return self.node.clock

    @property
    def failure(self) -> BaseException | None:
        """The error the node could not continue from (None while it runs)."""
        return self.node.failure

    @property
    def removed(self) -> bool:
        """Whether this member was removed from the cluster."""
        return self.node.removed

    def on_leader_change(self, observer: Callable[[NodeId, int], None]) -> Callable[[], None]:
        """Call `observer(leader_id, term)` whenever the leader this node knows changes
        (see `Node.on_leader_change`); returns the function that unsubscribes it."""
        return self.node.on_leader_change(observer)

    def on_removed(self, observer: Callable[[], None]) -> Callable[[], None]:
        """Call `observer` once this member's removal applies (see `Node.on_removed`);
        returns the function that unsubscribes it."""
        return self.node.on_removed(observer)

    def status(self) -> NodeStatus:
        return self.node.status()

    def leaderless_seconds(self) -> float:
        """How long this node has known no leader (0 while it knows one)."""
        return self.node.leaderless_seconds()

    def corrupt_alarms(self) -> list[CorruptAlarm]:
        """The cluster's CORRUPT alarms (replicated: the same on every member)."""
        return self.machine.corrupt_alarms()

    def corrupt_alarm(self) -> CorruptAlarm | None:
        """The CORRUPT alarm naming this member, if any: it then serves no client data."""
        me = int(self.node.id)
        naming_me = (alarm for alarm in self.machine.corrupt_alarms() if alarm.member_id == me)
        return next(naming_me, None)

    def nospace_alarms(self) -> list[NoSpaceAlarm]:
        """The cluster's NOSPACE alarms (replicated: the same on every member)."""
        return self.machine.nospace_alarms()

    async def disarm_nospace_alarms(
        self, member_id: int = 0, *, timeout: float | None = None
    ) -> NoSpaceAlarmResponse:
        """End the NOSPACE alarm of `member_id` (0: of every member), through the log; the
        answer lists the alarms still raised. A member still out of space raises its alarm
        again at its monitor's next round (raftkv.kv.space_monitor)."""
        request = DisarmNoSpaceAlarm(member_id)
        return await self._write(request, NoSpaceAlarmResponse, "", 0, timeout)

    # -- users and roles ------------------------------------------------------------------

    async def change_auth(
        self, request: AuthRequest, *, timeout: float | None = None
    ) -> AuthChangeResponse:
        """Propose a change of users, roles or auth itself (root only while auth is
        enabled, but a user's change of its own password); the auth revision after it."""
        return await self._write(request, AuthChangeResponse, "", 0, timeout)

    # -- membership and leadership (through the node: one change at a time, via the leader)

    async def add_learner(
        self, member: NodeId, peer_url: str, *, timeout: float | None = None
    ) -> None:
        self.authorizer.require_root(current_caller(), "add a member")
        await self.node.add_learner(member, peer_url, timeout=timeout)

    async def promote(self, member: NodeId, *, timeout: float | None = None) -> None:
        """Make learner `member` a voter; LearnerNotCaughtUp while its log lags."""
        self.authorizer.require_root(current_caller(), "promote a member")
        await self.node.promote(member, timeout=timeout)

    async def remove_member(self, member: NodeId, *, timeout: float | None = None) -> None:
        self.authorizer.require_root(current_caller(), "remove a member")
        await self.node.remove_member(member, timeout=timeout)

    async def update_member(
        self, member: NodeId, peer_url: str, *, timeout: float | None = None
    ) -> None:
        """Reach `member` at `peer_url` (host:port) from now on (Node.update_member)."""
        self.authorizer.require_root(current_caller(), "change a member's peer address")
        await self.node.update_member(member, peer_url, timeout=timeout)

    async def transfer_leadership(
        self, target: NodeId | None, *, timeout: float | None = None
    ) -> NodeId:
        """Hand leadership to voter `target` (None: the most caught-up); the new leader."""
        self.authorizer.require_root(current_caller(), "move the leadership")
        return await self.node.transfer_leadership(target, timeout=timeout)

    async def _read(self, evaluate: Callable[[MvccView], ReadT], *, scans: bool) -> ReadT:
        """`evaluate` a view of the committed state as of now: on the loop at once if it
        does not `scans`, else on a read thread over a snapshot (see the module docstring).
        If this task is cancelled meanwhile, the view is closed, which stops the thread at
        its next step."""
        if not scans:
            view = self.machine.read_view(threaded=False)
            try:
                return evaluate(view)
            finally:
                view.close()
        async with self._read_slots:
            view = self.machine.read_view(threaded=True)
            try:
                if not view.threaded:  # no snapshots (MemoryAppData): on the loop
                    return evaluate(view)
                if self._readers is None:
                    self._readers = ThreadPoolExecutor(
                        self.read_limits.read_threads, thread_name_prefix="raftkv-read"
                    )
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._readers, evaluate, view)
            finally:
                view.close()

    # -- for the etcd API (raftkv.etcd) ---------------------------------------------------

    async def read_barrier(self, *, timeout: float | None = None) -> None:
        """Wait until this node has applied everything committed before the call (a
        ReadIndex): what it then shows (members, status) is at least that recent."""
        await self.node.read_index(timeout=timeout)

    def removed_member_ids(self) -> frozenset[NodeId]:
        """Ids removed from the cluster (never reused), as this node knows them."""
        return self.node.removed_ids

    def storage_bytes(self) -> int | None:
        """Bytes of this node's storage files (None: not on disk). Walks the directory:
        call it off the event loop."""
        path = self.storage_path()
        return None if path is None else directory_bytes(path)

    async def defragment(self) -> tuple[int, int]:
        """Compact this node's storage files whole (etcd's defragmentation: RocksDB's
        manual compaction, on a worker thread; the node serves meanwhile), so space freed by
        deletes and compaction is given back now. Its storage bytes before and after (0, 0
        when the storage is not on disk). One at a time per node: Overloaded while one
        runs."""
        self.authorizer.require_root(current_caller(), "defragment")
        compact = getattr(self.node.storage, "compact_files", None)
        path = self.storage_path()
        if compact is None or path is None:
            return 0, 0
        if self._defragmenting:
            raise Overloaded("a defragmentation is already running on this node")
        self._defragmenting = True
        try:
            before = await asyncio.to_thread(directory_bytes, path)
            await asyncio.to_thread(compact)
            return before, await asyncio.to_thread(directory_bytes, path)
        finally:
            self._defragmenting = False

    def storage_path(self) -> str | None:
        """The directory of this node's storage (None: not on disk)."""
        path = getattr(self.node.storage, "path", None)
        return path if isinstance(path, str) else None

    async def history_hash(self, revision: int = 0) -> HistoryHash:
        """This node's hash of the MVCC history up to `revision` (0: its current revision;
        raftkv.kv.history_hash), read off the loop over a snapshot (MvccView.history_hash):
        FutureRevision, Compacted, or ScanTooLarge past max_scan_entries history entries
        (it scans every stored version). Not linearizable: the state this node has applied,
        as etcd's HashKV."""
        self.authorizer.require_root(current_caller(), "hash the history")
        budget = ReadBudget(self.read_limits.max_scan_entries)
        return await self._read(lambda view: view.history_hash(revision, budget), scans=True)


def _scans(request: Range) -> bool:
    """Whether reading `request` may scan many entries: a key range, or a past revision
    (read from the key's history, one entry per stored version)."""
    return request.range_end != b"" or request.revision != 0


def _txn_scans(request: Txn) -> bool:
    """Whether reading `request`'s compares and ranges may scan many entries: one of its
    ranges scans, or one of its compares is over a key range."""
    ranges = [op for op in (*request.success, *request.failure) if isinstance(op, Range)]
    return any(map(_scans, ranges)) or any(compare.range_end for compare in request.compares)


def _cut_to(result: TxnResponse, budget: ReadBudget) -> TxnResponse:
    """`result` with its ranges' key-values cut to what `budget` answers (`more` set where
    some were left out), as a read's would be."""
    responses: list[ResponseOp] = []
    for response in result.responses:
        kept = response.kvs if isinstance(response, RangeResponse) else []
        for position, kv in enumerate(kept):
            if not budget.take(kv):
                kept = kept[:position]
                break
        if isinstance(response, RangeResponse) and len(kept) < len(response.kvs):
            responses.append(msgspec.structs.replace(response, kvs=kept, more=True))
        else:
            responses.append(response)
    return msgspec.structs.replace(result, responses=responses)
