"""Hash checks on a LocalCluster (real Nodes, manual clock) with the HTTP API and a
`CorruptChecker` per node, hashing inline: a forged append (issue 12, item 1) is found and
the follower it diverged stops serving; a healthy cluster under writes, compaction,
snapshots and a member replacement never raises an alarm."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from server_helpers import Scrape, error_code

from raftkv.client import Client
from raftkv.kv import (
    CorruptChecker,
    CorruptCheckerSettings,
    KvCommand,
    KvService,
    KvStateMachine,
    Put,
    encode_command,
)
from raftkv.kv.corrupt_checker import run_inline
from raftkv.raft.core.types import Entry, Message, MessageType, NodeId
from raftkv.raft.driver.envelope import RequestId, encode_proposal
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.server import HttpSettings, create_app
from raftkv.server.app import METRICS
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario

Json = Any


@dataclass
class Api:
    cluster: LocalCluster
    checker_settings: CorruptCheckerSettings
    services: dict[int, KvService] = field(default_factory=dict)
    clients: dict[int, TestClient[Any, Any]] = field(default_factory=dict)
    checkers: dict[int, CorruptChecker] = field(default_factory=dict)

    async def serve(self, node: Node) -> None:
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        service = KvService(node, machine)
        app = create_app(service, HttpSettings())
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        self.services[node.id] = service
        self.clients[node.id] = client

    def check(self, node: int) -> None:
        """Run a CorruptChecker on `node`, as `raftkv serve` does."""
        service = self.services[node]
        checker = CorruptChecker(
            service.node, service.machine, self.checker_settings, run_blocking=run_inline
        )
        checker.start()
        self.checkers[node] = checker
        self.clients[node].server.app[METRICS].corrupt_checker = checker

    async def call(self, node: int, method: str, path: str, **kwargs: Any) -> tuple[int, Json]:
        async def request() -> tuple[int, Json]:
            async with self.clients[node].request(method, path, **kwargs) as response:
                if response.content_type == "application/json":
                    return response.status, await response.json()
                return response.status, await response.text()

        return await self.cluster.complete(request())

    def url(self, node: int) -> str:
        return str(self.clients[node].make_url("")).rstrip("/")

    def machines(self) -> list[KvStateMachine]:
        return [
            service.machine
            for node, service in self.services.items()
            if not self.cluster.nodes[NodeId(node)].status().stopped
        ]

    async def caught_up(self) -> None:
        def applied() -> bool:
            leader = self.cluster.leader()
            return leader is not None and all(
                service.node.status().applied_index >= leader.status().commit_index
                for service in self.services.values()
                if not service.node.status().stopped
            )

        await self.cluster.run_until(applied)


@asynccontextmanager
async def serving(
    checker_settings: CorruptCheckerSettings, settings: NodeSettings | None = None
) -> AsyncIterator[Api]:
    def kv_machine(storage: RaftStorage) -> KvStateMachine:
        return KvStateMachine(storage.app_data())

    cluster = LocalCluster(3, state_machine=kv_machine, settings=settings)
    await cluster.start()
    await cluster.wait_for_leader()
    api = Api(cluster, checker_settings)
    try:
        for node in cluster.nodes.values():
            await api.serve(node)
        yield api
    finally:
        for checker in api.checkers.values():
            await checker.stop()
        for client in api.clients.values():
            await client.close()
        await cluster.stop()


def forge_append(api: Api, victim: int, key: bytes, value: bytes) -> None:
    """One MsgApp to `victim` as if from the leader, in the leader's term, appending at the
    victim's last index + 1 a put the leader never proposed, committed at once."""
    leader = api.cluster.leader()
    assert leader is not None
    node = api.cluster.nodes[NodeId(victim)]
    last = node.status().last_index
    term = leader.status().term
    data = encode_proposal(
        RequestId(leader.id, 1, 1), encode_command(KvCommand(Put(key=key, value=value)))
    )
    node.deliver(
        [
            Message(
                MessageType.APPEND,
                to=NodeId(victim),
                sender=leader.id,
                term=term,
                log_term=api.cluster.storages[NodeId(victim)].term(last),
                index=last,
                entries=(Entry(term=term, index=last + 1, data=data),),
                commit=last + 1,
            )
        ]
    )


