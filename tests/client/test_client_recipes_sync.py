"""The blocking lock and election recipes (`SyncLock`, `SyncElection`) with `SyncClient` and
its kept leases, against a 3-node in-process cluster (real HTTP servers on 127.0.0.1); and
each recipe refusing the other kind of client with a TypeError that names the right one."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from raftkv.client import (
    Client,
    Election,
    Lock,
    LockLost,
    SyncClient,
    SyncElection,
    SyncLock,
)
from raftkv.testing.http_cluster import HttpCluster, http_cluster
from raftkv.testing.local_cluster import run_scenario
from raftkv.testing.processes import wait_until

# A bound for a hang, not a timing the tests rely on.
_BOUND_S = 15.0


def blocking_in_cluster(test: object) -> None:
    async def scenario() -> None:
        async with http_cluster() as api:
            await api.run_blocking(test, api, timeout_s=60.0)

    run_scenario(scenario)


def queued(client: SyncClient, prefix: str) -> int:
    """How many contenders have a key under `prefix`."""
    return client.range(prefix, prefix=True, count_only=True).count


def test_a_sync_lock_serves_contenders_in_order_with_growing_fencing_tokens() -> None:
    def test(api: HttpCluster) -> None:
        with (
            SyncClient(api.endpoints()) as client,
            ThreadPoolExecutor(max_workers=1) as pool,
            client.lease(10) as first_lease,
            client.lease(10) as second_lease,
        ):
            first = SyncLock(client, "locks/job/", first_lease)
            second = SyncLock(client, "locks/job/", second_lease)
            first_token = first.acquire()
            assert first.token == first_token > 0
            waiting = pool.submit(second.acquire)
            wait_until(lambda: queued(client, "locks/job/") == 2, _BOUND_S, "a second key")
            assert not waiting.done()  # queued behind the holder
            first.release()
            second_token = waiting.result(timeout=_BOUND_S)
            assert second_token > first_token and second.token == second_token
            assert first.token == 0
            # The holder's lease ends: its key goes, the next one in line gets the lock.
            with client.lease(10) as third_lease:
                third = SyncLock(client, "locks/job/", third_lease)
                waiting = pool.submit(third.acquire)
                wait_until(lambda: queued(client, "locks/job/") == 2, _BOUND_S, "a third key")
                assert not waiting.done()
                second_lease.close()
                assert waiting.result(timeout=_BOUND_S) > second_token
                third.release()
            assert queued(client, "locks/job/") == 0

    blocking_in_cluster(test)


def test_a_sync_lock_as_a_with_block_is_released_on_exit() -> None:
    def test(api: HttpCluster) -> None:
        with SyncClient(api.endpoints()) as client, client.lease(10) as lease:
            with SyncLock(client, "locks/report/", lease) as lock:
                assert lock.token > 0
                assert queued(client, "locks/report/") == 1
            assert lock.token == 0 and queued(client, "locks/report/") == 0

    blocking_in_cluster(test)


def test_a_sync_election_campaign_leader_proclaim_and_resign() -> None:
    def test(api: HttpCluster) -> None:
        with (
            SyncClient(api.endpoints()) as client,
            ThreadPoolExecutor(max_workers=1) as pool,
            client.lease(10) as one_lease,
            client.lease(10) as two_lease,
        ):
            one = SyncElection(client, "election/", one_lease)
            two = SyncElection(client, "election/", two_lease)
            token = one.campaign("node-1")
            leader = one.leader()
            assert leader is not None and leader.value == b"node-1"
            assert leader.create_revision == token == one.token
            waiting = pool.submit(two.campaign, "node-2")
            wait_until(lambda: queued(client, "election/") == 2, _BOUND_S, "a second candidate")
            one.proclaim("node-1 at new address")
            leader = two.leader()
            assert leader is not None and leader.value == b"node-1 at new address"
            one.resign()
            assert waiting.result(timeout=_BOUND_S) > token
            leader = one.leader()
            assert leader is not None and leader.value == b"node-2"
            with pytest.raises(LockLost):  # resigned: no longer leading
                one.proclaim("node-1 again")
            two.resign()
            assert one.leader() is None

    blocking_in_cluster(test)


def test_proclaiming_without_leading_writes_nothing() -> None:
    """A candidate that never campaigned (or resigned) is refused before any write: its
    txn's compare `create_revision == 0` would otherwise hold for its absent key and put
    it, out of turn."""

    def test(api: HttpCluster) -> None:
        with SyncClient(api.endpoints()) as client, client.lease(10) as lease:
            election = SyncElection(client, "election/", lease)
            with pytest.raises(LockLost, match="not leading"):
                election.proclaim("usurper")
            assert election.leader() is None and queued(client, "election/") == 0

    blocking_in_cluster(test)


def test_each_recipe_refuses_the_other_kind_of_client_naming_the_right_recipe() -> None:
    sync_client = SyncClient("http://127.0.0.1:1")
    async_client = Client("http://127.0.0.1:1")
    lease: object = None  # never reached: the client is checked first
    for recipe, client, right in [
        (Lock, sync_client, "SyncLock"),
        (Election, sync_client, "SyncElection"),
        (SyncLock, async_client, "Lock"),
        (SyncElection, async_client, "Election"),
    ]:
        with pytest.raises(TypeError, match=f"use {right} with a"):
            recipe(client, "locks/x/", lease)  # type: ignore[operator]
    sync_client.close()
    asyncio.run(async_client.close())
