"""Harness for the etcd Watch tests: `etcd_cluster`'s cluster, with each node's watch hub
on the cluster's manual clock (progress intervals, send timeouts) and chosen
`WatchSettings`; and `WatchClient`, one Watch stream driven under simulated time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc.aio
from etcd_helpers import CLUSTER_ID, EtcdApi

from raftkv.etcd.context import EtcdContext
from raftkv.etcd.proto import rpc_pb2
from raftkv.etcd.server import EtcdGrpcPort, EtcdPortSettings
from raftkv.kv import KvService, KvSettings, KvStateMachine
from raftkv.kv.watch import WatchSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.local_cluster import LocalCluster


@asynccontextmanager
async def watch_cluster(
    watch_settings: WatchSettings | None = None,
    port_settings: EtcdPortSettings | None = None,
    kv_settings: KvSettings | None = None,
) -> AsyncIterator[EtcdApi]:
    cluster: LocalCluster

    def machine(storage: RaftStorage) -> KvStateMachine:
        return KvStateMachine(
            storage.app_data(), kv_settings, clock=cluster.clock, watch_settings=watch_settings
        )

    cluster = LocalCluster(3, state_machine=machine)
    await cluster.start()
    await cluster.wait_for_leader()
    services: dict[int, KvService] = {}
    ports: dict[int, EtcdGrpcPort] = {}
    channels: dict[int, grpc.aio.Channel] = {}
    try:
        for node_id, node in cluster.nodes.items():
            state_machine = node.state_machine
            assert isinstance(state_machine, KvStateMachine)
            service = KvService(node, state_machine, kv_settings)
            services[node_id] = service
            port = EtcdGrpcPort(EtcdContext(service, CLUSTER_ID), "127.0.0.1:0", port_settings)
            await port.start()
            ports[node_id] = port
            channels[node_id] = grpc.aio.insecure_channel(
                f"127.0.0.1:{port.port}", options=[("grpc.max_receive_message_length", -1)]
            )
        yield EtcdApi(cluster, services, ports, channels)
    finally:
        for channel in channels.values():
            await channel.close()
        for port in ports.values():
            await port.close()
        for service in services.values():
            service.close()
        await cluster.stop()


class WatchClient:
    """One Watch stream to `node`: `send` requests, `receive` responses (each completed
    under simulated time)."""

    def __init__(self, api: EtcdApi, node: int, metadata: Any = None) -> None:
        self.api = api
        self.node = node
        self.call = api.stubs(node).Watch.Watch(metadata=metadata)

    async def send(self, request: rpc_pb2.WatchRequest) -> None:
        await self.api.cluster.complete(self.call.write(request))

    async def create(self, **fields: Any) -> None:
        await self.send(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(**fields)))

    async def cancel(self, watch_id: int) -> None:
        await self.send(
            rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id))
        )

    async def request_progress(self) -> None:
        await self.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    async def receive(self, max_seconds: float = 30.0) -> rpc_pb2.WatchResponse:
        response = await self.api.cluster.complete(self.call.read(), max_seconds=max_seconds)
        assert response is not grpc.aio.EOF, "the stream ended"
        assert isinstance(response, rpc_pb2.WatchResponse)
        return response

    async def events(self, count: int) -> list[Any]:
        """The next `count` events, over as many responses as they come in."""
        events: list[Any] = []
        while len(events) < count:
            response = await self.receive()
            assert not response.canceled, response
            events += response.events
        assert len(events) == count
        return events
