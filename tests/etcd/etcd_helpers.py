"""Harness for the etcd API tests: a 3-node LocalCluster (real Nodes, manual clock), each
node's `KvService` behind a real `EtcdGrpcPort` on 127.0.0.1, and etcd's generated stubs
over a real gRPC channel to each. Every call runs inside `cluster.complete`, which advances
simulated time until the answer has arrived.

- `etcd_cluster()` / `EtcdApi`: `api.call(node, "KV", "Range", request)` answers the
  response message, or raises `grpc.aio.AioRpcError` (its `.code()` and `.details()` are
  what an etcd client sees).
- `api.call(..., metadata=(("token", token),))` calls as the token's user (the metadata
  etcd's clients send).
- `api.stubs(node)`: the stubs themselves, for streaming calls; drive them with
  `api.cluster.complete(...)`. `api.servicers[node]`: the servicers behind both doors (the
  JSON gateway's tests serve them over HTTP).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc.aio

from raftkv.etcd.context import EtcdContext
from raftkv.etcd.proto import rpc_pb2_grpc
from raftkv.etcd.server import EtcdGrpcPort
from raftkv.etcd.servicers import EtcdServicers
from raftkv.etcd.settings import EtcdSettings
from raftkv.kv import KvService, KvSettings, KvStateMachine
from raftkv.kv.auth_service import AuthService, AuthSettings
from raftkv.kv.passwords import CHEAP_COST
from raftkv.kv.watch import WatchSettings
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing.local_cluster import LocalCluster

CLUSTER_ID = 7
# Logins in tests: cheap password hashes (the real cost is ~70 ms and 32 MiB each).
AUTH_SETTINGS = AuthSettings(password_cost=CHEAP_COST)


@dataclass(frozen=True)
class Stubs:
    KV: Any
    Watch: Any
    Lease: Any
    Cluster: Any
    Maintenance: Any
    Auth: Any


@dataclass
class EtcdApi:
    cluster: LocalCluster
    services: dict[int, KvService]
    servicers: dict[int, EtcdServicers]
    ports: dict[int, EtcdGrpcPort]
    channels: dict[int, grpc.aio.Channel]

    def stubs(self, node: int) -> Stubs:
        channel = self.channels[node]
        return Stubs(
            KV=rpc_pb2_grpc.KVStub(channel),  # type: ignore[no-untyped-call]
            Watch=rpc_pb2_grpc.WatchStub(channel),  # type: ignore[no-untyped-call]
            Lease=rpc_pb2_grpc.LeaseStub(channel),  # type: ignore[no-untyped-call]
            Cluster=rpc_pb2_grpc.ClusterStub(channel),  # type: ignore[no-untyped-call]
            Maintenance=rpc_pb2_grpc.MaintenanceStub(channel),  # type: ignore[no-untyped-call]
            Auth=rpc_pb2_grpc.AuthStub(channel),  # type: ignore[no-untyped-call]
        )

    async def call(
        self, node: int, service: str, method: str, request: Any, metadata: Any = None
    ) -> Any:
        """A unary call to `node`, completed under simulated time."""
        stub = getattr(self.stubs(node), service)
        return await self.cluster.complete(getattr(stub, method)(request, metadata=metadata))

    def leader(self) -> int:
        leader = self.cluster.leader()
        assert leader is not None
        return int(leader.id)

    def follower(self) -> int:
        leader = self.leader()
        return next(node for node in self.services if node != leader)


@asynccontextmanager
async def etcd_cluster(
    kv_settings: KvSettings | None = None,
    settings: EtcdSettings | None = None,
    watch_settings: WatchSettings | None = None,
    auth_settings: AuthSettings = AUTH_SETTINGS,
) -> AsyncIterator[EtcdApi]:
    """The state machines take `kv_settings` and `watch_settings`, and run their watch
    hubs on the cluster's manual clock (progress intervals, send timeouts); each node's
    AuthService takes `auth_settings`."""
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
    servicers: dict[int, EtcdServicers] = {}
    try:
        for node_id, node in cluster.nodes.items():
            machine = node.state_machine
            assert isinstance(machine, KvStateMachine)
            service = KvService(node, machine, kv_settings)
            services[node_id] = service
            context = EtcdContext(service, CLUSTER_ID, auth=AuthService(service, auth_settings))
            servicers[node_id] = EtcdServicers.of(context, settings)
            port = EtcdGrpcPort(servicers[node_id], "127.0.0.1:0")
            await port.start()
            ports[node_id] = port
            # No receive limit: tests see whatever the server sends (fragments, large ranges).
            channels[node_id] = grpc.aio.insecure_channel(
                f"127.0.0.1:{port.port}", options=[("grpc.max_receive_message_length", -1)]
            )
        yield EtcdApi(cluster, services, servicers, ports, channels)
    finally:
        for channel in channels.values():
            await channel.close()
        for port in ports.values():
            await port.close()
        for bundle in servicers.values():
            bundle.context.close()
        for service in services.values():
            service.close()
        await cluster.stop()
