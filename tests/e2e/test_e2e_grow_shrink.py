"""Membership under continuous writes, with real processes: grow 1 -> 3 -> 5, shrink
5 -> 3 (the leader among the removed), replace a member whose disk was wiped (removed, then
a new empty node joins in its place). A writer keeps writing through all of it with the
retrying client; every acknowledged write is there at the end, on every member."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

from kv_processes import KvProcessCluster, cli, wait_until

from raftkv.client import Client, ClientSettings, OutcomeUnknown


def voters(cluster: KvProcessCluster) -> set[int]:
    node = cluster.running()[0]
    members = cluster.request(node, "GET", "/v1/cluster")[1]["members"]
    return {member["id"] for member in members if member["role"] != "learner"}


def join(cluster: KvProcessCluster) -> int:
    node = cluster.add_node()
    via = cluster.url(cluster.running()[0])
    cluster.start(node, command=cluster.join_command(node, via, auto_promote=True))
    return node


def remove(cluster: KvProcessCluster, node: int) -> None:
    removed = cli(cluster, "member", "remove", str(node))
    assert removed.returncode == 0, removed.stderr
    cluster.kill(node, signal.SIGTERM)
    cluster.ids.remove(node)


def test_grow_shrink_and_replace_under_continuous_writes(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path, nodes=1)
    acknowledged: list[str] = []
    unknown: list[str] = []

    async def writer(stop: asyncio.Event) -> None:
        # Given node 1 only (all there is at first); it follows the membership through
        # /v1/cluster, refreshed every second here (membership churns fast in this test).
        settings = ClientSettings(deadline_s=60, request_timeout_s=5, member_refresh_s=1.0)
        async with Client(cluster.endpoints(), settings) as client:
            sequence = 0
            while not stop.is_set():
                sequence += 1
                key = f"churn/{sequence:06d}"
                try:
                    await client.put(key, "v")
                except OutcomeUnknown:
                    unknown.append(key)
                    continue
                acknowledged.append(key)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(writer(stop))

        async def step(action: object, *arguments: object) -> object:
            return await asyncio.to_thread(action, *arguments)  # type: ignore[arg-type]

        async def progress(count: int) -> None:
            target = len(acknowledged) + count
            await asyncio.to_thread(
                wait_until, lambda: len(acknowledged) >= target, 60, f"{count} more writes"
            )

        await progress(20)
        for _ in range(2):  # 1 -> 3
            await step(join, cluster)
            await progress(20)
        assert await step(voters, cluster) == {1, 2, 3}
        for _ in range(2):  # 3 -> 5
            await step(join, cluster)
            await progress(20)
        assert await step(voters, cluster) == {1, 2, 3, 4, 5}
        leader = await step(cluster.wait_for_leader)
        # 5 -> 3: the leader and one other go.
        for node in [leader, next(n for n in (1, 2, 3, 4, 5) if n != leader)]:
            await step(remove, cluster, node)
            await progress(20)
        assert len(await step(voters, cluster)) == 3
        # A member's disk is wiped: remove it, and a new empty node takes its place.
        wiped = cluster.running()[-1]
        await step(cluster.kill, wiped)
        shutil.rmtree(tmp_path / f"data-{wiped}")
        await step(remove, cluster, wiped)
        await step(join, cluster)
        await progress(20)
        stop.set()
        await task

    try:
        cluster.start_all()
        asyncio.run(scenario())
        assert unknown == []
        assert len(voters(cluster)) == 3
        expected = sorted(acknowledged)
        for node in cluster.running():

            def has_all(node: int = node) -> bool:
                status, body = cluster.request(
                    node, "GET", "/v1/kv?key=churn/&prefix=true&keys_only=true"
                )
                return status == 200 and [kv["key"] for kv in body["kvs"]] == expected

            wait_until(has_all, 30, f"member {node} to hold every acknowledged write")
    finally:
        cluster.stop()
