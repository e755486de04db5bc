"""Leases kept alive in the background: `async with client.lease(ttl) as lease:` (asyncio)
and `with sync_client.lease(ttl) as lease:` (a thread).

The lease is granted on entry, kept alive every TTL/3 while the block runs, and revoked on
exit (its keys are deleted then). What the holder can rely on follows from the server's
guarantee (README "Leases and watches"): a lease never expires before TTL after a
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

    @property
    def interval_s(self) -> float:
        """Keep-alives every TTL/3: two may fail before the lease is in danger."""
        return self.ttl / 3

    def renewed(self, sent_at: float, ttl: int) -> None:
        self.ttl = ttl
        self.deadline = max(self.deadline, sent_at + ttl)

    def alive(self, now: float) -> bool:
        return not self.gone and now < self.deadline

    def next_delay(self, now: float, failed: bool) -> float:
        """How long until the next keep-alive: the interval, or a retry after a failure,
        never past the deadline."""
        wanted = min(RETRY_S, self.interval_s) if failed else self.interval_s
        return max(0.0, min(wanted, self.deadline - now))


class KeptLease:
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
        self._client = client
        self._asked = (ttl, lease_id)
        self._sleep = sleep
        self._clock = clock
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._granted: LeaseLife | None = None

    @property
    def _life(self) -> LeaseLife:
        if self._granted is None:
            raise RuntimeError("the lease is not granted yet: open() it first")
        return self._granted

    async def open(self) -> KeptLease:
        """Grant the lease and start keeping it alive."""
        if self._granted is not None:
            raise RuntimeError("the lease was opened already")
        ttl, lease_id = self._asked
        granted_at = self._clock()
        granted = await self._client.lease_grant(ttl, id=lease_id)
        self._granted = LeaseLife(granted.id, granted.ttl, granted_at)
        self._task = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"raftkv-lease-{granted.id}"
        )
        return self

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

    async def close(self, revoke: bool = True) -> None:
        """Stop keeping it alive; revoke it (deleting its keys) unless it is gone."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        life = self._granted
        if revoke and life is not None and not life.gone:
            life.gone = True
            with contextlib.suppress(LeaseNotFound):
                await self._client.lease_revoke(life.id)

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
        failed = False
        while True:
            await self._sleep(life.next_delay(self._clock(), failed))
            if not life.alive(self._clock()):
                break
            sent_at = self._clock()
            try:
                result = await self._client.lease_keep_alive(life.id)
            except LeaseNotFound:
                life.gone = True
                break
            except ClientError as error:
                logger.warning("keep-alive of lease %d failed: %s", life.id, error)
                failed = True
                continue
            life.renewed(sent_at, result.ttl)
            failed = False
        logger.warning("lease %d is lost (expired, revoked, or not kept alive in time)", life.id)
        self.lost.set()


class SyncKeptLease:
    """A lease kept alive by a daemon thread (see the module docstring): granted by
    `open()` (or entering `with`), revoked by `close()`. `lost` is a threading.Event."""

    def __init__(
        self, client: SyncClient, ttl: int, lease_id: int, clock: Callable[[], float]
    ) -> None:
        self._client = client
        self._asked = (ttl, lease_id)
        self._clock = clock
        self.lost = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._granted: LeaseLife | None = None

    @property
    def _life(self) -> LeaseLife:
        if self._granted is None:
            raise RuntimeError("the lease is not granted yet: open() it first")
        return self._granted

    def open(self) -> SyncKeptLease:
        """Grant the lease and start keeping it alive."""
        if self._granted is not None:
            raise RuntimeError("the lease was opened already")
        ttl, lease_id = self._asked
        granted_at = self._clock()
        granted = self._client.lease_grant(ttl, id=lease_id)
        self._granted = LeaseLife(granted.id, granted.ttl, granted_at)
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"raftkv-lease-{granted.id}", daemon=True
        )
        self._thread.start()
        return self

    @property
    def id(self) -> int:
        return self._life.id

    @property
    def ttl(self) -> int:
        return self._life.ttl

    @property
    def deadline(self) -> float:
        return self._life.deadline

    @property
    def alive(self) -> bool:
        return not self.lost.is_set() and self._life.alive(self._clock())

    def close(self, revoke: bool = True) -> None:
        """Stop keeping it alive; revoke it (deleting its keys) unless it is gone."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        life = self._granted
        if revoke and life is not None and not life.gone:
            life.gone = True
            with contextlib.suppress(LeaseNotFound):
                self._client.lease_revoke(life.id)

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
        failed = False
        while not self._stopping.wait(life.next_delay(self._clock(), failed)):
            if not life.alive(self._clock()):
                break
            sent_at = self._clock()
            try:
                result = self._client.lease_keep_alive(life.id)
            except LeaseNotFound:
                life.gone = True
                break
            except ClientError as error:
                logger.warning("keep-alive of lease %d failed: %s", life.id, error)
                failed = True
                continue
            life.renewed(sent_at, result.ttl)
            failed = False
        if not self._stopping.is_set():
            logger.warning("lease %d is lost (expired, revoked, or not kept alive in time)",
                           life.id)  # fmt: skip
            self.lost.set()
