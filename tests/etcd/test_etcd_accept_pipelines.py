"""The etcd port's accept pipelines (raftkv.etcd.server): several gRPC servers listening on
one address with SO_REUSEPORT, each taking its share of the connections (and of the port's
call limit: test_etcd_kv.py), and never sharing the port with another process's listener."""

from __future__ import annotations

import errno
import socket

import grpc
import grpc.aio
import pytest
from etcd_helpers import etcd_cluster

from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.etcd.server import HOT_METHODS, EtcdGrpcPort
from raftkv.etcd.settings import MAX_ACCEPT_PIPELINES, EtcdSettings
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.testing.local_cluster import run_scenario
from raftkv.testing.processes import free_port, port_free


def _listener(port: int, *, reuse_port: bool) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    return listener


def _channel(port: int) -> grpc.aio.Channel:
    # A subchannel of its own: a connection of its own, not one shared with other channels.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def test_every_connection_is_served_whichever_pipeline_takes_it() -> None:
    async def scenario() -> None:
        async with etcd_cluster(settings=EtcdSettings(accept_pipelines=4)) as api:
            leader = api.leader()
            port = api.ports[leader].port
            put = rpc_pb2.PutRequest(key=b"k", value=b"v")
            await api.call(leader, "KV", "Put", put)
            channels = [_channel(port) for _ in range(24)]
            try:
                for channel in channels:
                    stub = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
                    answer = await api.cluster.complete(stub.Range(rpc_pb2.RangeRequest(key=b"k")))
                    assert [kv.value for kv in answer.kvs] == [b"v"]
            finally:
                for channel in channels:
                    await channel.close()

    run_scenario(scenario)


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so_reuseport"])
def test_a_port_another_socket_listens_on_is_refused(reuse_port: bool) -> None:
    # With SO_REUSEPORT the other listener (a raftkv started twice, say) would share the
    # port silently and take some of its connections; the port must refuse to start.
    async def scenario() -> None:
        async with etcd_cluster() as api:
            servicers = api.servicers[api.leader()]
            port = free_port()
            with _listener(port, reuse_port=reuse_port):
                etcd_port = EtcdGrpcPort(servicers, f"127.0.0.1:{port}")
                with pytest.raises(OSError) as refused:
                    await etcd_port.start()
                assert refused.value.errno == errno.EADDRINUSE

    run_scenario(scenario)


def test_a_closed_port_releases_every_pipeline() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            servicers = api.servicers[api.leader()]
            port = free_port()
            etcd_port = EtcdGrpcPort(servicers, f"127.0.0.1:{port}")
            await etcd_port.start()
            assert etcd_port.port == port
            assert not port_free(port)
            # A second port on the same address is refused while the first listens.
            with pytest.raises(OSError):
                await EtcdGrpcPort(servicers, f"127.0.0.1:{port}").start()
            await etcd_port.close()
            assert port_free(port)

    run_scenario(scenario)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"accept_pipelines": 0}, "positive integer"),
        ({"accept_pipelines": MAX_ACCEPT_PIPELINES + 1}, "at most"),
        ({"accept_pipelines": 3, "max_concurrent_calls": 2}, "must not exceed"),
    ],
)
def test_absurd_pipeline_counts_are_refused(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigInvalid, match=message):
        EtcdSettings(**fields)  # type: ignore[arg-type]


def test_the_hot_methods_are_methods_of_etcds_services() -> None:
    # A misspelt name would silently leave a hot method on the generic path.
    methods = {
        f"/{service.full_name}/{method.name}"
        for service in rpc_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert HOT_METHODS.issubset(methods)
    assert len(methods) > 3 * len(HOT_METHODS)  # the rest: the generic handler's


def test_hot_and_other_methods_alike_are_answered() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            await api.call(leader, "KV", "Put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
            status = await api.call(leader, "Maintenance", "Status", rpc_pb2.StatusRequest())
            assert status.leader == leader
            members = await api.call(leader, "Cluster", "MemberList", rpc_pb2.MemberListRequest())
            assert len(members.members) == 3

    run_scenario(scenario)
