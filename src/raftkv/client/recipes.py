"""Coordination recipes on leases, transactions and watches: a `Lock` and an `Election`,
each handing out a fencing token (etcd's concurrency package): `Lock` and `Election` for
the asyncio `Client`, `SyncLock` and `SyncElection` for the blocking `SyncClient`, with the
same rules.

    async with client.lease(10) as lease:
        lock = Lock(client, "locks/report", lease)
        async with lock:                  # waits its turn
            await storage.write(data, fencing_token=lock.token)

    with sync_client.lease(10) as lease, SyncLock(sync_client, "locks/report", lease) as lock:
        storage.write(data, fencing_token=lock.token)

How they work: every contender puts its own key `<prefix><lease id, hex>` attached to its
lease, if absent (a txn on create_revision == 0, so a retry after an unknown outcome finds
its own key instead of making a second one). Contenders are served in the order their keys
were created: the holder is the key with the smallest create_revision. A waiter waits for the
deletion of the key just before its own (or of its own), then looks again. A
holder that dies stops keeping its lease alive; the lease expires and deletes its key, which
lets the next one in.

The fencing token is the holder key's create_revision: it grows with every new holder
(each later holder's key was created later), so a resource that remembers the largest
token it has seen and refuses smaller ones cannot be written by a holder that lost the lock
without knowing it.

Caveats (read them before relying on these):
- A lock is only as good as its lease: if the holder cannot keep the lease alive (a pause,
  a partition) it expires and another contender gets the lock while the first still
  believes it holds it. `lease.alive` says whether the lease is certainly still alive, but
  a pause between checking it and acting cannot be ruled out by the holder: protect
  the resource with the fencing token.
- Holding is cooperative: nothing stops other code from writing the lock's keys.
- The order is fair (first come, first served by revision); a contender whose lease
  expires while waiting loses its place (LockLost).

The rules live once, in `_Place` (which key, which txn, whose deletion to wait for); the
asyncio and blocking contenders only carry its requests out, each line of one the other
without `await` (as `SyncClient` is `Client`'s).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from raftkv.api.keys import prefix_end
from raftkv.client import txn
from raftkv.client.async_client import Client
from raftkv.client.errors import ClientError
from raftkv.client.leases import KeptLease, SyncKeptLease
from raftkv.client.results import KeyValue, RangeResult, TxnResult
from raftkv.client.sync_client import SyncClient
from raftkv.client.txn import Compare, Data, Op, to_bytes

__all__ = ["Election", "Lock", "LockLost", "SyncElection", "SyncLock"]


class LockLost(ClientError):
    """The lease behind a lock or a candidacy is gone (expired or revoked): the key that
    held the place was deleted. Start again with a new lease."""

    def __init__(self, message: str) -> None:
        super().__init__("lock_lost", message, status=None, endpoints=())


_Txn = tuple[Sequence[Compare], Sequence[Op], Sequence[Op]]


class _Place:
    """One place in the queue under `prefix`, without I/O: the key, its create_revision,
    the requests that enter, read, wait in and leave the queue, and what their answers
    mean. The contenders below carry the requests out."""

    def __init__(self, prefix: Data, lease_id: int) -> None:
        self.prefix = to_bytes(prefix, "prefix")
        if not self.prefix:
            raise ValueError("a lock or election needs a non-empty prefix")
        self.lease_id = lease_id
        self.key = self.prefix + f"{lease_id:016x}".encode()
        # The key's create_revision once it is put (0: not in the queue).
        self.revision = 0

    def enter_txn(self, value: bytes) -> _Txn:
        """Put the key with `value` if absent, else read it: a retry after an unknown
        outcome finds its own key instead of making a second one."""
        key = self.key
        return (
            [txn.create_revision(key, "=", 0)],
            [txn.put(key, value, lease=self.lease_id)],
            [txn.get(key)],
        )

    def entered(self, result: TxnResult) -> None:
        if result.succeeded:
            self.revision = result.revision
            return
        found = result.responses[0]
        assert isinstance(found, RangeResult)
        if not found.kvs:  # cannot happen: the compare and the get are one atomic txn
            raise LockLost(f"the key {self.key!r} exists and does not")
        self.revision = found.kvs[0].create_revision

    def next_page(self, page: RangeResult) -> bytes | None:
        """Where the queue's next page starts (read at the first page's revision), or None
        once it is whole: the server cuts a long answer (`more`), and the oldest key may
        sort anywhere in key order."""
        if page.more and page.kvs:
            return page.kvs[-1].key + b"\0"
        return None

    def wait_for(self, waiting: Sequence[KeyValue]) -> bytes | None:
        """Given the queue oldest first: None if this key is first in it, else the key just
        before it, whose deletion to wait for. LockLost if this key left the queue."""
        if not any(kv.key == self.key for kv in waiting):
            raise LockLost(f"the key {self.key!r} is gone: lease {self.lease_id} ended")
        before = [kv for kv in waiting if kv.create_revision < self.revision]
        return before[-1].key if before else None

    def leave_txn(self) -> _Txn:
        """Delete the key if it is still this place's (not a later one's of the same lease)."""
        return ([txn.create_revision(self.key, "=", self.revision)], [txn.delete(self.key)], [])

    def proclaim_txn(self, value: Data) -> _Txn:
        """Set the key's value if it is still this place's; LockLost at once if this place
        is not in the queue (with revision 0 the compare would hold for an absent key)."""
        if not self.revision:
            raise LockLost(f"not leading: the key {self.key!r} is not in the queue")
        return (
            [txn.create_revision(self.key, "=", self.revision)],
            [txn.put(self.key, to_bytes(value, "value"), lease=self.lease_id)],
            [],
        )

    def proclaimed(self, result: TxnResult) -> None:
        if not result.succeeded:
            raise LockLost(f"not leading: the key {self.key!r} is gone")


def _oldest_first(kvs: list[KeyValue]) -> list[KeyValue]:
    return sorted(kvs, key=lambda kv: kv.create_revision)


def _check_client(client: object, wanted: type, recipe: str, other: str) -> None:
    if not isinstance(client, wanted):
        raise TypeError(
            f"{recipe} needs a {wanted.__name__}, got {type(client).__name__}: "
            f"use {other} with a {'SyncClient' if wanted is Client else 'Client'}"
        )


class _Contender(_Place):
    """A place in the queue, for the asyncio `Client`."""

    def __init__(self, client: Client, prefix: Data, lease: KeptLease) -> None:
        super().__init__(prefix, lease.id)
        self.client = client
        self.lease = lease

    async def enter(self, value: bytes) -> None:
        """Put the key (if absent) with `value`: joins the queue."""
        self.entered(await self.client.txn(*self.enter_txn(value)))

    async def queue(self) -> tuple[list[KeyValue], int]:
        """The keys in the queue, oldest first, and the revision they were read at."""
        page = await self.client.range(self.prefix, prefix=True)
        kvs, revision = list(page.kvs), page.revision
        while (after := self.next_page(page)) is not None:
            page = await self.client.range(after, prefix_end(self.prefix), revision=revision)
            kvs.extend(page.kvs)
        return _oldest_first(kvs), revision

    async def wait_for_turn(self) -> None:
        """Return once this key is the oldest in the queue; LockLost if it leaves it."""
        while True:
            waiting, revision = await self.queue()
            before = self.wait_for(waiting)
            if before is None:
                return
            await self._wait_for_delete(before, revision + 1)

    async def _wait_for_delete(self, key: bytes, start_revision: int) -> None:
        """Until `key` (the one just before this one) or this one (its lease ended) is
        deleted at or after `start_revision`."""
        watched = (key, self.key)
        watcher = self.client.watch(
            self.prefix, prefix=True, start_revision=start_revision, no_put=True
        )
        async with watcher:
            async for event in watcher:
                if event.kv.key in watched:
                    return

    async def join(self, value: bytes) -> int:
        """Enter the queue and wait to be first in it; the fencing token. Leaves the queue
        if the wait fails or is cancelled."""
        await self.enter(value)
        try:
            await self.wait_for_turn()
        except BaseException:
            await self.leave()
            raise
        return self.revision

    async def leave(self) -> None:
        if self.revision:
            await self.client.txn(*self.leave_txn())
            self.revision = 0

    async def proclaim(self, value: Data) -> None:
        self.proclaimed(await self.client.txn(*self.proclaim_txn(value)))


class _SyncContender(_Place):
    """A place in the queue, for the blocking `SyncClient`: `_Contender` without `await`."""

    def __init__(self, client: SyncClient, prefix: Data, lease: SyncKeptLease) -> None:
        super().__init__(prefix, lease.id)
        self.client = client
        self.lease = lease

    def enter(self, value: bytes) -> None:
        self.entered(self.client.txn(*self.enter_txn(value)))

    def queue(self) -> tuple[list[KeyValue], int]:
        page = self.client.range(self.prefix, prefix=True)
        kvs, revision = list(page.kvs), page.revision
        while (after := self.next_page(page)) is not None:
            page = self.client.range(after, prefix_end(self.prefix), revision=revision)
            kvs.extend(page.kvs)
        return _oldest_first(kvs), revision

    def wait_for_turn(self) -> None:
        while True:
            waiting, revision = self.queue()
            before = self.wait_for(waiting)
            if before is None:
                return
            self._wait_for_delete(before, revision + 1)

    def _wait_for_delete(self, key: bytes, start_revision: int) -> None:
        watched = (key, self.key)
        watcher = self.client.watch(
            self.prefix, prefix=True, start_revision=start_revision, no_put=True
        )
        with watcher:
            for event in watcher:
                if event.kv.key in watched:
                    return

    def join(self, value: bytes) -> int:
        self.enter(value)
        try:
            self.wait_for_turn()
        except BaseException:
            self.leave()
            raise
        return self.revision

    def leave(self) -> None:
        if self.revision:
            self.client.txn(*self.leave_txn())
            self.revision = 0

    def proclaim(self, value: Data) -> None:
        self.proclaimed(self.client.txn(*self.proclaim_txn(value)))


class Lock:
    """A distributed mutex under `prefix` ("locks/name/"), held through `lease` (a
    KeptLease, e.g. `client.lease(ttl)`). `token`: the fencing token while held. For the
    asyncio `Client`; `SyncLock` is the blocking one."""

    def __init__(self, client: Client, prefix: Data, lease: KeptLease) -> None:
        _check_client(client, Client, "Lock", "SyncLock")
        self._contender = _Contender(client, prefix, lease)

    @property
    def token(self) -> int:
        """The fencing token (the lock key's create_revision); 0 when not held."""
        return self._contender.revision

    async def acquire(self) -> int:
        """Wait until the lock is held; its fencing token."""
        return await self._contender.join(b"")

    async def release(self) -> None:
        await self._contender.leave()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.release()


class SyncLock:
    """`Lock` for the blocking `SyncClient`, held through a SyncKeptLease
    (`sync_client.lease(ttl)`): `acquire()` blocks until held, `with` holds it."""

    def __init__(self, client: SyncClient, prefix: Data, lease: SyncKeptLease) -> None:
        _check_client(client, SyncClient, "SyncLock", "Lock")
        self._contender = _SyncContender(client, prefix, lease)

    @property
    def token(self) -> int:
        """The fencing token (the lock key's create_revision); 0 when not held."""
        return self._contender.revision

    def acquire(self) -> int:
        """Wait until the lock is held; its fencing token."""
        return self._contender.join(b"")

    def release(self) -> None:
        self._contender.leave()

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class Election:
    """A leader election under `prefix`: `campaign(value)` waits until this candidate
    leads and returns its fencing token; `leader()` is who leads now; `proclaim()` changes
    the leader's value while it still leads; `resign()` steps down. For the asyncio
    `Client`; `SyncElection` is the blocking one."""

    def __init__(self, client: Client, prefix: Data, lease: KeptLease) -> None:
        _check_client(client, Client, "Election", "SyncElection")
        self._contender = _Contender(client, prefix, lease)

    @property
    def token(self) -> int:
        return self._contender.revision

    async def campaign(self, value: Data) -> int:
        return await self._contender.join(to_bytes(value, "value"))

    async def proclaim(self, value: Data) -> None:
        """Set the leader's value; LockLost if this candidate's key is gone."""
        await self._contender.proclaim(value)

    async def leader(self) -> KeyValue | None:
        """The leader's key and value (the oldest key in the queue), or None."""
        waiting, _ = await self._contender.queue()
        return waiting[0] if waiting else None

    async def resign(self) -> None:
        await self._contender.leave()


class SyncElection:
    """`Election` for the blocking `SyncClient`, through a SyncKeptLease: `campaign(value)`
    blocks until this candidate leads."""

    def __init__(self, client: SyncClient, prefix: Data, lease: SyncKeptLease) -> None:
        _check_client(client, SyncClient, "SyncElection", "Election")
        self._contender = _SyncContender(client, prefix, lease)

    @property
    def token(self) -> int:
        return self._contender.revision

    def campaign(self, value: Data) -> int:
        return self._contender.join(to_bytes(value, "value"))

    def proclaim(self, value: Data) -> None:
        """Set the leader's value; LockLost if this candidate's key is gone."""
        self._contender.proclaim(value)

    def leader(self) -> KeyValue | None:
        """The leader's key and value (the oldest key in the queue), or None."""
        waiting, _ = self._contender.queue()
        return waiting[0] if waiting else None

    def resign(self) -> None:
        self._contender.leave()