def test_a_forged_append_is_found_and_the_follower_it_diverged_refuses_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="raftkv.kv.corrupt_checker")

    async def scenario() -> None:
        settings = CorruptCheckerSettings(interval_s=2.0, poll_interval_s=0.1)
        async with serving(settings) as api:
            cluster = api.cluster
            leader = cluster.leader()
            assert leader is not None
            victim = next(node for node in api.services if node != leader.id)
            healthy = next(node for node in api.services if node not in (leader.id, victim))
            assert (await api.call(leader.id, "PUT", "/v1/kv/before", json={"value": "0"}))[
                0
            ] == 200
            await api.caught_up()

            # Item 1 as it was: the victim applies the forged put, takes the leader's next
            # entry (same index and term) as present, and serves the forgery, even on a
            # linearizable read.
            forge_append(api, victim, b"forged", b"evil")
            assert (await api.call(leader.id, "PUT", "/v1/kv/real", json={"value": "1"}))[0] == 200
            await api.caught_up()
            status, body = await api.call(victim, "GET", "/v1/kv/forged")
            assert (status, body["kv"]["value"]) == (200, "evil")
            assert (await api.call(victim, "GET", "/v1/kv/real"))[0] == 404
            assert (await api.call(leader.id, "GET", "/v1/kv/forged"))[0] == 404

            # The members start checking (as after a restart: the start-up check).
            for node in api.services:
                api.check(node)
            await cluster.run_until(
                lambda: all(
                    [alarm.member_id for alarm in machine.corrupt_alarms()] == [victim]
                    for machine in api.machines()
                ),
                max_seconds=10,
            )
            for node in api.services:
                status, body = await api.call(node, "GET", "/v1/status")
                assert status == 200
                [alarm] = body["alarms"]
                assert (alarm["alarm"], alarm["member"], alarm["reason"]) == (
                    "CORRUPT",
                    victim,
                    "minority",
                )
                scrape = Scrape((await api.call(node, "GET", "/metrics"))[1])
                assert scrape.value("raftkv_corrupt_alarm", member=str(victim)) == 1
                assert scrape.label_values("raftkv_corrupt_alarm", "member") == {str(victim)}
                assert scrape.value("raftkv_hash_check_mismatches_total") == 1
                assert scrape.value("raftkv_hash_checks_total") >= 1

            # The victim serves no reads (linearizable or not) and takes no writes.
            for method, path, kwargs in [
                ("GET", "/v1/kv/real", {}),
                ("GET", "/v1/kv/forged?consistency=serializable", {}),
                ("GET", "/v1/kv?key=a&range_end=z", {}),
                ("PUT", "/v1/kv/other", {"json": {"value": "x"}}),
                ("POST", "/v1/txn", {"json": {"success": [{"op": "range", "key": "real"}]}}),
                ("GET", "/v1/leases", {}),
                ("GET", "/get/real", {}),
            ]:
                status, body = await api.call(victim, method, path, **kwargs)
                assert (status, error_code(body)) == (503, "corrupt"), path
                assert f"member {victim} is CORRUPT" in body["error"]["message"]
            status, body = await api.call(victim, "GET", "/ready")
            assert status == 503 and "CORRUPT" in body["reason"]
            for node in (leader.id, healthy):
                status, body = await api.call(node, "GET", "/v1/kv/real")
                assert (status, body["kv"]["value"]) == (200, "1")
                assert (await api.call(node, "GET", "/ready"))[0] == 200

            # The Python client moves on to a member that serves.
            client = Client(
                [api.url(victim), api.url(healthy)],
                rng=random.Random(0),
                sleep=cluster.clock.sleep,
                clock=cluster.clock.now,
            )
            try:
                found = await cluster.complete(client.get("real"))
                assert found is not None and found.value == b"1"
            finally:
                await client.close()

            # Removing the member ends its alarm (the leader clears it).
            status, _ = await api.call(leader.id, "DELETE", f"/v1/members/{victim}")
            assert status == 200
            await cluster.run_until(
                lambda: (
                    not any(
                        service.machine.corrupt_alarms()
                        for node, service in api.services.items()
                        if node != victim
                    )
                ),
                max_seconds=10,
            )

    run_scenario(scenario)
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert any(
        "CORRUPT: this member" in message and "Remove it (raftkv member remove" in message
        for message in errors
    ), errors


