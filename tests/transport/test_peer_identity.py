"""Peer identity under mutual TLS (`raftkv.raft.transport.peer_identity`): a certificate
binds its connection to the node it names (CN node-<id>), so a certificate the CA signed for
node 2 cannot speak for node 3, one that names no node is refused, and a member request
carries who asked; a common name in allowed_common_names stays accepted for any node."""

from __future__ import annotations

from pathlib import Path

import pytest
from transport_helpers import (
    PEER_FACTORIES,
    GrpcFactory,
    heartbeat,
    peer_settings,
    run,
)

from raftkv.raft.core.types import NodeId
from raftkv.raft.transport.base import MemberAction, MemberRequest
from raftkv.raft.transport.peer_identity import PeerIdentity, UnknownPeer, node_common_name
from raftkv.testing.certificates import CertificateAuthority
from raftkv.testing.conformance.transport import RecordingHandler, wait_until


@pytest.fixture(params=sorted(PEER_FACTORIES))
def factory_class(request: pytest.FixtureRequest) -> type[GrpcFactory]:
    return PEER_FACTORIES[request.param]


def test_a_common_name_binds_to_the_node_it_names() -> None:
    assert PeerIdentity.of_common_names(["node-3"], ()).node == 3
    assert PeerIdentity.of_common_names([node_common_name(2**64 - 1)], ()).node == 2**64 - 1
    assert PeerIdentity.of_common_names(["shared"], ["shared"]).node is None
    assert PeerIdentity.of_certificate(None, ()).node is None  # no TLS: nothing known
    for stranger in ("outsider", "node-0", "node-03", "node-", f"node-{2**64}", "Node-1", ""):
        with pytest.raises(UnknownPeer, match="names no node"):
            PeerIdentity.of_common_names([stranger], ())
    with pytest.raises(UnknownPeer, match="names no node"):
        PeerIdentity.of_common_names([], ())
    bound = PeerIdentity.of_common_names(["node-2"], ())
    bound.check_sender(2, "a frame")
    with pytest.raises(
        UnknownPeer, match="a frame claims node 3, but its certificate names node 2"
    ):
        bound.check_sender(3, "a frame")
    PeerIdentity.unbound().check_sender(3, "a frame")


def test_a_certificate_speaks_only_for_its_own_node(
    tmp_path: Path, factory_class: type[GrpcFactory]
) -> None:
    authority = CertificateAuthority(tmp_path, "cluster")
    server_files = authority.issue("node-1")
    node_2_files = authority.issue("node-2")
    outsider_files = authority.issue("outsider")

    async def scenario() -> None:
        servers = factory_class(peer_settings(server_files, allowed_common_names=()))
        node_2 = factory_class(peer_settings(node_2_files, allowed_common_names=()))
        outsiders = factory_class(peer_settings(outsider_files, allowed_common_names=()))
        try:
            server_handler = RecordingHandler()
            server = await servers.started(server_handler)
            impostor_handler, outsider_handler = RecordingHandler(), RecordingHandler()
            impostor = await node_2.started(impostor_handler)
            outsider = await outsiders.started(outsider_handler)
            impostor.set_peer(NodeId(1), server.address)
            outsider.set_peer(NodeId(1), server.address)

            # Node 2's certificate claiming to be node 3 (the leader, say): refused.
            await wait_until(
                lambda: server.stats.streams_rejected >= 1,
                "the impostor's frames to be refused",
                retry=lambda: impostor.send([heartbeat(3, 1)]),
            )
            # A certificate that names no node: refused whatever it claims.
            rejected = server.stats.streams_rejected
            await wait_until(
                lambda: server.stats.streams_rejected > rejected,
                "the outsider to be refused",
                retry=lambda: outsider.send([heartbeat(2, 1)]),
            )
            assert server_handler.delivered == []

            # Node 2 speaking for itself gets through.
            honest = await node_2.started(RecordingHandler())
            honest.set_peer(NodeId(1), server.address)
            await wait_until(
                lambda: bool(server_handler.delivered),
                "node 2's own heartbeat",
                retry=lambda: honest.send([heartbeat(2, 1)]),
            )
            assert {message.sender for message in server_handler.delivered} == {2}

            # A member request carries who asked, as the certificate names it.
            await honest.member_request(
                server.address, MemberRequest(MemberAction.ADD_LEARNER, NodeId(2), "x:1"), 5.0
            )
            [request] = server_handler.member_requests
            assert (request.requester, request.node_id) == (2, 2)
        finally:
            await servers.close()
            await node_2.close()
            await outsiders.close()

    run(scenario())
