"""Coordination recipes on leases, transactions and watches: a `Lock` and an `Election`,
each handing out a fencing token (etcd's concurrency package, in asyncio).

    async with client.lease(10) as lease:
        lock = Lock(client, "locks/report", lease)
        async with lock:                  # waits its turn
            await storage.write(data, fencing_token=lock.token)

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
"""

from __future__ import annotations

from types import TracebackType

from raftkv.api.keys import prefix_end
from raftkv.client import txn
from raftkv.client.async_client import Client
from raftkv.client.errors import ClientError
from raftkv.client.leases import KeptLease
from raftkv.client.results import KeyValue, RangeResult
from raftkv.client.txn import Data, to_bytes

__all__ = ["Election", "Lock", "LockLost"]


class LockLost(ClientError):
    """The lease behind a lock or a candidacy is gone (expired or revoked): the key that
    held the place was deleted. Start again with a new lease."""

    def __init__(self, message: str) -> None:
        super().__init__("lock_lost", message, status=None, endpoints=())


class _Contender:
    """One place in the queue under `prefix`: the key, its create_revision, and waiting
    for the keys created before it to go."""

    def __init__(self, client: Client, prefix: Data, lease: KeptLease) -> None:
        self.client = client
        self.prefix = to_bytes(prefix, "prefix")
        if not self.prefix:
            raise ValueError("a lock or election needs a non-empty prefix")
        self.lease = lease
        self.key = self.prefix + f"{lease.id:016x}".encode()
        # The key's create_revision once it is put (0: not in the queue).
        self.revision = 0

    async def enter(self, value: bytes) -> None:
        """Put the key (if absent) with `value`: joins the queue."""
        key = self.key
        result = await self.client.txn(
            [txn.create_revision(key, "=", 0)],
            [txn.put(key, value, lease=self.lease.id)],
            [txn.get(key)],
        )
        if result.succeeded:
            self.revision = result.revision
            return
        found = result.responses[0]
        assert isinstance(found, RangeResult)
        if not found.kvs:  # cannot happen: the compare and the get are one atomic txn
            raise LockLost(f"the key {key!r} exists and does not")
        self.revision = found.kvs[0].create_revision

    async def queue(self) -> tuple[list[KeyValue], int]:
        """The keys in the queue, oldest first, and the revision they were read at. Read
        page by page at one revision: the server cuts a long answer (`more`), and the
        oldest key may sort anywhere in key order."""
        result = await self.client.range(self.prefix, prefix=True)
        kvs, revision = list(result.kvs), result.revision
        while result.more and result.kvs:
            after = result.kvs[-1].key + b"\0"
            result = await self.client.range(after, prefix_end(self.prefix), revision=revision)
            kvs.extend(result.kvs)
        waiting = sorted(kvs, key=lambda kv: kv.create_revision)
        return waiting, revision

    async def wait_for_turn(self) -> None:
        """Return once this key is the oldest in the queue; LockLost if it leaves it."""
        while True:
            waiting, revision = await self.queue()
            if not any(kv.key == self.key for kv in waiting):
                raise LockLost(f"the key {self.key!r} is gone: lease {self.lease.id} ended")
            before = [kv for kv in waiting if kv.create_revision < self.revision]
            if not before:
                return
            await self._wait_for_delete(before[-1].key, revision + 1)

    async def _wait_for_delete(self, key: bytes, start_revision: int) -> None:
        """Until `key` (the one just before this one) or this one (its lease ended) is
        deleted after `start_revision` - 1."""
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
            await self.client.txn(
                [txn.create_revision(self.key, "=", self.revision)], [txn.delete(self.key)]
            )
            self.revision = 0


class Lock:
    """A distributed mutex under `prefix` ("locks/name/"), held through `lease` (a
    KeptLease, e.g. `client.lease(ttl)`). `token`: the fencing token while held."""

    def __init__(self, client: Client, prefix: Data, lease: KeptLease) -> None:
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


class Election:
    """A leader election under `prefix`: `campaign(value)` waits until this candidate
    leads and returns its fencing token; `leader()` is who leads now; `proclaim()` changes
    the leader's value while it still leads; `resign()` steps down."""

    def __init__(self, client: Client, prefix: Data, lease: KeptLease) -> None:
        self._client = client
        self._contender = _Contender(client, prefix, lease)

    @property
    def token(self) -> int:
        return self._contender.revision

    async def campaign(self, value: Data) -> int:
        return await self._contender.join(to_bytes(value, "value"))

    async def proclaim(self, value: Data) -> None:
        """Set the leader's value; LockLost if this candidate's key is gone."""
        contender = self._contender
        result = await self._client.txn(
            [txn.create_revision(contender.key, "=", contender.revision)],
            [txn.put(contender.key, to_bytes(value, "value"), lease=contender.lease.id)],
        )
        if not contender.revision or not result.succeeded:
            raise LockLost(f"not leading: the key {contender.key!r} is gone")

    async def leader(self) -> KeyValue | None:
        """The leader's key and value (the oldest key in the queue), or None."""
        waiting, _ = await self._contender.queue()
        return waiting[0] if waiting else None

    async def resign(self) -> None:
        await self._contender.leave()
