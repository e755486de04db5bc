"""`EtcdSettings`: the limits of a node's etcd API — one place for what the gRPC port, the
JSON gateway and the servicers they share take from the server's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from raftkv.etcd.watch_stream import WatchStreamSettings
from raftkv.raft.core.errors import ConfigInvalid

# What gRPC's framing may add to a request beyond its message (etcd allows the same).
GRPC_OVERHEAD_BYTES: Final = 512 * 1024
# Beyond a few, more accept pipelines add nothing on 2 cores (benchmarks/etcdctl_perf.py:
# 4 and 16 measured the same); each holds a pending accept per method and its buffers.
MAX_ACCEPT_PIPELINES: Final = 64


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    # The largest request accepted (etcd's --max-request-bytes, 1.5 MiB by default). The
    # KV limits (max_key_bytes, max_value_bytes) still apply inside it.
    max_request_bytes: int = 1536 * 1024
    # Calls (unary or streams: watches, keep-alives) open at once on one connection.
    max_streams_per_connection: int = 1000
    # Calls open at once on the whole port, all connections together; one more is refused
    # at once with RESOURCE_EXHAUSTED (each open call holds a task and its buffers).
    max_concurrent_calls: int = 10_000
    # gRPC servers listening on the port together (SO_REUSEPORT), each accepting calls on
    # its share of the connections (raftkv.etcd.server: one server accepts one call per
    # method at a time, a few event-loop turns each). 1: one server, no SO_REUSEPORT.
    accept_pipelines: int = 4
    # How long a stopping server lets calls under way finish.
    shutdown_grace_s: float = 5.0
    # Watch streams: watches per stream, send timeout, progress_notify interval, no-leader
    # timeout (raftkv.etcd.watch_stream).
    watch: WatchStreamSettings = field(default_factory=WatchStreamSettings)

    def __post_init__(self) -> None:
        for name in (
            "max_request_bytes",
            "max_streams_per_connection",
            "max_concurrent_calls",
            "accept_pipelines",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigInvalid(f"EtcdSettings.{name} must be a positive integer")
        if self.accept_pipelines > MAX_ACCEPT_PIPELINES:
            raise ConfigInvalid(
                f"EtcdSettings.accept_pipelines must be at most {MAX_ACCEPT_PIPELINES}"
            )
        if self.accept_pipelines > self.max_concurrent_calls:
            raise ConfigInvalid(
                "EtcdSettings.accept_pipelines must not exceed max_concurrent_calls "
                "(each pipeline takes its share of the calls)"
            )
        if self.shutdown_grace_s < 0:
            raise ConfigInvalid("EtcdSettings.shutdown_grace_s must be >= 0")

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message received, and where a `fragment` watch splits its
        responses: the request limit with gRPC's framing allowance, as etcd sets both."""
        return self.max_request_bytes + GRPC_OVERHEAD_BYTES
