"""`CorruptChecker`: a member's side of hash checks (`raftkv.kv.hash_checks`): it starts
them, hashes and reports its own state, and acts on the CORRUPT alarms.

Runs on every member, one round every `poll_interval_s` (the node's clock):
1. a state frozen by a HashCheck this node applied is hashed on a worker thread (never on
   the event loop: a full scan is O(data), seconds for millions of keys), then reported
   with a `HashReport` (retried until it applies or another check replaces that one);
2. the start-up check (etcd's initial corruption check): once the node has caught up after
   it started (a ReadIndex answered), it proposes a `HashCheck`, unless a check opened
   since it started already covers it; so a member whose data was damaged while it was
   down is found at its first check, not after a whole interval;
3. while leading: a `HashCheck` every `interval_s`; and a `ClearCorruptAlarm` for each
   alarm naming a member that left the cluster (the remedy for a CORRUPT member is to
   remove it and join it again with a new id, which ends its alarm);
4. every new alarm is logged once (ERROR) on every member; a CORRUPT member also ends its
   open watches ("stopping": clients resume on another member) and, if it leads, hands
   leadership to a member no alarm names.
Refusing client requests on a CORRUPT member is the server's part (it asks
`KvStateMachine.is_corrupt`).

Every proposal is bounded by `proposal_timeout_s`; a failed one is retried at a later
round. Nothing here changes state except through the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from raftkv.kv.commands import (
    ClearCorruptAlarm,
    HashCheck,
    HashCheckRequest,
    HashCheckResponse,
    HashReport,
    KvCommand,
    encode_command,
)
from raftkv.kv.errors import KvError
from raftkv.kv.hash_checks import MAX_CHECK_MEMBERS, PendingHash, hash_state
from raftkv.kv.layout import CorruptAlarm
from raftkv.kv.state_machine import KvStateMachine
from raftkv.raft.core.errors import InvariantViolation, RaftError
from raftkv.raft.driver.errors import Stopped
from raftkv.raft.driver.node import Node
from raftkv.raft.tasks import cancel_and_wait

logger = logging.getLogger("raftkv.kv.corrupt_checker")

# Runs a blocking function (the hash of a frozen state) somewhere that does not stall the
# event loop, and returns its result. The default is a worker thread; a simulation passes
# one that runs it inline, so the run stays deterministic.
BlockingRunner = Callable[[Callable[[], bytes]], Awaitable[bytes]]


async def _in_thread(function: Callable[[], bytes]) -> bytes:
    return await asyncio.to_thread(function)


async def run_inline(function: Callable[[], bytes]) -> bytes:
    """A BlockingRunner for simulations and tests: runs `function` on the event loop, so
    that nothing depends on when a thread finishes."""
    return function()


@dataclass(frozen=True, slots=True)
class CorruptCheckerSettings:
    # How often the leader starts a hash check (0: never; members still answer checks
    # others start). Each check costs every member a RocksDB checkpoint on the event loop
    # (50 ms, up to about 0.4 s with a full memtable: as a snapshot does), a full scan of
    # its state on a worker thread (1.3 s per 200 k keys), and 1 + members log entries.
    # etcd's periodic check is off by default and its docs suggest hours (its leader
    # hashes on the request path and asks every peer over HTTP); minutes here, so a
    # divergence is found soon after it happens.
    interval_s: float = 300.0
    # Check once after starting, once caught up (etcd's initial corruption check).
    check_at_start: bool = True
    # How often the checker looks for a state to hash, new alarms, and due checks.
    poll_interval_s: float = 0.2
    # How long one proposal (a check, a report, a clearing) may take.
    proposal_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.interval_s < float("inf"):
            raise ValueError("CorruptCheckerSettings.interval_s must be >= 0 (0: never)")
        if not self.poll_interval_s > 0 or not self.proposal_timeout_s > 0:
            raise ValueError(
                "CorruptCheckerSettings: poll_interval_s and proposal_timeout_s must be > 0"
            )


class CorruptChecker:
    def __init__(
        self,
        node: Node,
        machine: KvStateMachine,
        settings: CorruptCheckerSettings | None = None,
        *,
        run_blocking: BlockingRunner = _in_thread,
    ) -> None:
        if node.state_machine is not machine:
            raise ValueError("the KvStateMachine must be the one the node applies to")
        self.node = node
        self.machine = machine
        self.settings = settings if settings is not None else CorruptCheckerSettings()
        self._run_blocking = run_blocking
        # Counters and the last hash's duration (wall-clock seconds), for metrics.
        self.hashes_reported = 0
        self.checks_started = 0
        self.last_hash_seconds = 0.0
        # The applied index when this checker started: a check opened above it was applied
        # here after the start, so it covers the start-up check.
        self._started_at_index = machine.applied_index()
        self._start_check_due = self.settings.check_at_start
        # Leader duties: the term they are for, and when the next periodic check is due.
        self._leading_term = 0
        self._next_check_at = 0.0
        # Alarms already logged (member id, check index); the term of the last hand-over.
        self._logged: set[tuple[int, int]] = set()
        self._handed_over_in_term = 0
        self._watches_closed = False
        # This member's hash of the current check, until it is proposed.
        self._unreported: HashReport | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="raftkv-corrupt-checker")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        pending = self.machine.take_pending_hash()
        if pending is not None:
            pending.view.close()

    async def _run(self) -> None:
        clock = self.node.clock
        while True:
            await clock.sleep(self.settings.poll_interval_s)
            try:
                await self.run_once()
            except Stopped:
                return
            except (KvError, RaftError, TimeoutError) as error:
                logger.info("hash check: %s; retrying at the next round", error)

    async def run_once(self) -> None:
        """One round (see the module docstring). Raises what a proposal raised; what it
        did not get to is done at the next round."""
        await self._act_on_alarms()
        pending = self.machine.take_pending_hash()
        if pending is not None:
            await self._hash(pending)
        if self._unreported is not None:
            await self._report(self._unreported)
        if self._start_check_due:
            await self._start_check()
        if self.node.is_leader:
            await self._lead()

    # -- this member's hash ------------------------------------------------------------------

    async def _hash(self, pending: PendingHash) -> None:
        """Hash the frozen state off the loop; the report is proposed next."""
        try:
            if int(self.node.id) not in pending.members:
                return  # not asked (it joined after the check was opened)
            started = time.perf_counter()
            digest = await self._run_blocking(lambda: hash_state(pending.view.scan()))
            self.last_hash_seconds = time.perf_counter() - started
        finally:
            pending.view.close()
        self._unreported = HashReport(pending.check_index, int(self.node.id), digest)

    async def _report(self, report: HashReport) -> None:
        """Propose the report unless the check is over (another one opened) or has it."""
        record = self.machine.hash_check_record()
        if record.check_index == report.check_index and all(
            member != report.member_id for member, _ in record.reports
        ):
            await self._propose(report)
            self.hashes_reported += 1
        self._unreported = None

    # -- starting checks ---------------------------------------------------------------------

    async def _start_check(self) -> None:
        """The start-up check: once caught up, unless a check opened since the start."""
        if self.machine.hash_check_record().check_index > self._started_at_index:
            self._start_check_due = False
            return
        if self.node.leader_id == 0:
            return
        await self.node.read_index(timeout=self.settings.proposal_timeout_s)
        if self.machine.hash_check_record().check_index <= self._started_at_index:
            await self._propose_check()
        self._start_check_due = False

    async def _propose_check(self) -> None:
        status = self.node.status()
        members = sorted({int(member) for member in (*status.voters, *status.learners)})
        await self._propose(HashCheck(members[:MAX_CHECK_MEMBERS]))
        self.checks_started += 1

    async def _lead(self) -> None:
        """The leader's duties: periodic checks, clearing alarms of departed members."""
        node, clock = self.node, self.node.clock
        status = node.status()
        if self._leading_term != status.term:
            self._leading_term = status.term
            self._next_check_at = clock.now() + self.settings.interval_s
        members = {int(member) for member in (*status.voters, *status.learners)}
        for alarm in self.machine.corrupt_alarms():
            if alarm.member_id not in members:
                logger.info("member %d left the cluster: ending its CORRUPT alarm", alarm.member_id)
                await self._propose(ClearCorruptAlarm(alarm.member_id))
        if self.settings.interval_s and clock.now() >= self._next_check_at:
            self._next_check_at = clock.now() + self.settings.interval_s
            await self._propose_check()

    async def _propose(self, request: HashCheckRequest) -> None:
        command = encode_command(KvCommand(request))
        result = await self.node.propose(command, timeout=self.settings.proposal_timeout_s)
        if isinstance(result, KvError):
            raise result
        if not isinstance(result, HashCheckResponse):
            raise InvariantViolation(
                f"{type(request).__name__} answered with {type(result).__name__}"
            )

    # -- alarms ------------------------------------------------------------------------------

    async def _act_on_alarms(self) -> None:
        me = int(self.node.id)
        for alarm in self.machine.corrupt_alarms():
            if (alarm.member_id, alarm.check_index) in self._logged:
                continue
            self._logged.add((alarm.member_id, alarm.check_index))
            logger.error("%s", describe_alarm(alarm, me))
        if not self.machine.is_corrupt(me):
            return
        if not self._watches_closed:
            self._watches_closed = True
            self.machine.watch_hub.close()
        status = self.node.status()
        if self.node.is_leader and self._handed_over_in_term != status.term:
            self._handed_over_in_term = status.term
            healthy = [v for v in status.voters if v != me and not self.machine.is_corrupt(v)]
            if healthy:
                logger.warning(
                    "this member is CORRUPT and leads: handing leadership to %d", healthy[0]
                )
                await self.node.transfer_leadership(
                    healthy[0], timeout=self.settings.proposal_timeout_s
                )


def describe_alarm(alarm: CorruptAlarm, me: int) -> str:
    """One line saying what the alarm means and what to do, from member `me`'s view."""
    if alarm.reason == "minority":
        finding = (
            f"its state at log index {alarm.check_index} differs from the one a majority "
            "of members hold"
        )
    else:
        finding = (
            f"the members' states at log index {alarm.check_index} differ and no state is "
            "held by a majority"
        )
    who = f"this member ({me})" if alarm.member_id == me else f"member {alarm.member_id}"
    refusal = "; it refuses client requests (503 corrupt)" if alarm.member_id == me else ""
    return (
        f"CORRUPT: {who}: {finding}{refusal}. Remove it (raftkv member remove "
        f"{alarm.member_id}) and join it again with a new id and an empty data dir."
    )
