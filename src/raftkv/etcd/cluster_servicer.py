"""etcd's Cluster service (to be written)."""

from __future__ import annotations

from raftkv.etcd.context import EtcdContext
from raftkv.etcd.proto import rpc_pb2_grpc


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, context: EtcdContext) -> None:
        self.context = context
