"""`LeaseKeeper`: the leader's side of leases — it decides expiry and checkpoints TTLs.

Runs on every node; does something only while the node leads:
1. Once per leadership term, before acting, it waits for a ReadIndex: the node has then
   applied every entry committed before its term, so its timers include every keep-alive
   the previous leader applied (no early expiry from a stale view).
2. Every `interval_s` it proposes a `LeaseExpire(id, renewed_index)` for each lease whose
   countdown (`LeaseTimers`) has run out, at most `max_expiries` at once. The expiry names
   the renewal it saw, so a keep-alive applied in between makes it a no-op.
3. Every `checkpoint_interval_s` it proposes `LeaseCheckpoint`s recording each lease's
   remaining time, so a node that restarts resumes the countdowns from there instead of
   from the full TTL (the bound on extra life after restarts).

The state machine applies expiries like revokes: the lease and its keys go in one revision,
which watchers see as deletes. Every node's clock is only compared with itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from raftkv.kv.commands import LeaseRemaining
from raftkv.kv.errors import KvError
from raftkv.kv.service import KvService
from raftkv.kv.validation import MAX_CHECKPOINT_LEASES
from raftkv.raft.core.errors import RaftError
from raftkv.raft.tasks import cancel_and_wait

logger = logging.getLogger("raftkv.kv.lease_keeper")

# Expiry delays remembered for reporting (most recent last).
_DELAYS_KEPT = 1000


@dataclass(frozen=True, slots=True)
class LeaseKeeperSettings:
    # How often the leader looks for expired leases: the expected extra delay of an
    # expiry is about half of it, plus one commit.
    interval_s: float = 0.25
    # How often the leader records remaining TTLs in the log (0: never).
    checkpoint_interval_s: float = 5.0
    # Expiries proposed at once (etcd revokes at most 1000 leases per second).
    max_expiries: int = 500
    # How long one expiry or checkpoint proposal may take.
    proposal_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0 or not self.proposal_timeout_s > 0:
            raise ValueError("LeaseKeeperSettings: interval_s and proposal_timeout_s must be > 0")
        if self.checkpoint_interval_s < 0 or self.max_expiries < 1:
            raise ValueError(
                "LeaseKeeperSettings: checkpoint_interval_s >= 0 and max_expiries >= 1"
            )


class LeaseKeeper:
    def __init__(self, service: KvService, settings: LeaseKeeperSettings | None = None) -> None:
        self.service = service
        self.settings = settings if settings is not None else LeaseKeeperSettings()
        # Leases expired by this node's proposals, and how long after their deadline each
        # expiry applied here (seconds), most recent last.
        self.expired = 0
        self.expiry_delays: deque[float] = deque(maxlen=_DELAYS_KEPT)
        self.checkpoints = 0
        self._ready_term = 0
        self._last_checkpoint: float | None = None
        self._in_flight: set[int] = set()
        # Whether a checkpoint is being proposed (at most one at a time).
        self._checkpointing = False
        # Expiries and checkpoints under way: a dict, as an ordered set, so stop() cancels
        # them in the order they started (a set of tasks iterates in address order).
        self._tasks: dict[asyncio.Task[None], None] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="raftkv-lease-keeper")

    async def stop(self) -> None:
        await cancel_and_wait(self._task, *self._tasks)
        self._task = None

    async def _run(self) -> None:
        clock = self.service.node.clock
        while True:
            await clock.sleep(self.settings.interval_s)
            try:
                await self.run_once()
            except (KvError, RaftError, TimeoutError) as error:
                logger.info("lease keeper: %s; retrying at the next interval", error)

    async def run_once(self) -> int:
        """One round: the number of expiries proposed (0 when not leading)."""
        node, machine = self.service.node, self.service.machine
        if not node.is_leader:
            self._ready_term = 0
            self._last_checkpoint = None
            return 0
        term = node.status().term
        if self._ready_term != term:
            await node.read_index(timeout=self.settings.proposal_timeout_s)
            if not node.is_leader or node.status().term != term:
                return 0
            self._ready_term = term
            self._last_checkpoint = node.clock.now()
        proposed = 0
        for lease_id, timer in machine.lease_timers.expired(self.settings.max_expiries):
            if lease_id in self._in_flight:
                continue
            self._in_flight.add(lease_id)
            self._spawn(self._expire(lease_id, timer.renewed_index, timer.deadline))
            proposed += 1
        interval, now = self.settings.checkpoint_interval_s, node.clock.now()
        last = self._last_checkpoint
        if interval and last is not None and now - last >= interval and not self._checkpointing:
            # In the background: a slow checkpoint (many leases, a slow quorum) must not
            # hold up the next rounds' expiry checks.
            self._last_checkpoint = now
            self._checkpointing = True
            self._spawn(self._checkpoint_in_background())
        return proposed

    async def _checkpoint_in_background(self) -> None:
        try:
            await self.checkpoint_once()
        except (KvError, RaftError, TimeoutError) as error:
            logger.info("lease checkpoint did not apply: %s; next one at the next interval", error)
        finally:
            self._checkpointing = False

    async def checkpoint_once(self) -> int:
        """Propose checkpoints of every lease's remaining time; how many were recorded."""
        remaining = self.service.machine.lease_timers.remaining_all_ms()
        recorded = 0
        for start in range(0, len(remaining), MAX_CHECKPOINT_LEASES):
            chunk = [
                LeaseRemaining(lease_id, left, renewed_index)
                for lease_id, left, renewed_index in remaining[
                    start : start + MAX_CHECKPOINT_LEASES
                ]
            ]
            await self.service.lease_checkpoint(chunk, timeout=self.settings.proposal_timeout_s)
            recorded += len(chunk)
        if recorded:
            self.checkpoints += 1
        return recorded

    async def _expire(self, lease_id: int, renewed_index: int, deadline: float) -> None:
        service = self.service
        try:
            result = await service.lease_expire(
                lease_id, renewed_index, timeout=self.settings.proposal_timeout_s
            )
        except (KvError, RaftError, TimeoutError) as error:
            logger.info("expiring lease %d did not apply: %s", lease_id, error)
            return
        finally:
            self._in_flight.discard(lease_id)
        if result.revoked:
            self.expired += 1
            self.expiry_delays.append(max(0.0, service.node.clock.now() - deadline))
            logger.debug("lease %d expired (%d keys deleted)", lease_id, result.deleted)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[task] = None
        task.add_done_callback(lambda done: self._tasks.pop(done, None))
