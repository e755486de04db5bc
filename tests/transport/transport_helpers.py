"""Shared pieces of the transport tests: factories, settings, certificates, a runner."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from random import Random
from typing import Any, TypeVar

from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.transport.base import Transport, TransportHandler
from raftkv.raft.transport.grpc_transport import GrpcTransport
from raftkv.raft.transport.inprocess import InProcessNetwork, InProcessTransport
from raftkv.raft.transport.settings import PeerTransportSettings
from raftkv.raft.transport.tcp_transport import TcpTransport
from raftkv.testing.certificates import TlsFiles

T = TypeVar("T")

CLUSTER_ID = 1

# Fast enough for tests: a restarted peer is reached within ~0.1 s, a dead one noticed in
# well under the conformance suite's deadlines.
TEST_SETTINGS = PeerTransportSettings(
    cluster_id=CLUSTER_ID,
    snapshot_chunk_bytes=4096,  # the suite's 10 KB snapshot takes three chunks
    connect_timeout_seconds=2.0,
    request_timeout_seconds=2.0,
    reconnect_backoff_initial_seconds=0.01,
    reconnect_backoff_max_seconds=0.1,
    shutdown_grace_seconds=0.0,
)


def run(coroutine: Coroutine[Any, Any, T], timeout_seconds: float = 60.0) -> T:
    """Run `coroutine` in a fresh event loop, failing it after `timeout_seconds`."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_seconds):
            return await coroutine

    return asyncio.run(bounded())


def heartbeat(sender: int, to: int, index: int = 0) -> Message:
    return Message(
        type=MessageType.HEARTBEAT, to=NodeId(to), sender=NodeId(sender), term=1, index=index
    )


class InProcessFactory:
    """check_transport's factory for InProcessTransport on a fault-free network."""

    def __init__(self) -> None:
        self.network = InProcessNetwork()
        self.transports: list[InProcessTransport] = []

    async def create(
        self, handler: TransportHandler, address: str | None = None
    ) -> tuple[Transport, str]:
        if address is None:
            address = f"node-{len(self.transports) + 1}"
        transport = self.network.transport(address)
        await transport.start(handler)
        self.transports.append(transport)
        return transport, address

    async def close(self) -> None:
        for transport in self.transports:
            await transport.stop()


class GrpcFactory:
    """check_transport's factory for GrpcTransport on 127.0.0.1, ephemeral ports."""

    transport_class: type[GrpcTransport | TcpTransport] = GrpcTransport

    def __init__(self, settings: PeerTransportSettings = TEST_SETTINGS) -> None:
        self.settings = settings
        self.transports: list[GrpcTransport | TcpTransport] = []

    def make(self, address: str | None = None) -> GrpcTransport | TcpTransport:
        settings = replace(self.settings, listen_address=address or "127.0.0.1:0")
        # A seeded generator per transport: the backoff jitter is reproducible.
        transport = self.transport_class(settings, rng=Random(len(self.transports)))
        self.transports.append(transport)
        return transport

    async def create(
        self, handler: TransportHandler, address: str | None = None
    ) -> tuple[Transport, str]:
        transport = self.make(address)
        await transport.start(handler)
        return transport, transport.address

    async def started(
        self, handler: TransportHandler, address: str | None = None
    ) -> GrpcTransport | TcpTransport:
        transport = self.make(address)
        await transport.start(handler)
        return transport

    async def close(self) -> None:
        for transport in self.transports:
            await transport.stop()


class TcpFactory(GrpcFactory):
    """check_transport's factory for TcpTransport on 127.0.0.1, ephemeral ports."""

    transport_class = TcpTransport


# Both peer transports raftkv ships, for tests that hold for either.
PEER_FACTORIES = {"grpc": GrpcFactory, "tcp": TcpFactory}
# Where each peer transport logs.
PEER_LOGGERS: dict[type[GrpcTransport | TcpTransport], str] = {
    GrpcTransport: "raftkv.transport.grpc",
    TcpTransport: "raftkv.transport.tcp",
}


# The common names of the suite's shared certificates, accepted for any node id (etcd's
# --peer-cert-allowed-cn): one certificate serves every node of a factory.
SHARED_COMMON_NAMES = ("peer", "named")


def peer_settings(
    files: TlsFiles,
    base: PeerTransportSettings = TEST_SETTINGS,
    *,
    allowed_common_names: tuple[str, ...] = SHARED_COMMON_NAMES,
) -> PeerTransportSettings:
    """`base` with mutual TLS from `files`."""
    return replace(
        base,
        ca_file=files.ca_file,
        cert_file=files.cert_file,
        key_file=files.key_file,
        allowed_common_names=allowed_common_names,
    )
