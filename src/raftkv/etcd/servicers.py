"""`EtcdServicers`: one instance of each etcd service for a node, shared by the doors that
serve them (the gRPC port and the JSON gateway), so both answer from the same objects."""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.etcd.auth_servicer import AuthServicer
from raftkv.etcd.cluster_servicer import ClusterServicer
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.kv_servicer import KvServicer
from raftkv.etcd.lease_servicer import LeaseServicer
from raftkv.etcd.maintenance_servicer import MaintenanceServicer
from raftkv.etcd.settings import EtcdSettings
from raftkv.etcd.watch_servicer import WatchServicer


@dataclass(frozen=True, slots=True)
class EtcdServicers:
    context: EtcdContext
    settings: EtcdSettings
    kv: KvServicer
    watch: WatchServicer
    lease: LeaseServicer
    cluster: ClusterServicer
    maintenance: MaintenanceServicer
    auth: AuthServicer

    @classmethod
    def of(cls, context: EtcdContext, settings: EtcdSettings | None = None) -> EtcdServicers:
        settings = settings if settings is not None else EtcdSettings()
        return cls(
            context=context,
            settings=settings,
            kv=KvServicer(context),
            watch=WatchServicer(context, settings.watch, fragment_bytes=settings.max_message_bytes),
            lease=LeaseServicer(context),
            cluster=ClusterServicer(context),
            maintenance=MaintenanceServicer(context),
            auth=AuthServicer(context),
        )
