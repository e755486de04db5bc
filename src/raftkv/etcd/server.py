"""`EtcdGrpcPort`: etcd's v3 gRPC API on a port of its own (`listen_client_grpc`), so that
etcdctl and etcd's client libraries work against raftkv unchanged.

The servicers translate; they hold no state of the store's: every call goes to the node's
`KvService` (through `EtcdContext`), the same one the HTTP API calls. One port serves the
KV, Watch, Lease, Cluster and Maintenance services.

Limits, as etcd's own server sets them: a request over `max_request_bytes` (etcd's 1.5 MiB
default, plus gRPC's framing allowance) is refused by gRPC before it is decoded; at most
`max_streams_per_connection` calls are open on one connection at once; a client may ping
no more often than every 5 s (a flood of pings closes its connection).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

import grpc
import grpc.aio

from raftkv.etcd.cluster_servicer import ClusterServicer
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.kv_servicer import KvServicer
from raftkv.etcd.lease_servicer import LeaseServicer
from raftkv.etcd.maintenance_servicer import MaintenanceServicer
from raftkv.etcd.proto import rpc_pb2_grpc
from raftkv.etcd.watch_servicer import WatchServicer
from raftkv.etcd.watch_stream import WatchStreamSettings
from raftkv.raft.core.errors import ConfigInvalid

logger = logging.getLogger("raftkv.etcd")

# What gRPC's framing may add to a request beyond its message (etcd allows the same).
_GRPC_OVERHEAD_BYTES: Final = 512 * 1024


@dataclass(frozen=True, slots=True)
class EtcdPortSettings:
    # The largest request accepted (etcd's --max-request-bytes, 1.5 MiB by default). The
    # KV limits (max_key_bytes, max_value_bytes) still apply inside it.
    max_request_bytes: int = 1536 * 1024
    # Calls (unary or streams: watches, keep-alives) open at once on one connection.
    max_streams_per_connection: int = 1000
    # How long a stopping server lets calls under way finish.
    shutdown_grace_s: float = 5.0
    # Watch streams: watches per stream, send timeout, progress_notify interval, no-leader
    # timeout (raftkv.etcd.watch_stream).
    watch: WatchStreamSettings = field(default_factory=WatchStreamSettings)

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_streams_per_connection"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigInvalid(f"EtcdPortSettings.{name} must be a positive integer")
        if self.shutdown_grace_s < 0:
            raise ConfigInvalid("EtcdPortSettings.shutdown_grace_s must be >= 0")


class EtcdGrpcPort:
    """Serves etcd's API at `address` (host:port) once `start()`ed; `close()` stops it."""

    def __init__(
        self, context: EtcdContext, address: str, settings: EtcdPortSettings | None = None
    ) -> None:
        self.context = context
        self.address = address
        self.settings = settings if settings is not None else EtcdPortSettings()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._watch: WatchServicer | None = None

    async def start(self) -> None:
        """Listen; OSError if the address cannot be bound (gRPC says only that it failed)."""
        settings = self.settings
        server = grpc.aio.server(
            options=[
                (
                    "grpc.max_receive_message_length",
                    settings.max_request_bytes + _GRPC_OVERHEAD_BYTES,
                ),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 0),
            ]
        )
        context = self.context
        self._watch = WatchServicer(
            context,
            settings.watch,
            fragment_bytes=settings.max_request_bytes + _GRPC_OVERHEAD_BYTES,
        )
        # The generated registration functions are untyped (grpc_tools writes no stubs).
        registrations = (
            (rpc_pb2_grpc.add_KVServicer_to_server, KvServicer(context)),
            (rpc_pb2_grpc.add_WatchServicer_to_server, self._watch),
            (rpc_pb2_grpc.add_LeaseServicer_to_server, LeaseServicer(context)),
            (rpc_pb2_grpc.add_ClusterServicer_to_server, ClusterServicer(context)),
            (rpc_pb2_grpc.add_MaintenanceServicer_to_server, MaintenanceServicer(context)),
        )
        for register, servicer in registrations:
            register(servicer, server)  # type: ignore[no-untyped-call]
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {self.address}: {error}") from error
        await server.start()
        self._server = server
        logger.info("etcd v3 API (gRPC) at %s", self.address)

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.stop(self.settings.shutdown_grace_s)
        self.context.close()
