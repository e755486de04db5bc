"""KV writes in batch entries (NodeSettings.batch_proposals): puts, deletes and txns that
share a log entry each keep their revision, their result and their exactly-once identity;
lease commands keep entries of their own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kv_helpers import started, stop

from raftkv.kv import Put, Range, Txn
from raftkv.kv.commands import RangeResponse
from raftkv.raft.driver.settings import NodeSettings
from raftkv.testing.local_cluster import run_scenario

BATCHING = NodeSettings(batch_proposals=True)


def test_writes_sharing_entries_each_get_a_revision_and_a_retry_gets_its_first_answer(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        cluster, services = await started(tmp_path, settings=BATCHING)
        leader = await cluster.wait_for_leader()
        service = services[leader.id]
        puts = [
            service.put(b"k%02d" % n, b"v", client_id=f"client-{n}", sequence=1) for n in range(30)
        ]
        answers = await cluster.complete(asyncio.gather(*puts))
        # One revision per write, in the order they were proposed, however they shared
        # entries.
        assert [answer.header.revision for answer in answers] == list(range(2, 32))
        assert leader.stats.proposals_batched > 0
        # A retry of one of them (same client, same sequence) is answered from its
        # session: the first answer, and nothing applied again.
        retried = await cluster.complete(
            service.put(b"k07", b"other", client_id="client-7", sequence=1)
        )
        assert retried == answers[7]
        assert service.machine.current_revision() == 31
        txn = Txn([], [Put(b"t", b"1"), Range(b"k00", b"k99", count_only=True)])
        written = await cluster.complete(service.txn(txn))
        counted = written.responses[1]
        assert isinstance(counted, RangeResponse) and counted.count == 30
        deleted = await cluster.complete(service.delete_range(b"k00", b"k10"))
        assert deleted.deleted == 10
        # Every member applied the same: the same state hash.

        def same() -> bool:
            machines = [each.machine for each in services.values()]
            hashes = {machine.state_hash() for machine in machines}
            return len(hashes) == 1 and machines[0].current_revision() == 33

        await cluster.run_until(same)
        await stop(cluster, services)

    run_scenario(scenario)


def test_lease_grants_keep_entries_of_their_own(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster, services = await started(tmp_path, settings=BATCHING)
        leader = await cluster.wait_for_leader()
        service = services[leader.id]
        before = leader.stats.proposals_batched
        grants = [service.lease_grant(60, lease_id) for lease_id in range(1, 11)]
        await cluster.complete(asyncio.gather(*grants))
        assert leader.stats.proposals_batched == before
        await stop(cluster, services)

    run_scenario(scenario)
