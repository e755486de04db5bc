"""Leases kept alive in the background: `async with client.lease(ttl) as lease:` (asyncio)
and `with sync_client.lease(ttl) as lease:` (a thread).

The lease is granted on entry, kept alive every TTL/3 while the block runs, and revoked on
exit (its keys are deleted then). What the holder can rely on follows from the server's
guarantee (docs/http-api.md#lease-guarantee): a lease never expires before TTL after a
keep-alive that was sent and applied. So the client tracks `deadline`, on its own monotonic
clock: TTL after the sending of the last keep-alive that succeeded (the grant first). Until
then the lease is certainly alive; past it, it may have expired, and `lost` is set. `lost`
is also set at once when a keep-alive finds the lease gone (expired, or revoked by someone
else). Keep-alives that fail for other reasons (no leader for a while) are retried every
`retry_s` until the deadline passes.

A holder that acts on the lease (a lock, an election) must check `alive` right before
acting, and still cannot rule out a pause between the check and the act (GC, a slow
disk): that is what fencing tokens are for (see `recipes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from raftkv.client.errors import ClientError, LeaseNotFound
from raftkv.client.results import LeaseKeepAliveResult

if TYPE_CHECKING:
    from raftkv.client.async_client import Client
    from raftkv.client.sync_client import SyncClient

__all__ = ["KeptLease", "SyncKeptLease", "check_ttl", "random_lease_id"]

logger = logging.getLogger(__name__)

# Between retries of a keep-alive that failed (not for a missing lease).
RETRY_S = 0.5
# Lease ids the client picks: below 2**53 so they survive JSON readers that use doubles.
MAX_RANDOM_LEASE_ID = 2**53 - 1


def random_lease_id() -> int:
    return secrets.randbelow(MAX_RANDOM_LEASE_ID) + 1


def check_ttl(ttl: int) -> None:
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        raise ValueError(f"a lease TTL is a positive number of seconds, got {ttl!r}")


class LeaseLife:
    """When a kept lease is certainly alive until (pure: the caller passes the time)."""

    def __init__(self, lease_id: int, ttl: int, granted_at: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.deadline = granted_at + ttl
        self.gone = False
        # Whether the last keep-alive failed (the next one is a retry, sooner).
        self.failed = False

    @property
    def interval_s(self) -> float:
        """Keep-alives every TTL/3: two may fail before the lease is in danger."""
        return self.ttl / 3

    def renewed(self, sent_at: float, ttl: int) -> None:
        self.ttl = ttl
        self.deadline = max(self.deadline, sent_at + ttl)

    def alive(self, now: float) -> bool:
        return not self.gone and now < self.deadline

    def next_delay(self, now: float) -> float:
        """How long until the next keep-alive: the interval, or a retry after a failure,
        never past the deadline."""
        wanted = min(RETRY_S, self.interval_s) if self.failed else self.interval_s
        return max(0.0, min(wanted, self.deadline - now))

    def answered(self, sent_at: float, outcome: LeaseKeepAliveResult | ClientError) -> bool:
        """Take the outcome of a keep-alive sent at `sent_at`; False once the lease is
        found gone (nothing more to keep alive)."""
        if isinstance(outcome, LeaseNotFound):
            self.gone = True
            return False
        if isinstance(outcome, ClientError):
            logger.warning("keep-alive of lease %d failed: %s", self.id, outcome)
            self.failed = True
            return True
        self.renewed(sent_at, outcome.ttl)
        self.failed = False
        return True


class _Kept:
    """What both kept leases share: the lease asked for, its life once granted, and what
    the holder reads (`id`, `ttl`, `deadline`, `alive`, `lost`)."""

    lost: asyncio.Event | threading.Event

    def __init__(self, ttl: int, lease_id: int, clock: Callable[[], float]) -> None:
        self._asked = (ttl, lease_id)
        self._clock = clock
        self._granted: LeaseLife | None = None

    @property
    def _life(self) -> LeaseLife:
        if self._granted is None:
            raise RuntimeError("the lease is not granted yet: open() it first")
        return self._granted

    @property
    def id(self) -> int:
        return self._life.id

    @property
    def ttl(self) -> int:
        return self._life.ttl

    @property
    def deadline(self) -> float:
        """The client clock's time until which the lease is certainly alive."""
        return self._life.deadline

    @property
    def alive(self) -> bool:
        return not self.lost.is_set() and self._life.alive(self._clock())

    def _check_not_opened(self) -> None:
        if self._granted is not None:
            raise RuntimeError("the lease was opened already")

    def _to_revoke(self) -> int | None:
        """The lease's id if closing should revoke it (granted, not gone); marks it gone."""
        life = self._granted
        if life is None or life.gone:
            return None
        life.gone = True
        return life.id


