"""`SpaceMonitor`: a member's side of NOSPACE alarms (`raftkv.kv.space_alarms`): it
measures its own storage and disk, and raises its alarm when either runs short.

Runs on every member, one round every `interval_s` (the node's clock):
1. measure (`measure`, on a worker thread: walking the storage directory is O(files)):
   the bytes of this member's storage (RocksDB's files: data, Raft log, write-ahead log)
   and the free bytes of the file system holding it;
2. if the storage is over `quota_bytes` ("quota") or the free space under
   `min_free_bytes` ("disk_free"), and no NOSPACE alarm names this member, propose
   `RaiseNoSpaceAlarm` (retried at later rounds until it applies);
3. log each change of this member's standing once: WARNING when it runs short, INFO when
   it is back under its limits while an alarm is still raised (an operator may disarm);
4. while leading: propose `DisarmNoSpaceAlarm` for each alarm naming a member that left
   the cluster (replacing a member whose disk filled is one way out).

The monitor never disarms the alarm of a member still in the cluster: that is an
operator's call (see space_alarms). Nothing here
changes state except through the log; the measurement is this member's own and is never
replicated (the alarm is).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from raftkv.kv.commands import (
    DisarmNoSpaceAlarm,
    KvCommand,
    NoSpaceAlarmRequest,
    NoSpaceAlarmResponse,
    RaiseNoSpaceAlarm,
    encode_command,
)
from raftkv.kv.errors import KvError
from raftkv.kv.state_machine import KvStateMachine
from raftkv.raft.core.errors import InvariantViolation, RaftError
from raftkv.raft.driver.errors import Stopped
from raftkv.raft.driver.node import Node
from raftkv.raft.tasks import cancel_and_wait

logger = logging.getLogger("raftkv.kv.space_monitor")

# etcd's default quota (--quota-backend-bytes).
DEFAULT_QUOTA_BYTES = 2 << 30
# Free space kept on the data dir's disk: room for RocksDB to flush and compact, and for
# the writes already under way when the alarm applies.
DEFAULT_MIN_FREE_BYTES = 64 << 20

Reason = Literal["quota", "disk_free"]


@dataclass(frozen=True, slots=True)
class SpaceUsage:
    """One measurement: this member's storage bytes, and the free bytes of its disk."""

    storage_bytes: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class SpaceSettings:
    # The most bytes this member's storage may hold before it raises a NOSPACE alarm
    # (0: no quota).
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    # The least free bytes its disk may have before it raises one (0: not checked).
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    # How often it measures.
    interval_s: float = 1.0
    # How long one proposal may take.
    proposal_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.quota_bytes < 0 or self.min_free_bytes < 0:
            raise ValueError("SpaceSettings: quota_bytes and min_free_bytes must be >= 0")
        if not 0 < self.interval_s < float("inf") or not self.proposal_timeout_s > 0:
            raise ValueError("SpaceSettings: interval_s and proposal_timeout_s must be > 0")

    def shortage(self, usage: SpaceUsage) -> Reason | None:
        """Which limit `usage` breaks (the quota first), or None."""
        if self.quota_bytes and usage.storage_bytes > self.quota_bytes:
            return "quota"
        if self.min_free_bytes and usage.free_bytes < self.min_free_bytes:
            return "disk_free"
        return None

    def describe(self, reason: Reason, usage: SpaceUsage) -> str:
        """One line: what ran short, by how much, and what the cluster does now."""
        if reason == "quota":
            finding = (
                f"its storage holds {usage.storage_bytes} bytes, over quota_backend_bytes="
                f"{self.quota_bytes}"
            )
        else:
            finding = (
                f"its disk has {usage.free_bytes} bytes free, under min_free_disk_bytes="
                f"{self.min_free_bytes}"
            )
        return (
            f"NOSPACE: this member is out of space: {finding}; the cluster refuses writes "
            "that add data until space is freed (delete, compact) and the alarm is "
            "disarmed (raftkv alarm disarm)"
        )


