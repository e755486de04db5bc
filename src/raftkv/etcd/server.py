"""`EtcdGrpcPort`: etcd's v3 gRPC API on a port of its own (`listen_client_grpc`), so that
etcdctl and etcd's client libraries work against raftkv unchanged.

The servicers (`EtcdServicers`, shared with the JSON gateway on the HTTP port) translate;
they hold no state of the store's: every call goes to the node's `KvService` (through
`EtcdContext`), the same one the HTTP API calls. One port serves the KV, Watch, Lease,
Cluster, Maintenance and Auth services, each call as the caller its credentials name
(`raftkv.etcd.credentials`). The port does not own the servicers: whoever made them
closes their context after closing the port.

Limits, as etcd's own server sets them: a request over `max_request_bytes` (etcd's 1.5 MiB
default, plus gRPC's framing allowance) is refused by gRPC before it is decoded; at most
`max_streams_per_connection` calls are open on one connection at once, and
`max_concurrent_calls` on the whole port (one more: RESOURCE_EXHAUSTED at once); a client
may ping no more often than every 5 s (a flood of pings closes its connection).

Accept pipelines. A grpc.aio server takes new calls from gRPC's core one per method at a
time, and each accept costs a few turns of the event loop (gRPC's poller thread, then the
server's task, then the next request for a call). A busy loop turns a few hundred times
a second, so one server caps a port at a few hundred new calls a second however many
clients wait: under `etcdctl check perf --load m` the calls spent ~15 ms in raftkv and
~0.5 s waiting to be accepted. So the port runs `accept_pipelines` servers listening on
the same address with SO_REUSEPORT: the kernel spreads the connections over them, and
each accepts on its own. One connection's calls all go to one pipeline. Each pipeline
takes an equal share of `max_concurrent_calls`.

Invariant: no other socket listens on the port when the pipelines bind to it. SO_REUSEPORT
would let a second process of the same user (a raftkv started twice) share the port
silently, so a probe socket without SO_REUSEPORT binds the address first and fails on
any listener already there (`raftkv.raft.listening.probe_listen`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import grpc
import grpc.aio

from raftkv.etcd.credentials import CallerInterceptor
from raftkv.etcd.proto import rpc_pb2_grpc
from raftkv.etcd.servicers import EtcdServicers
from raftkv.raft.listening import probe_listen

logger = logging.getLogger("raftkv.etcd")


# The client port's TLS files as PEM (certificate, key, client CA or None), asked at every
# handshake: the same tuple until the files are reloaded, then a new one.
TlsPem = Callable[[], tuple[bytes, bytes, bytes | None]]


def reloading_credentials(pem_of: TlsPem) -> grpc.ServerCredentials:
    """gRPC server credentials that serve what `pem_of()` answers now: gRPC asks the
    fetcher at every handshake, and it answers a new configuration only once the tuple
    changed (None keeps the current one). Client certificates are required when there is
    a client CA."""
    served = pem_of()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        nonlocal served
        pem = pem_of()
        if pem is served:
            return None
        served = pem
        return _configuration(pem)

    return grpc.dynamic_ssl_server_credentials(
        _configuration(served),
        # grpc's stubs say the fetcher returns a configuration; grpc takes None too ("keep
        # the current one"), as its documentation says.
        fetch,  # type: ignore[arg-type]
        require_client_authentication=served[2] is not None,
    )


def _configuration(pem: tuple[bytes, bytes, bytes | None]) -> grpc.ServerCertificateConfiguration:
    certificate, key, ca = pem
    return grpc.ssl_server_certificate_configuration([(key, certificate)], ca)


class EtcdGrpcPort:
    """Serves etcd's API at `address` (host:port) once `start()`ed; `close()` stops it."""

    def __init__(self, servicers: EtcdServicers, address: str, tls: TlsPem | None = None) -> None:
        self.servicers = servicers
        self.address = address
        # TLS: the client port's files (raftkv.server.client_tls); None: plaintext.
        self.tls = tls
        self.settings = servicers.settings
        self.port = 0
        # The accept pipelines, all listening on self.port (empty: not started or closed).
        self._servers: list[grpc.aio.Server] = []

    async def start(self) -> None:
        """Listen; OSError if the address cannot be bound (gRPC says only that it failed)."""
        pipelines = self.settings.accept_pipelines
        host, _, port = self.address.rpartition(":")
        if pipelines > 1 and port != "0":
            # gRPC binds an IPv6 wildcard for both families: so does the probe.
            probe_listen(host.strip("[]"), int(port), v6_only=False)
        # Every call of every pipeline runs as the caller its token or certificate names
        # (one interceptor for the port: each method's handler is wrapped once).
        servicers = self.servicers
        interceptor = CallerInterceptor(
            servicers.context.service.authorizer, servicers.context.stats
        )
        try:
            # The first binds the address (port 0: the kernel picks one); the rest share it.
            # Each starts once bound, so that close() releases every port bound so far.
            for pipeline in range(pipelines):
                address = self.address if pipeline == 0 else f"{host}:{self.port}"
                server = self._server_at(address, interceptor)
                self._servers.append(server)
                await server.start()
        except BaseException:
            await self.close()
            raise
        logger.info("etcd v3 API (gRPC) at %s", self.address)

    def _server_at(self, address: str, interceptor: CallerInterceptor) -> grpc.aio.Server:
        """One accept pipeline bound to `address`, not started; sets self.port."""
        settings, servicers = self.settings, self.servicers
        pipelines = settings.accept_pipelines
        server = grpc.aio.server(
            options=[
                (
                    "grpc.max_receive_message_length",
                    settings.max_message_bytes,
                ),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 1 if pipelines > 1 else 0),
            ],
            # The port's limit, split evenly (settings: pipelines <= max_concurrent_calls).
            maximum_concurrent_rpcs=settings.max_concurrent_calls // pipelines,
            interceptors=[interceptor],
        )
        # The generated registration functions are untyped (grpc_tools writes no stubs).
        registrations = (
            (rpc_pb2_grpc.add_KVServicer_to_server, servicers.kv),
            (rpc_pb2_grpc.add_WatchServicer_to_server, servicers.watch),
            (rpc_pb2_grpc.add_LeaseServicer_to_server, servicers.lease),
            (rpc_pb2_grpc.add_ClusterServicer_to_server, servicers.cluster),
            (rpc_pb2_grpc.add_MaintenanceServicer_to_server, servicers.maintenance),
            (rpc_pb2_grpc.add_AuthServicer_to_server, servicers.auth),
        )
        registrar = _HotMethodsRegistrar(server)
        for register, servicer in registrations:
            register(servicer, registrar)  # type: ignore[no-untyped-call]
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, reloading_credentials(self.tls))
        except RuntimeError as error:
            raise OSError(f"cannot listen on {address}: {error}") from error
        return server

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        grace = self.settings.shutdown_grace_s
        await asyncio.gather(*(server.stop(grace) for server in servers))


# The methods each pipeline keeps a request for a call pending for, of its own: the ones
# clients call often. Every other method is served through the generic handler's one
# request. grpc.aio's server waits on all its pending requests at once (asyncio.wait) at
# every call it accepts, so each one registered costs every accepted call: with all 45
# of etcd's methods registered that wait was ~6 % of a follower's time under
# `etcdctl check perf --load m`.
HOT_METHODS: Final = frozenset(
    {
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Lease/LeaseRevoke",
        "/etcdserverpb.Lease/LeaseKeepAlive",
    }
)


class _HotMethodsRegistrar:
    """What grpc_tools' generated `add_*Servicer_to_server` functions are given instead of
    the server: every method goes to the server's generic handlers, and only HOT_METHODS
    are also registered (the generated code registers every method)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        hot = {
            name: handler
            for name, handler in handlers.items()
            if f"/{service}/{name}" in HOT_METHODS
        }
        if hot:
            self._server.add_registered_method_handlers(service, hot)
