"""Who a peer is, by its TLS certificate: with mutual TLS, a connection is bound to the node
its certificate names, and nothing on it may speak for another node.

Without binding, any certificate the CA signed would be accepted for any node id: a
certificate made for a client, a tool, or node 3 could send frames claiming to be the
leader, node 1. So, on a peer connection with mutual TLS:

- a certificate whose common name is `node-<id>` (what `raftkv certs` issues) binds the
  connection to node `id`: a frame's `from_node`, a snapshot's sender, must be that id, and
  a member request carries it as its `requester` (the node decides what a requester that
  is not a member may ask: only to join as itself; raftkv.raft.driver.membership);
- a certificate whose common name is in `allowed_common_names` (etcd's
  `--peer-cert-allowed-cn`: one shared peer certificate for every node) is accepted for any
  node id, unbound: the operator chose that;
- any other certificate is refused, the connection ended with a reason.

Without TLS nothing is known of the peer and nothing is bound (plaintext peer traffic is
for a trusted network only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from raftkv.raft.core.types import NodeId

__all__ = ["NODE_COMMON_NAME_PREFIX", "PeerIdentity", "UnknownPeer", "node_common_name"]

NODE_COMMON_NAME_PREFIX: Final = "node-"
# node-<id>, id in 1..2**64-1 written without leading zeros.
_NODE_NAME = re.compile(r"node-([1-9][0-9]{0,19})")
_MAX_NODE_ID = (1 << 64) - 1


def node_common_name(node: int) -> str:
    """The common name of node `node`'s peer certificate."""
    return f"{NODE_COMMON_NAME_PREFIX}{node}"


class UnknownPeer(Exception):
    """A peer certificate names no node and is not allowed unbound; the message says so."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What one connection's certificate allows: `node`, the node it is bound to (None:
    unbound, any sender accepted). Check every claim with `check_sender`."""

    node: NodeId | None

    @staticmethod
    def unbound() -> PeerIdentity:
        return PeerIdentity(None)

    @staticmethod
    def of_common_names(
        common_names: Iterable[str], allowed_common_names: Iterable[str]
    ) -> PeerIdentity:
        """The identity a verified certificate with `common_names` gives (usually one),
        given the names allowed unbound; UnknownPeer if it gives none."""
        names = list(common_names)
        allowed = set(allowed_common_names)
        if any(name in allowed for name in names):
            return PeerIdentity.unbound()
        for name in names:
            match = _NODE_NAME.fullmatch(name)
            if match is not None and int(match.group(1)) <= _MAX_NODE_ID:
                return PeerIdentity(NodeId(int(match.group(1))))
        shown = ", ".join(repr(name[:64]) for name in names) or "none"
        raise UnknownPeer(
            f"its certificate's common name ({shown}) names no node (node-<id>, as raftkv "
            "certs issues) and is not in peer_cert_allowed_cn"
        )

    @staticmethod
    def of_certificate(
        certificate: dict[str, Any] | None, allowed_common_names: Iterable[str]
    ) -> PeerIdentity:
        """From `ssl.SSLSocket.getpeercert()`'s dictionary (None: no TLS, unbound)."""
        if certificate is None:
            return PeerIdentity.unbound()
        names = [
            str(value)
            for relative_name in certificate.get("subject", ())
            for key, value in relative_name
            if key == "commonName"
        ]
        return PeerIdentity.of_common_names(names, allowed_common_names)

    @staticmethod
    def of_grpc_auth(
        auth_context: Mapping[str, Iterable[bytes]], allowed_common_names: Iterable[str]
    ) -> PeerIdentity:
        """From a gRPC call's `auth_context()` (no TLS: unbound)."""
        if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
            return PeerIdentity.unbound()
        names = [name.decode(errors="replace") for name in auth_context.get("x509_common_name", [])]
        return PeerIdentity.of_common_names(names, allowed_common_names)

    def check_sender(self, sender: int, what: str) -> None:
        """UnknownPeer unless this connection may speak for node `sender` (`what`: the
        claim, for the message)."""
        if self.node is not None and sender != self.node:
            raise UnknownPeer(
                f"{what} claims node {sender}, but its certificate names node {self.node}"
            )
