"""check_transport against every transport raftkv ships, and mutual TLS refusing strangers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from transport_helpers import (
    PEER_FACTORIES,
    GrpcFactory,
    InProcessFactory,
    heartbeat,
    peer_settings,
    run,
)

from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport.base import Transport, TransportHandler
from raftkv.raft.transport.inprocess import InProcessTransport
from raftkv.testing import RecordingHandler, check_transport
from raftkv.testing.certificates import CertificateAuthority, TlsFiles
from raftkv.testing.conformance.transport import wait_until


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, "cluster")


@pytest.fixture
def peer_tls(authority: CertificateAuthority) -> TlsFiles:
    # One certificate per node, used both to serve and to dial (as etcd's peer certs).
    return authority.issue("peer")


def test_in_process_transport_conforms() -> None:
    run(check_transport(InProcessFactory()))


class MutantTransport(InProcessTransport):
    """An InProcessTransport with one bug: `mutate` rewrites what `send` is given."""

    mutate: Callable[[Sequence[Message]], Sequence[Message]] = staticmethod(lambda m: m)

    def send(self, messages: Sequence[Message]) -> None:
        super().send(self.mutate(messages))


class MutantFactory(InProcessFactory):
    def __init__(self, mutate: Callable[[Sequence[Message]], Sequence[Message]]) -> None:
        super().__init__()
        self.mutate = mutate

    async def create(
        self, handler: TransportHandler, address: str | None = None
    ) -> tuple[Transport, str]:
        transport = MutantTransport(self.network, address or f"node-{len(self.transports) + 1}")
        transport.mutate = self.mutate  # type: ignore[method-assign]
        await transport.start(handler)
        self.transports.append(transport)
        return transport, transport.address


MUTATIONS: dict[str, Callable[[Sequence[Message]], Sequence[Message]]] = {
    "loses the context field": lambda messages: [
        msgspec.structs.replace(m, context=b"") for m in messages
    ],
    "reorders a batch": lambda messages: list(reversed(messages)),
    "loses one message in a thousand": lambda messages: [m for m in messages if m.index != 123],
    "drops messages for unknown peers silently": lambda messages: [
        m for m in messages if m.to != 99
    ],
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_the_suite_catches_a_broken_transport(
    mutate: Callable[[Sequence[Message]], Sequence[Message]],
) -> None:
    # Guard against a suite that passes whatever it is given.
    with pytest.raises(AssertionError):
        run(check_transport(MutantFactory(mutate), timeout_seconds=0.5))


@pytest.fixture(params=sorted(PEER_FACTORIES))
def factory_class(request: pytest.FixtureRequest) -> type[GrpcFactory]:
    """Each peer transport raftkv ships (the TLS tests hold for both)."""
    return PEER_FACTORIES[request.param]


def test_peer_transport_conforms(factory_class: type[GrpcFactory]) -> None:
    run(check_transport(factory_class()))


def test_peer_transport_with_mutual_tls_conforms(
    factory_class: type[GrpcFactory], peer_tls: TlsFiles
) -> None:
    run(check_transport(factory_class(peer_settings(peer_tls))))


def test_a_client_certificate_from_another_ca_is_refused(
    tmp_path: Path,
    authority: CertificateAuthority,
    peer_tls: TlsFiles,
    factory_class: type[GrpcFactory],
) -> None:
    # The stranger trusts the cluster's CA (so it would accept the server), but its own
    # certificate is signed by a CA the server does not know.
    stranger_tls = CertificateAuthority(tmp_path, "stranger").issue(
        "peer", trusting=authority.ca_file
    )

    async def scenario() -> None:
        members = factory_class(peer_settings(peer_tls))
        strangers = factory_class(peer_settings(stranger_tls))
        try:
            server_handler, stranger_handler, member_handler = (
                RecordingHandler(),
                RecordingHandler(),
                RecordingHandler(),
            )
            server = await members.started(server_handler)
            stranger = await strangers.started(stranger_handler)
            member = await members.started(member_handler)
            stranger.set_peer(NodeId(1), server.address)
            member.set_peer(NodeId(1), server.address)
            await wait_until(
                lambda: NodeId(1) in stranger_handler.unreachable,
                "the stranger to learn the server is unreachable",
                retry=lambda: stranger.send([heartbeat(9, 1)]),
            )
            # A member's message gets through, and is the only one that did.
            await wait_until(
                lambda: bool(server_handler.delivered),
                "a member's message",
                retry=lambda: member.send([heartbeat(2, 1)]),
            )
            assert {message.sender for message in server_handler.delivered} == {2}
            assert stranger.stats.messages_sent == 0
        finally:
            await members.close()
            await strangers.close()

    run(scenario())


def test_a_server_certificate_from_another_ca_is_refused(
    tmp_path: Path,
    authority: CertificateAuthority,
    peer_tls: TlsFiles,
    factory_class: type[GrpcFactory],
) -> None:
    # The impostor server accepts the member's client certificate (it trusts the cluster
    # CA) but presents one the member cannot verify.
    impostor_tls = CertificateAuthority(tmp_path, "impostor").issue(
        "peer", trusting=authority.ca_file
    )

    async def scenario() -> None:
        members = factory_class(peer_settings(peer_tls))
        impostors = factory_class(peer_settings(impostor_tls))
        try:
            impostor_handler, member_handler = RecordingHandler(), RecordingHandler()
            impostor = await impostors.started(impostor_handler)
            member = await members.started(member_handler)
            member.set_peer(NodeId(1), impostor.address)
            await wait_until(
                lambda: NodeId(1) in member_handler.unreachable,
                "the member to refuse the impostor",
                retry=lambda: member.send([heartbeat(2, 1)]),
            )
            assert impostor_handler.delivered == []
        finally:
            await members.close()
            await impostors.close()

    run(scenario())


@pytest.mark.parametrize("override", [True, False], ids=["with override", "without override"])
def test_a_server_named_otherwise_is_reached_only_with_server_name_override(
    authority: CertificateAuthority, override: bool, factory_class: type[GrpcFactory]
) -> None:
    # The certificate names "raftkv-node-1" only, not the 127.0.0.1 the client dials.
    named = authority.issue("named", names=[x509.DNSName("raftkv-node-1")])
    client_settings = peer_settings(named)
    if override:
        client_settings = replace(client_settings, server_name_override="raftkv-node-1")

    async def scenario() -> None:
        servers, clients = factory_class(peer_settings(named)), factory_class(client_settings)
        try:
            server_handler, client_handler = RecordingHandler(), RecordingHandler()
            server = await servers.started(server_handler)
            client = await clients.started(client_handler)
            client.set_peer(NodeId(1), server.address)
            await wait_until(
                lambda: bool(server_handler.delivered or client_handler.unreachable),
                "delivery or a report",
                retry=lambda: client.send([heartbeat(2, 1)]),
            )
            if override:
                assert server_handler.delivered and not client_handler.unreachable
            else:
                assert client_handler.unreachable and not server_handler.delivered
        finally:
            await servers.close()
            await clients.close()

    run(scenario())
