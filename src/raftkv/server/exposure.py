"""What a node's settings expose to the network unprotected, said before it starts.

- The peer port: anyone who reaches a plaintext peer listener can append entries to a
  follower, force elections, and add, promote or remove members. On a loopback address
  only this machine can; on any other (a wildcard included) the node refuses to start
  without peer TLS unless `allow_insecure_peers` says the network is trusted
  (`peer_refusal`).
- The client port: a listener off loopback without TLS carries every key (and every auth
  token) in clear text, and without client certificates (`client_ca_file`), while auth is
  disabled, anyone who reaches it may read and write every key, take a backup, compact
  history and change the membership. The node starts, but says so (`client_warnings`): a
  WARNING line at start, and `/v1/status` and `raftkv status` list them (the second only
  while auth is disabled: enabling it ends the warning); `allow_insecure_clients` turns
  the line into INFO (the choice is in the config), the status still lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.server.browser_policy import is_loopback_host
from raftkv.server.setting_values import split_address
from raftkv.server.settings import ServerSettings

__all__ = ["ClientWarning", "client_warnings", "peer_refusal"]


@dataclass(frozen=True, slots=True)
class ClientWarning:
    """One thing a client port exposes; `while_auth_disabled`: only while auth is off
    (users and permissions close that door)."""

    text: str
    while_auth_disabled: bool = False


def peer_refusal(settings: ServerSettings) -> str | None:
    """Why the node must not start (its peer port open and unauthenticated), or None."""
    host, _ = split_address(settings.listen_peer)
    if is_loopback_host(host) or settings.peer_ca_file is not None or settings.allow_insecure_peers:
        return None
    return (
        f"setting listen_peer: {settings.listen_peer} is reachable from the network and peers "
        "are not authenticated: anyone who reaches it could append entries, force elections "
        "or change the membership. Give peer_ca_file, peer_cert_file and peer_key_file "
        "(raftkv certs create makes them), or set allow_insecure_peers on a network you trust"
    )


def client_warnings(settings: ServerSettings) -> list[ClientWarning]:
    """What the client ports (HTTP, etcd's gRPC) expose off loopback, one line each."""
    warnings = []
    for name in ("listen_client", "listen_client_grpc"):
        address = getattr(settings, name)
        if not address or is_loopback_host(split_address(address)[0]):
            continue
        if settings.cert_file is None:
            warnings.append(
                ClientWarning(
                    f"{name} {address} is reachable from the network without TLS: keys, "
                    "values, requests and auth tokens travel in clear text (give cert_file "
                    "and key_file)"
                )
            )
        if settings.client_ca_file is None:
            warnings.append(
                ClientWarning(
                    f"{name} {address} is reachable from the network without client "
                    "certificates and with auth disabled: anyone who reaches it can read and "
                    "write every key, take backups and change the membership (enable auth: "
                    "raftkv auth enable; or give client_ca_file)",
                    while_auth_disabled=True,
                )
            )
    return warnings
