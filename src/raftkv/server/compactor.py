"""`AutoCompactor`: keep the last `retention` revisions of history, discard older ones.

etcd's revision-mode auto-compaction: every `interval_s` (on the node's clock) the leader
proposes `Compact(current_revision - retention)` when that is above the compacted revision.
The compaction goes through the log, so every member compacts at the same point and state
stays identical; followers do nothing (the leader's proposal reaches them). Reads and
watches at a revision older than the last `retention` ones then get `compacted`.
"""

from __future__ import annotations

import asyncio
import logging

from raftkv.kv import KvError, KvService
from raftkv.kv.callers import INTERNAL, acting_as
from raftkv.raft import RaftError
from raftkv.raft.tasks import cancel_and_wait

logger = logging.getLogger("raftkv.server.compactor")


class AutoCompactor:
    def __init__(self, service: KvService, retention: int, interval_s: float) -> None:
        if retention < 1 or not interval_s > 0:
            raise ValueError("AutoCompactor needs retention >= 1 and interval_s > 0")
        self.service = service
        self.retention = retention
        self.interval_s = interval_s
        self.compactions = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="raftkv-auto-compactor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        clock = self.service.clock
        while True:
            await clock.sleep(self.interval_s)
            await self.compact_once()

    async def compact_once(self) -> int:
        """Propose one compaction if this node leads and history exceeds the retention;
        the revision compacted to, or 0 if none was due (or it failed: logged, retried at
        the next interval)."""
        service = self.service
        if service.leader_id != service.member_id:
            return 0
        target = service.current_revision() - self.retention
        if target <= service.compacted_revision():
            return 0
        try:
            with acting_as(INTERNAL):
                await self.service.compact(target, timeout=self.interval_s)
        except (KvError, RaftError, TimeoutError) as error:
            logger.info("auto-compaction to revision %d did not apply: %s", target, error)
            return 0
        self.compactions += 1
        logger.debug("compacted history to revision %d", target)
        return target
