"""etcd's Watch service: each call is a `WatchStream` (raftkv.etcd.watch_stream), several
watches over the node's `WatchHub`, the same watches the HTTP API serves."""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv.etcd.calls import Context
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.etcd.watch_stream import WatchStream, WatchStreamSettings

# etcd's default request limit with gRPC's overhead: where a `fragment` watch splits.
_DEFAULT_FRAGMENT_BYTES = (1536 + 512) * 1024


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    def __init__(
        self,
        context: EtcdContext,
        settings: WatchStreamSettings | None = None,
        *,
        fragment_bytes: int = _DEFAULT_FRAGMENT_BYTES,
    ) -> None:
        self.context = context
        self.settings = settings if settings is not None else WatchStreamSettings()
        # A `fragment` watch's response larger than this is split (etcd: its request limit
        # with gRPC's overhead).
        self.fragment_bytes = fragment_bytes
        # Streams open now (a gauge, for tests and metrics).
        self.streams = 0

    async def Watch(
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context: Context
    ) -> None:
        stream = WatchStream(self.context, self.settings, context, self.fragment_bytes)
        self.streams += 1
        try:
            # Requests are read with `context.read()` (see WatchStream._receive).
            await stream.serve()
        finally:
            self.streams -= 1