def test_a_healthy_cluster_under_writes_compaction_snapshots_and_a_replacement_agrees() -> None:
    async def scenario() -> None:
        checker_settings = CorruptCheckerSettings(interval_s=1.0, poll_interval_s=0.1)
        node_settings = NodeSettings(snapshot_every_entries=20, snapshot_keep_entries=0)
        async with serving(checker_settings, node_settings) as api:
            cluster = api.cluster
            for node in list(api.services):
                api.check(node)
            rng = random.Random(12)
            completed: set[int] = set()

            def note_completed() -> None:
                """Checks whose every member reported the same hash, as seen so far."""
                for machine in api.machines():
                    record = machine.hash_check_record()
                    if len(record.reports) == len(record.members) and record.majority:
                        completed.add(record.check_index)

            async def write(count: int) -> None:
                for number in range(count):
                    node = rng.choice(sorted(api.services))
                    if api.cluster.nodes[NodeId(node)].status().stopped:
                        continue
                    key = f"k{rng.randrange(30)}"
                    if rng.random() < 0.2:
                        await api.call(node, "DELETE", f"/v1/kv/{key}")
                    else:
                        await api.call(node, "PUT", f"/v1/kv/{key}", json={"value": str(number)})
                    note_completed()

            await write(60)
            revision = max(machine.current_revision() for machine in api.machines())
            leader = cluster.leader()
            assert leader is not None
            status, _ = await api.call(
                leader.id, "POST", "/v1/compact", json={"revision": revision - 10}
            )
            assert status == 200
            await write(40)

            # Replace a founder: a new member joins (through a snapshot: the log behind
            # it is compacted), then the founder leaves.
            joiner = await cluster.add_joiner(NodeId(4))
            await api.serve(joiner)
            api.check(4)
            status, _ = await api.call(
                leader.id, "POST", "/v1/members", json={"id": 4, "peer_url": address_of(NodeId(4))}
            )
            assert status == 200
            await api.caught_up()
            assert (await api.call(leader.id, "POST", "/v1/members/4/promote"))[0] == 200
            leaving = next(node for node in (1, 2, 3) if node != leader.id)
            assert (await api.call(leader.id, "DELETE", f"/v1/members/{leaving}"))[0] == 200
            await cluster.nodes[NodeId(leaving)].stop()
            await write(60)
            assert joiner.stats.snapshots_installed >= 1

            # A few more checks with the new member, all agreeing.
            first_after = max(machine.hash_check_record().check_index for machine in api.machines())

            def checked_with_new_member() -> bool:
                note_completed()
                record = api.services[4].machine.hash_check_record()
                return record.check_index > first_after and record.majority != b""

            await cluster.run_until(checked_with_new_member, max_seconds=10)
            await api.caught_up()
            assert len(completed) >= 5, completed
            for machine in api.machines():
                assert machine.corrupt_alarms() == []
                assert machine.corrupt_alarms_raised == 0
            assert sum(checker.hashes_reported for checker in api.checkers.values()) >= 10

    run_scenario(scenario)
