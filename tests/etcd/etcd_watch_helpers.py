"""Harness for the etcd Watch tests: `WatchClient`, one Watch stream of `etcd_cluster`'s
driven under simulated time."""

from __future__ import annotations

from typing import Any

import grpc.aio
from etcd_helpers import EtcdApi

from raftkv.etcd.proto import rpc_pb2


class WatchClient:
    """One Watch stream to `node`: `send` requests, `receive` responses (each completed
    under simulated time)."""

    def __init__(self, api: EtcdApi, node: int, metadata: Any = None) -> None:
        self.api = api
        self.node = node
        self.call = api.stubs(node).Watch.Watch(metadata=metadata)

    async def send(self, request: rpc_pb2.WatchRequest) -> None:
        await self.api.cluster.complete(self.call.write(request))

    async def create(self, **fields: Any) -> None:
        await self.send(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(**fields)))

    async def cancel(self, watch_id: int) -> None:
        await self.send(
            rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id))
        )

    async def request_progress(self) -> None:
        await self.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    async def receive(self, max_seconds: float = 30.0) -> rpc_pb2.WatchResponse:
        response = await self.api.cluster.complete(self.call.read(), max_seconds=max_seconds)
        assert response is not grpc.aio.EOF, "the stream ended"
        assert isinstance(response, rpc_pb2.WatchResponse)
        return response

    async def events(self, count: int) -> list[Any]:
        """The next `count` events, over as many responses as they come in."""
        events: list[Any] = []
        while len(events) < count:
            response = await self.receive()
            assert not response.canceled, response
            events += response.events
        assert len(events) == count
        return events
