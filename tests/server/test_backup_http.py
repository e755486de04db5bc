"""`GET /v1/snapshot` on a LocalCluster: the backup reads back with `read_backup` and
restores to the same state; backups are limited (max_concurrent_backups, 503 busy)."""

from __future__ import annotations

import asyncio
from typing import Any

from server_helpers import error_code, started

from raftkv.kv import KvStateMachine
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.server import HttpSettings
from raftkv.server.backup import read_backup
from raftkv.testing.local_cluster import run_scenario


def test_a_backup_restores_to_the_same_state() -> None:
    async def scenario() -> None:
        async with started() as api:
            for index in range(20):
                await api.call(2, "PUT", f"/v1/kv/b/{index}", json={"value": str(index)})

            async def fetch() -> tuple[int, bytes]:
                async with api.clients[3].get("/v1/snapshot") as response:
                    return response.status, await response.read()

            status, data = await api.cluster.complete(fetch())
            assert status == 200
            header, payload = read_backup(data)
            assert header.revision == 21 and header.node_id == 3
            copy = KvStateMachine(MemoryAppData())
            copy.restore(payload, header.index, header.term)
            assert copy.state_hash() == api.services[3].machine.state_hash()

    run_scenario(scenario)


def test_one_backup_at_a_time_others_are_told_busy() -> None:
    async def scenario() -> None:
        async with started(HttpSettings(max_concurrent_backups=1)) as api:
            node = api.services[1].node
            entered, gate = asyncio.Event(), asyncio.Event()
            real_read_index = node.read_index

            async def held_read_index(**kwargs: Any) -> int:
                entered.set()
                await gate.wait()
                return await real_read_index(**kwargs)

            node.read_index = held_read_index  # type: ignore[method-assign]

            async def first() -> int:
                async with api.clients[1].get("/v1/snapshot") as response:
                    await response.read()
                    return response.status

            async def second() -> tuple[int, Any]:
                await entered.wait()
                async with api.clients[1].get("/v1/snapshot") as response:
                    body = await response.json()
                gate.set()
                return response.status, body

            (first_status, (second_status, body)) = await api.cluster.complete(
                asyncio.gather(first(), second())
            )
            assert first_status == 200
            assert second_status == 503 and error_code(body) == "busy"
            node.read_index = real_read_index  # type: ignore[method-assign]
            assert await api.cluster.complete(first()) == 200  # the slot was given back

    run_scenario(scenario)