class KeptLease(_Kept):
    """A lease kept alive by a task of the client's event loop (see the module
    docstring): granted by `open()` (or entering `async with`), revoked by `close()`.
    `id`, `ttl` (granted), `lost` (an asyncio.Event), `alive`, `deadline`."""

    def __init__(
        self,
        client: Client,
        ttl: int,
        lease_id: int,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        super().__init__(ttl, lease_id, clock)
        self._client = client
        self._sleep = sleep
        self.lost: asyncio.Event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> KeptLease:
        """Grant the lease and start keeping it alive."""
        self._check_not_opened()
        ttl, lease_id = self._asked
        granted_at = self._clock()
        granted = await self._client.lease_grant(ttl, id=lease_id)
        self._granted = LeaseLife(granted.id, granted.ttl, granted_at)
        self._task = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"raftkv-lease-{granted.id}"
        )
        return self

    async def close(self, revoke: bool = True) -> None:
        """Stop keeping it alive; revoke it (deleting its keys) unless it is gone."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        lease_id = self._to_revoke() if revoke else None
        if lease_id is not None:
            with contextlib.suppress(LeaseNotFound):
                await self._client.lease_revoke(lease_id)

    async def __aenter__(self) -> KeptLease:
        return await self.open()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _keep_alive(self) -> None:
        life = self._life
        while True:
            await self._sleep(life.next_delay(self._clock()))
            if not life.alive(self._clock()):
                break
            sent_at = self._clock()
            outcome: LeaseKeepAliveResult | ClientError
            try:
                outcome = await self._client.lease_keep_alive(life.id)
            except ClientError as error:
                outcome = error
            if not life.answered(sent_at, outcome):
                break
        _report_lost(life)
        self.lost.set()


class SyncKeptLease(_Kept):
    """A lease kept alive by a daemon thread (see the module docstring): granted by
    `open()` (or entering `with`), revoked by `close()`. `lost` is a threading.Event."""

    def __init__(
        self, client: SyncClient, ttl: int, lease_id: int, clock: Callable[[], float]
    ) -> None:
        super().__init__(ttl, lease_id, clock)
        self._client = client
        self.lost: threading.Event = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> SyncKeptLease:
        """Grant the lease and start keeping it alive."""
        self._check_not_opened()
        ttl, lease_id = self._asked
        granted_at = self._clock()
        granted = self._client.lease_grant(ttl, id=lease_id)
        self._granted = LeaseLife(granted.id, granted.ttl, granted_at)
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"raftkv-lease-{granted.id}", daemon=True
        )
        self._thread.start()
        return self

    def close(self, revoke: bool = True) -> None:
        """Stop keeping it alive; revoke it (deleting its keys) unless it is gone."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        lease_id = self._to_revoke() if revoke else None
        if lease_id is not None:
            with contextlib.suppress(LeaseNotFound):
                self._client.lease_revoke(lease_id)

    def __enter__(self) -> SyncKeptLease:
        return self.open()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _keep_alive(self) -> None:
        life = self._life
        while not self._stopping.wait(life.next_delay(self._clock())):
            if not life.alive(self._clock()):
                break
            sent_at = self._clock()
            outcome: LeaseKeepAliveResult | ClientError
            try:
                outcome = self._client.lease_keep_alive(life.id)
            except ClientError as error:
                outcome = error
            if not life.answered(sent_at, outcome):
                break
        if not self._stopping.is_set():
            _report_lost(life)
            self.lost.set()


def _report_lost(life: LeaseLife) -> None:
    logger.warning("lease %d is lost (expired, revoked, or not kept alive in time)", life.id)
