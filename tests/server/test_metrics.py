"""Prometheus metrics (`raftkv.server.metrics`): scraped over HTTP from a 3-node LocalCluster
(real Nodes, manual clock) whose API apps carry the metrics middleware and /metrics route,
and read directly from a node's collector; plus the driver's histogram accumulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import prometheus_client
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from server_helpers import Scrape

from raftkv.kv import KvService, KvSettings, KvStateMachine
from raftkv.raft import Histogram
from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.driver.errors import Overloaded, ProposalTimeout
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.transport.base import Transport
from raftkv.raft.transport.grpc_transport import GrpcTransport
from raftkv.raft.transport.inprocess import InProcessNetwork
from raftkv.raft.transport.settings import PeerTransportSettings
from raftkv.server import HttpSettings, create_app
from raftkv.server.metrics import Metrics
from raftkv.testing.local_cluster import LocalCluster, address_of, run_scenario

MAX_BODY_BYTES = 1024
MAX_VALUE_BYTES = 64


def kv_machine(storage: RaftStorage) -> KvStateMachine:
    return KvStateMachine(storage.app_data())


def scrape_registry(metrics: Metrics) -> Scrape:
    return Scrape(prometheus_client.generate_latest(metrics.registry).decode())


@dataclass
class Served:
    cluster: LocalCluster
    metrics: dict[int, Metrics]
    clients: dict[int, TestClient[Any, Any]]

    async def call(self, node: int, method: str, path: str, **kwargs: Any) -> int:
        async def request() -> int:
            async with self.clients[node].request(method, path, **kwargs) as response:
                await response.read()
                return response.status

        return await self.cluster.complete(request())

    async def scrape(self, node: int) -> Scrape:
        async def request() -> Scrape:
            async with self.clients[node].get("/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == prometheus_client.CONTENT_TYPE_LATEST
                return Scrape(await response.text())

        return await self.cluster.complete(request())


@asynccontextmanager
async def served() -> AsyncIterator[Served]:
    cluster = LocalCluster(3, state_machine=kv_machine)
    await cluster.start()
    await cluster.wait_for_leader()
    metrics: dict[int, Metrics] = {}
    clients: dict[int, TestClient[Any, Any]] = {}
    try:
        for node_id, node in cluster.nodes.items():
            machine = node.state_machine
            assert isinstance(machine, KvStateMachine)
            service = KvService(node, machine, KvSettings(max_value_bytes=MAX_VALUE_BYTES))
            metrics[node_id] = Metrics(node, machine)
            app = create_app(service, HttpSettings(max_body_bytes=MAX_BODY_BYTES))
            # Outermost, so it counts what the API's error middleware answers.
            app.middlewares.insert(0, metrics[node_id].middleware)
            app.router.add_get("/metrics", metrics[node_id].handler)
            client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
            await client.start_server()
            clients[node_id] = client
        yield Served(cluster, metrics, clients)
    finally:
        for client in clients.values():
            await client.close()
        await cluster.stop()


KV_ROUTE = "/v1/kv/{key}"
HTTP_COUNT = "raftkv_http_request_duration_seconds_count"


def test_a_scrape_shows_raft_mvcc_and_http_metrics_after_writes_and_reads() -> None:
    async def scenario() -> None:
        async with served() as api:
            leader = api.cluster.leader()
            assert leader is not None
            follower = next(node for node in api.cluster.nodes if node != leader.id)
            before = await api.scrape(follower)
            for number in range(5):
                path = f"/v1/kv/key{number}"
                assert await api.call(follower, "PUT", path, json={"value": "v"}) == 200
            assert await api.call(leader.id, "GET", "/v1/kv/key0") == 200
            assert await api.call(leader.id, "GET", "/no/such/route") == 404
            # Refused at two limits: the body's size (HttpSettings), the value's (KvSettings).
            too_large = {"value": "x" * MAX_BODY_BYTES}
            assert await api.call(follower, "PUT", "/v1/kv/big", json=too_large) == 413
            too_long = {"value": "x" * (MAX_VALUE_BYTES + 1)}
            assert await api.call(follower, "PUT", "/v1/kv/long", json=too_long) == 413

            assert api.metrics[follower].machine.wait_for_live_key_count(10)
            on_follower = await api.scrape(follower)
            node = api.cluster.nodes[follower]
            status = node.status()
            assert on_follower.value("raftkv_term") == status.term >= 1
            assert on_follower.value("raftkv_applied_index") == status.applied_index
            assert on_follower.value("raftkv_commit_index") == status.commit_index
            assert on_follower.value("raftkv_leader_id") == leader.id
            assert on_follower.value("raftkv_role", role="follower") == 1
            assert on_follower.value("raftkv_role", role="leader") == 0
            committed = "raftkv_proposals_committed_total"
            assert on_follower.value(committed) - before.value(committed) == 5
            assert on_follower.value("raftkv_proposals_failed_total") == 0
            assert on_follower.value("raftkv_proposals_pending") == 0
            assert on_follower.value("raftkv_fsync_duration_seconds_count") > 0
            assert on_follower.value("raftkv_entries_per_fsync_count") > 0
            assert on_follower.value("raftkv_apply_duration_seconds_count") > 0
            machine = api.metrics[follower].machine
            assert on_follower.value("raftkv_mvcc_revision") == machine.current_revision() == 6
            assert on_follower.value("raftkv_mvcc_compacted_revision") == 0
            assert on_follower.value("raftkv_mvcc_keys") == 5
            # By route template, never by raw path.
            assert on_follower.value(HTTP_COUNT, route=KV_ROUTE, method="PUT", status="200") == 5
            assert on_follower.value(HTTP_COUNT, route=KV_ROUTE, method="PUT", status="413") == 2
            # The scrape before counts too (a scrape is timed once it has been answered).
            assert on_follower.label_values(HTTP_COUNT, "route") == {KV_ROUTE, "/metrics"}
            limit_hits = "raftkv_limit_hits_total"
            assert on_follower.value(limit_hits, limit="max_body_bytes") == 1
            assert on_follower.value(limit_hits, limit="kv_request_limits") == 1
            assert on_follower.value(limit_hits, limit="max_command_bytes") == 0
            # The in-process transport has no queues or stream stats to show.
            assert "raftkv_peer_send_queue_messages" not in on_follower.families

            on_leader = await api.scrape(leader.id)
            assert on_leader.value("raftkv_role", role="leader") == 1
            assert on_leader.value("raftkv_applied_index") == leader.status().applied_index
            assert on_leader.label_values("raftkv_peer_match_index", "peer") == {"1", "2", "3"}
            assert on_leader.value(HTTP_COUNT, route=KV_ROUTE, method="GET", status="200") == 1
            assert on_leader.value(HTTP_COUNT, route="unmatched", method="GET", status="404") == 1

    run_scenario(scenario)


def test_metrics_of_nodes_in_one_process_do_not_clash() -> None:
    async def scenario() -> None:
        async with served() as api:
            leader = api.cluster.leader()
            assert leader is not None
            assert await api.call(leader.id, "PUT", "/v1/kv/a", json={"value": "1"}) == 200
            # A second Metrics of the same node: its own registry, no duplicate series.
            machine = leader.state_machine
            assert isinstance(machine, KvStateMachine)
            again = Metrics(leader, machine)
            assert scrape_registry(again).value("raftkv_proposals_committed_total") == 1
            assert HTTP_COUNT not in scrape_registry(again).names()  # no request through it
            by_node = {node: scrape_registry(metrics) for node, metrics in api.metrics.items()}
            committed = {
                node: scrape.value("raftkv_proposals_committed_total")
                for node, scrape in by_node.items()
            }
            assert committed == {node: 1 if node == leader.id else 0 for node in by_node}
            # Nothing was registered in prometheus_client's process-wide registry.
            global_names = {family.name for family in prometheus_client.REGISTRY.collect()}
            assert not any(name.startswith("raftkv_") for name in global_names)

    run_scenario(scenario)


def test_overloaded_failed_and_snapshot_counts() -> None:
    async def scenario() -> None:
        settings = NodeSettings(
            max_pending_requests=1, snapshot_every_entries=5, snapshot_keep_entries=0
        )
        cluster = LocalCluster(3, state_machine=kv_machine, settings=settings)
        await cluster.start()
        leader = await cluster.wait_for_leader()
        # The members' format declarations (log_formats.py) are in the log first.
        await cluster.wait_for_batching()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        services: dict[int, KvService] = {}
        metrics: dict[int, Metrics] = {}
        for node in cluster.nodes.values():
            machine = node.state_machine
            assert isinstance(machine, KvStateMachine)
            services[node.id], metrics[node.id] = KvService(node, machine), Metrics(node, machine)
        try:
            # One proposal pending fills max_pending_requests: the next is Overloaded.
            first = asyncio.ensure_future(services[leader.id].put(b"a", b"1"))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded):
                await services[leader.id].put(b"b", b"2")
            await cluster.complete(first)
            # An isolated follower's proposal never commits: it times out, a failure.
            cluster.network.isolate(address_of(follower.id))
            with pytest.raises(ProposalTimeout):
                await cluster.complete(services[follower.id].put(b"c", b"3", timeout=1.0))
            for number in range(10):
                await cluster.complete(services[leader.id].put(f"k{number}".encode(), b"v"))
            # Until the leader's log no longer holds the entry the follower needs next.
            await cluster.run_until(
                lambda: leader.status().first_index > follower.status().applied_index + 1
            )
            # Back in touch, the follower catches up from the leader's snapshot (the log
            # before it is compacted away).
            cluster.network.heal()
            await cluster.run_until(lambda: follower.stats.snapshots_installed >= 1)

            on_leader = scrape_registry(metrics[leader.id])
            assert on_leader.value("raftkv_limit_hits_total", limit="max_pending_requests") == 1
            assert on_leader.value("raftkv_proposals_committed_total") == 11
            assert on_leader.value("raftkv_snapshots_total", operation="create") >= 1
            created = "raftkv_snapshot_duration_seconds_count"
            assert on_leader.value(created, operation="create") >= 1
            assert on_leader.value("raftkv_snapshot_last_size_bytes") > 0
            assert on_leader.value("raftkv_log_first_index") > 1  # compacted
            on_follower = scrape_registry(metrics[follower.id])
            assert on_follower.value("raftkv_proposals_failed_total") == 1
            assert on_follower.value("raftkv_snapshots_total", operation="install") >= 1
            assert on_follower.value(created, operation="install") >= 1
        finally:
            await cluster.stop()
        # A stopped node still answers, with its last state.
        assert scrape_registry(metrics[leader.id]).value("raftkv_term") >= 1

    run_scenario(scenario)


def unstarted_metrics(transport: Transport | None = None) -> Metrics:
    storage = MemoryStorage()
    machine = kv_machine(storage)
    if transport is None:
        transport = InProcessNetwork().transport("node-1")
    node = Node(node_id=NodeId(1), storage=storage, transport=transport, state_machine=machine)
    return Metrics(node, machine)


def test_a_grpc_transport_adds_its_queue_depths_and_counters() -> None:
    async def scenario() -> None:
        settings = PeerTransportSettings(cluster_id=1, max_queue_messages=10)
        transport = GrpcTransport(settings)
        metrics = unstarted_metrics(transport)
        await transport.start(metrics.node)
        try:
            transport.set_peer(NodeId(2), "127.0.0.1:1")
            heartbeats = [
                Message(MessageType.HEARTBEAT, to=NodeId(2), sender=NodeId(1), term=1)
                for _ in range(15)
            ]
            # Read before the sender task runs: 10 queued, 5 dropped at the queue's limit.
            transport.send(heartbeats)
            scrape = scrape_registry(metrics)
        finally:
            await transport.stop()
        assert scrape.value("raftkv_peer_send_queue_messages", peer="2") == 10
        assert scrape.value("raftkv_transport_messages_dropped_total") == 5
        assert scrape.value("raftkv_transport_send_failures_total") == 0
        assert scrape.value("raftkv_transport_snapshots_total", outcome="failed") == 0
        assert scrape.value("raftkv_transport_snapshots_total", outcome="refused") == 0
        assert scrape.value("raftkv_snapshot_full_bytes_total") == 0
        assert scrape.value("raftkv_snapshot_bytes_sent_total") == 0
        assert scrape.value("raftkv_snapshot_delta_bytes_saved_total") == 0
        assert scrape.value("raftkv_snapshot_incoming_chunks_total", source="local") == 0
        assert scrape.value("raftkv_snapshot_cache_bytes") == 0

    run_scenario(scenario)


def test_the_middleware_counts_exceptions_raised_through_it() -> None:
    """Without an error middleware inside it: an HTTPException counts with its status,
    aiohttp's own 413 (client_max_size) as a body limit hit, anything else as 500."""

    async def conflict(request: web.Request) -> web.Response:
        raise web.HTTPConflict()

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def scenario() -> None:
        metrics = unstarted_metrics()
        app = web.Application(middlewares=[metrics.middleware], client_max_size=16)
        app.router.add_get("/conflict", conflict)
        app.router.add_get("/broken", broken)
        app.router.add_post("/echo/{what}", echo)
        app.router.add_get("/metrics", metrics.handler)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            assert (await client.get("/conflict")).status == 409
            assert (await client.get("/broken")).status == 500
            assert (await client.post("/echo/x", data=b"x" * 17)).status == 413
            assert (await client.post("/conflict")).status == 405
            response = await client.get("/metrics")
            scrape = Scrape(await response.text())
        assert scrape.value(HTTP_COUNT, route="/conflict", method="GET", status="409") == 1
        assert scrape.value(HTTP_COUNT, route="/broken", method="GET", status="500") == 1
        assert scrape.value(HTTP_COUNT, route="/echo/{what}", method="POST", status="413") == 1
        assert scrape.value(HTTP_COUNT, route="unmatched", method="POST", status="405") == 1
        assert scrape.value("raftkv_limit_hits_total", limit="max_body_bytes") == 1
        # The node has not started: no Raft state yet, counters at zero.
        assert "raftkv_term" not in scrape.names()
        assert scrape.value("raftkv_proposals_committed_total") == 0

    run_scenario(scenario)


# -- the driver's histogram accumulator ------------------------------------------------------


def test_histogram_buckets_count_values_up_to_their_bound() -> None:
    histogram = Histogram((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 5.0, 7.0):
        histogram.observe(value)
    assert histogram.counts == [2, 1, 1, 1]
    assert histogram.cumulative() == [(1.0, 2), (2.0, 3), (5.0, 4), (float("inf"), 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(15.0)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_histogram_bounds_must_increase_strictly(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increase strictly"):
        Histogram(bounds)
