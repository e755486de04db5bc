"""Whether a listener could bind an address now: `probe_listen`, shared by the server's
start-up checks (raftkv.server.preflight) and the etcd port's accept pipelines
(raftkv.etcd.server), which must not share a port another socket listens on."""

from __future__ import annotations

import socket

__all__ = ["probe_listen"]


def probe_listen(host: str, port: int, *, v6_only: bool) -> None:
    """Bind a probe socket to every address `host` (empty: any) resolves to with `port`,
    as a listener binds: with SO_REUSEADDR (a port left in TIME_WAIT by closed connections
    is free) and without SO_REUSEPORT (a port another socket listens on is not, whatever
    that socket's own options). `v6_only`: IPv6 probes bind IPv6 only, as asyncio's
    listeners do (gRPC's bind both families). Raises socket.gaierror if `host` does not
    resolve, and the bind's OSError (EADDRINUSE: another socket listens there) for the
    first address that cannot be bound."""
    for family, kind, protocol, _, address in socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if v6_only and family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
