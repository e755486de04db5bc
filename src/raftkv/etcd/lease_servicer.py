"""etcd's Lease service (to be written)."""

from __future__ import annotations

from raftkv.etcd.context import EtcdContext
from raftkv.etcd.proto import rpc_pb2_grpc


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, context: EtcdContext) -> None:
        self.context = context