def directory_bytes(path: str) -> int:
    """The bytes of every file under `path`. Blocking (O(files)): call it off the loop."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file compacted away meanwhile
                total += os.stat(os.path.join(directory, name)).st_size
    return total


def measure_directory(path: str) -> SpaceUsage:
    """`directory_bytes(path)`, and the free bytes of its file system (for an
    unprivileged process: what a write can use). Blocking: call it off the loop."""
    return SpaceUsage(directory_bytes(path), shutil.disk_usage(path).free)


# Runs the blocking measurement somewhere that does not stall the event loop. The default
# is a worker thread; a simulation passes one that runs it inline.
MeasureRunner = Callable[[Callable[[], SpaceUsage]], Awaitable[SpaceUsage]]


async def _in_thread(function: Callable[[], SpaceUsage]) -> SpaceUsage:
    return await asyncio.to_thread(function)


async def measure_inline(function: Callable[[], SpaceUsage]) -> SpaceUsage:
    """A MeasureRunner for simulations and tests: runs `function` on the event loop."""
    return function()


class SpaceMonitor:
    def __init__(
        self,
        node: Node,
        machine: KvStateMachine,
        measure: Callable[[], SpaceUsage],
        settings: SpaceSettings | None = None,
        *,
        run_blocking: MeasureRunner = _in_thread,
    ) -> None:
        if node.state_machine is not machine:
            raise ValueError("the KvStateMachine must be the one the node applies to")
        self.node = node
        self.machine = machine
        self.measure = measure
        self.settings = settings if settings is not None else SpaceSettings()
        self._run_blocking = run_blocking
        # The last measurement (None until the first round), for metrics and status.
        self.last_usage: SpaceUsage | None = None
        # What this member ran short of at the last round (None: nothing), for the logs.
        self._shortage: Reason | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="raftkv-space-monitor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Stopped:
                return
            except (KvError, RaftError, TimeoutError) as error:
                logger.info("NOSPACE alarm: %s; retrying at the next round", error)
            except OSError as error:
                logger.warning("cannot measure the storage's space: %s", error)
            await self.node.clock.sleep(self.settings.interval_s)

    async def run_once(self) -> None:
        """One round (see the module docstring). Raises what the measurement or the
        proposal raised; a raise not applied is proposed again at the next round."""
        usage = await self._run_blocking(self.measure)
        self.last_usage = usage
        shortage = self.settings.shortage(usage)
        me = int(self.node.id)
        raised = any(alarm.member_id == me for alarm in self.machine.nospace_alarms())
        if shortage != self._shortage:
            if shortage is not None:
                logger.warning("%s", self.settings.describe(shortage, usage))
            elif raised:
                logger.info(
                    "this member is back within its space limits; its NOSPACE alarm stays "
                    "until an operator disarms it (raftkv alarm disarm)"
                )
            self._shortage = shortage
        if shortage is not None and not raised:
            await self._propose(RaiseNoSpaceAlarm(me, shortage))
        if self.node.is_leader:
            await self._disarm_departed()

    async def _disarm_departed(self) -> None:
        """The leader's duty: end the alarm of each member that left the cluster (replacing
        a member whose disk is full is a way out, and its alarm must not outlive it)."""
        status = self.node.status()
        members = {int(member) for member in (*status.voters, *status.learners)}
        for alarm in self.machine.nospace_alarms():
            if alarm.member_id not in members:
                logger.info("member %d left the cluster: ending its NOSPACE alarm", alarm.member_id)
                await self._propose(DisarmNoSpaceAlarm(alarm.member_id))

    async def _propose(self, request: NoSpaceAlarmRequest) -> None:
        command = encode_command(KvCommand(request))
        result = await self.node.propose(command, timeout=self.settings.proposal_timeout_s)
        if isinstance(result, KvError):
            raise result
        if not isinstance(result, NoSpaceAlarmResponse):
            raise InvariantViolation(
                f"{type(request).__name__} answered with {type(result).__name__}"
            )
