"""Shared pieces of the transport tests: factories, settings, certificates, a runner."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from random import Random
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftkv.raft.core.types import Message, MessageType, NodeId
from raftkv.raft.transport.base import Transport, TransportHandler
from raftkv.raft.transport.grpc_transport import GrpcTransport
from raftkv.raft.transport.inprocess import InProcessNetwork, InProcessTransport
from raftkv.raft.transport.settings import PeerTransportSettings
from raftkv.raft.transport.tcp_transport import TcpTransport

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


# -- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def settings(self, base: PeerTransportSettings = TEST_SETTINGS) -> PeerTransportSettings:
        return replace(base, ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)


_NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
_VALID_UNTIL = datetime.datetime(2125, 1, 1, tzinfo=datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_certificate(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class CertificateAuthority:
    """A throwaway CA that issues peer certificates (server and client use) for 127.0.0.1."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} CA"))
            .issuer_name(_name(f"{name} CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW)
            .not_valid_after(_VALID_UNTIL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name}-ca.pem"
        _write_certificate(self.certificate, self.ca_file)

    def issue(
        self,
        peer: str,
        *,
        trusting: Path | None = None,
        names: list[x509.GeneralName] | None = None,
    ) -> TlsFiles:
        """A certificate for `peer` signed by this CA, valid for `names` (by default IP
        127.0.0.1 and localhost); the CA file the peer trusts is this one unless `trusting`
        names another."""
        if names is None:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(peer))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW)
            .not_valid_after(_VALID_UNTIL)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.directory / f"{self.name}-{peer}.pem"
        key_file = self.directory / f"{self.name}-{peer}-key.pem"
        _write_certificate(certificate, cert_file)
        _write_key(key, key_file)
        return TlsFiles(trusting or self.ca_file, cert_file, key_file)
