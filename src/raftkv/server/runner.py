"""`run_server`: one raftkv node as a process — Raft node, KV state machine, HTTP API.

Start-up, in order:
0. check, before creating anything, that the peer TLS files can be used and that both
   ports resolve and are free (raftkv.server.preflight);
1. raise the open-files soft limit to the hard one, and refuse to start if it leaves too
   little room beyond `max_client_connections` (raftkv.server.listener); check the data
   dir's identity file (`member.json`: node id and cluster id). A data dir written by
   another node id or cluster is refused rather than silently joined with the wrong
   identity;
2. open RocksDB under `<data_dir>/db` and start the node: a new data dir founds the cluster
   given by `initial_cluster`; an existing one restarts from its own state;
3. serve the HTTP API on `listen_client` (raftkv.server.listener: connection cap,
   timeouts, bodies never inflated), and etcd's v3 gRPC API on `listen_client_grpc` when
   set (raftkv.etcd); with `cert_file`, both over TLS (raftkv.server.client_tls: reloaded
   on SIGHUP and when the files change);
4. publish this node's client URL through the log (`KvService.publish_member`), retried in
   the background until a leader accepts it, so `/v1/cluster` lists it on every member;
5. auto-compaction (`AutoCompactor`): while leader, keep `auto_compaction_retention`
   revisions of history;
6. hash checks (`CorruptChecker`): answer every check, start one once caught up and, while
   leader, every `corrupt_check_interval_s`; a CORRUPT member refuses client requests.
7. space (`SpaceMonitor`): every second, measure this node's storage and disk; over
   `quota_backend_bytes` or under `min_free_disk_bytes` free, raise its NOSPACE alarm,
   and the cluster refuses writes that add data until an operator disarms it.

A start that fails raises one typed error whose message says what and what to do:
SettingsInvalid (a setting, or a file one names), StartFailed (a port, the data dir, the
database), StateLost, StateUnusable, StorageCorrupt, JoinFailed; `raftkv serve` prints it as
one line (exit 2 for SettingsInvalid, else 1).

Shutdown (SIGTERM or SIGINT; a second signal exits at once): stop accepting connections,
let in-flight requests finish within `shutdown_timeout_s`, then stop the node (a leader
hands leadership over first), flush and close RocksDB, and return 0.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web

from raftkv.api.cluster import ClusterAnswer
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.server import EtcdGrpcPort
from raftkv.etcd.servicers import EtcdServicers
from raftkv.etcd.settings import EtcdSettings
from raftkv.etcd.watch_stream import WatchStreamSettings
from raftkv.kv import (
    CorruptChecker,
    CorruptCheckerSettings,
    KvError,
    KvService,
    KvSettings,
    KvStateMachine,
    LeaseKeeper,
    WatchSettings,
)
from raftkv.kv.auth_service import AuthService, AuthSettings
from raftkv.kv.lease_keeper import LeaseKeeperSettings
from raftkv.kv.service import ReadLimits
from raftkv.kv.space_monitor import SpaceMonitor, SpaceSettings, measure_directory
from raftkv.raft import NodeBuilder, NodeId, NodeSettings, RaftError
from raftkv.raft.clock import SystemClock
from raftkv.raft.driver.errors import NodeFailed
from raftkv.raft.driver.node import Node
from raftkv.raft.storage.rocks import StorageOpenError
from raftkv.raft.tasks import cancel_and_wait
from raftkv.raft.transport.settings import RECONNECT_BACKOFF_INITIAL_SECONDS
from raftkv.server.app import BACKUPS, METRICS, HttpSettings, create_app, create_metrics_app
from raftkv.server.backup_api import BackupHandlers
from raftkv.server.browser_guards import BrowserGuards
from raftkv.server.browser_policy import allowed_hosts
from raftkv.server.client_tls import ClientTls, tls_files_of
from raftkv.server.compactor import AutoCompactor
from raftkv.server.console import ConsoleSettings
from raftkv.server.exposure import client_warnings
from raftkv.server.fronts.gateway import FrontGateway
from raftkv.server.fronts.protocol import max_frame_bytes
from raftkv.server.fronts.supervisor import FrontedClientPort, FrontSettings, FrontsFailed
from raftkv.server.identity import (
    DATABASE_DIR,
    Identity,
    check_identity,
    mark_raft_state,
    read_identity,
    state_lost,
)
from raftkv.server.listener import ClientPort, ClientPortSettings, raise_open_files_limit
from raftkv.server.logs import NodeContext
from raftkv.server.metrics import Metrics
from raftkv.server.preflight import StartFailed, check_before_start
from raftkv.server.setting_values import split_address
from raftkv.server.settings import NO_CLUSTER_ID, ServerSettings

logger = logging.getLogger("raftkv.server")

# `raftkv serve`'s exit code after its node failed (a write failed, a corrupt record, ...).
EXIT_NODE_FAILED = 1
# Connections the metrics port (listen_metrics) serves at once: scrapers, not clients.
_METRICS_CONNECTIONS = 64
# How often publishing this node's client URL is retried while no leader accepts it.
_PUBLISH_RETRY_S = (0.2, 5.0)


class JoinFailed(Exception):
    """`raftkv serve --join` could not reach the cluster or was refused."""


async def cluster_at(
    client_urls: list[str], *, timeout: float, tls: ssl.SSLContext | None = None
) -> ClusterAnswer:
    """The cluster at any of `client_urls` (`GET /v1/cluster`), for joining it: its id and
    its members' peer addresses; `tls` for https:// URLs (join_tls_context)."""
    errors = []
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        for url in client_urls:
            try:
                async with session.get(f"{url}/v1/cluster") as response:
                    data = await response.read()
                    if response.status != 200:
                        errors.append(f"{url}: HTTP {response.status}")
                        continue
                answer = msgspec.json.decode(data, type=ClusterAnswer)
            except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as error:
                errors.append(f"{url}: {error or type(error).__name__}")
                continue
            if any(member.peer_url for member in answer.members):
                return answer
            errors.append(f"{url}: no member lists a peer address")
    raise JoinFailed("no cluster answered at " + "; ".join(errors))


def join_tls_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """How a joining node asks an https:// member for the cluster: it trusts
    `client_ca_file` (the CA of the cluster's client port) or else `peer_ca_file` (one CA
    for both, as `raftkv certs` makes), and shows its own `cert_file` when it has one (a
    port with client_ca_file asks for it). None: the system's CAs, no certificate."""
    trusted = settings.client_ca_file or settings.peer_ca_file
    if trusted is None and settings.cert_file is None:
        return None
    context = ssl.create_default_context(cafile=trusted)
    if settings.cert_file is not None and settings.key_file is not None:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


def _build(builder: NodeBuilder, settings: ServerSettings) -> Node:
    """The node `builder` makes (its database opened), or StartFailed saying what to do."""
    try:
        return builder.build()
    except StorageOpenError as error:
        if error.in_use:
            raise StartFailed(
                f"{error}: is this data dir's node ({settings.data_dir}) already running? "
                "stop it first, or give this node another data_dir"
            ) from error
        if error.damaged:
            raise StartFailed(
                f"{error} — the database is damaged: restore this member from a backup "
                "(raftkv snapshot restore into a new data dir), or remove it (raftkv member "
                f"remove {settings.id}) and join it again with a new id and an empty data dir"
            ) from error
        if error.denied:
            raise StartFailed(
                f"{error}: the data dir ({settings.data_dir}) and everything in it must be "
                "writable by the user running raftkv serve (RocksDB writes even to open): "
                "run it as the data dir's owner, or chown it to this user"
            ) from error
        raise StartFailed(str(error)) from error


def kv_settings(settings: ServerSettings) -> KvSettings:
    return KvSettings(
        max_key_bytes=settings.max_key_bytes,
        max_value_bytes=settings.max_value_bytes,
        max_txn_ops=settings.max_txn_ops,
        max_exactly_once_clients=settings.max_exactly_once_clients,
        max_leases=settings.max_leases,
        min_lease_ttl_s=settings.min_lease_ttl_s,
    )


def read_limits(settings: ServerSettings) -> ReadLimits:
    return ReadLimits(
        max_scan_entries=settings.max_scan_entries,
        max_txn_scan_entries=settings.max_txn_scan_entries,
        max_response_bytes=settings.max_response_bytes,
        read_threads=settings.read_threads,
    )


def node_settings(settings: ServerSettings) -> NodeSettings:
    return NodeSettings(
        tick_interval_s=settings.tick_interval_ms / 1000,
        election_ticks=settings.election_ticks,
        heartbeat_ticks=settings.heartbeat_ticks,
        snapshot_every_entries=settings.snapshot_every_entries,
        snapshot_keep_entries=settings.snapshot_keep_entries,
        snapshot_every_bytes=settings.snapshot_every_bytes,
        proposal_timeout_s=settings.request_timeout_s,
        batch_proposals=settings.batch_proposals,
    )


class Server:
    """A started node and its HTTP API (see the module docstring)."""

    def __init__(self, settings: ServerSettings, log_context: NodeContext | None = None) -> None:
        self.settings = settings
        self.log_context = log_context
        self.node: Node | None = None
        self.service: KvService | None = None
        self._client_port: ClientPort | FrontedClientPort | None = None
        self._metrics_port: ClientPort | None = None
        self._etcd: EtcdServicers | None = None
        self._backups: BackupHandlers | None = None
        self._etcd_port: EtcdGrpcPort | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._compactor: AutoCompactor | None = None
        self._lease_keeper: LeaseKeeper | None = None
        self._corrupt_checker: CorruptChecker | None = None
        self._space_monitor: SpaceMonitor | None = None
        # TLS on the client port (cert_file), reloadable; its file watcher.
        self.tls: ClientTls | None = None
        self._tls_watcher: asyncio.Task[None] | None = None
        # Whether the node started (a refused start must not log "node N stopped").
        self._node_started = False

    async def start(self) -> None:
        settings = self.settings
        check_before_start(settings)
        if (
            settings.join_urls
            and settings.cluster_id == NO_CLUSTER_ID
            and read_identity(settings.data_dir) is None
        ):
            settings = self.settings = await self._with_joined_cluster_id(settings)
        files = tls_files_of(settings)
        if files is not None:
            self.tls = ClientTls(files)  # the files were checked just above
        before, now = raise_open_files_limit(settings.max_client_connections)
        logger.info(
            "open files limit %d%s; at most %d client connections",
            now,
            f" (raised from {before})" if now != before else "",
            settings.max_client_connections,
        )
        try:
            identity = check_identity(settings)
        except OSError as error:
            raise StartFailed(
                f"data dir {settings.data_dir}: cannot write {error.filename or 'it'}: "
                f"{error.strerror or error}: make it writable by this user or choose another "
                "data_dir"
            ) from error
        limits = kv_settings(settings)
        peer: dict[str, object] = {
            "listen_address": settings.listen_peer,
            # The data dir's: the settings' unless none was given (see check_identity).
            "cluster_id": identity.cluster_id,
            "max_snapshot_bytes": settings.max_snapshot_bytes,
            "snapshot_cache_bytes": settings.snapshot_cache_bytes,
            "max_snapshot_chunks_in_flight": settings.max_snapshot_chunks_in_flight,
            # A peer back from a failure is redialled within an election timeout.
            "reconnect_backoff_max_seconds": max(
                settings.tick_interval_ms * settings.election_ticks / 1000,
                RECONNECT_BACKOFF_INITIAL_SECONDS,
            ),
        }
        if settings.peer_ca_file is not None:
            peer |= {
                "ca_file": settings.peer_ca_file,
                "cert_file": settings.peer_cert_file,
                "key_file": settings.peer_key_file,
                "allowed_common_names": settings.peer_cert_allowed_cn,
            }
        # One clock for the node, lease countdowns and watch progress intervals.
        clock = SystemClock()
        builder = (
            NodeBuilder(settings.id)
            .peers(settings.founders)
            .data_dir(settings.data_dir / DATABASE_DIR)
            .settings(node_settings(settings))
            .peer_transport(settings.peer_transport, **peer)
            .clock(clock)
            .state_machine(
                lambda storage: KvStateMachine(
                    storage.app_data(),
                    limits,
                    clock=clock,
                    watch_settings=WatchSettings(
                        max_watches=settings.max_watches,
                        max_buffered_bytes=settings.watch_max_buffered_bytes,
                        max_total_buffered_bytes=settings.watch_max_total_buffered_bytes,
                    ),
                )
            )
        )
        node = _build(builder, settings)
        self.node = node
        if self.log_context is not None:
            self.log_context.term = lambda: node.status().term
        data_dir = settings.data_dir
        if node.is_bootstrapped():
            mark_raft_state(data_dir, identity)
            await node.start()  # a restart: the node's own state says who the members are
            self._node_started = True
        elif identity.has_raft_state:
            node.storage.close()
            self.node = None
            raise state_lost(data_dir, settings.id, "its database is empty")
        elif settings.join:
            await node.start()
            self._node_started = True
            await self._join(node, identity)
        else:
            node.bootstrap({NodeId(peer): address for peer, address in settings.founders.items()})
            mark_raft_state(data_dir, identity)
            await node.start()
            self._node_started = True
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        self.service = KvService(node, machine, limits, read_limits=read_limits(settings))
        # etcd's API: served by the JSON gateway on the HTTP port, and on its own gRPC port
        # when listen_client_grpc is set.
        service = self.service

        async def backup(timeout: float) -> bytes:
            # The HTTP API's backups, under their limit of backups at once (the app is
            # made below; etcd's Snapshot is served only once both are up).
            assert self._backups is not None
            return await self._backups.backup_file(timeout)

        auth_settings = AuthSettings(
            token_ttl_s=settings.auth_token_ttl_s, max_failed_logins=settings.max_failed_logins
        )
        self._etcd = EtcdServicers.of(
            EtcdContext(
                service,
                identity.cluster_id,
                request_timeout_s=settings.request_timeout_s,
                backup=backup,
                auth=AuthService(service, auth_settings),
            ),
            EtcdSettings(
                max_request_bytes=settings.etcd_max_request_bytes,
                shutdown_grace_s=settings.shutdown_timeout_s,
                watch=WatchStreamSettings(
                    send_timeout_s=settings.watch_send_timeout_s,
                    no_leader_timeout_s=settings.watch_no_leader_timeout_s,
                ),
            ),
        )
        warnings = client_warnings(settings)
        for warning in warnings:
            if warning.while_auth_disabled and service.authorizer.enabled:
                continue
            # Stated once at start; /v1/status lists them for as long as they hold.
            logger.log(
                logging.INFO if settings.allow_insecure_clients else logging.WARNING,
                warning.text,
            )
        try:
            host, port = split_address(settings.listen_client)
            advertised = urlsplit(settings.advertise_client_url).hostname or ""
            browsers = BrowserGuards(
                hosts=allowed_hosts(settings.host_whitelist, host, advertised),
                origins=settings.cors,
            )
            app = create_app(
                self.service,
                HttpSettings(
                    max_body_bytes=settings.max_body_bytes,
                    body_timeout_s=settings.http_body_timeout_s,
                    request_timeout_s=settings.request_timeout_s,
                    max_concurrent_backups=settings.max_concurrent_backups,
                    watch_send_timeout_s=settings.watch_send_timeout_s,
                    watch_progress_interval_s=settings.watch_progress_interval_s,
                    watch_no_leader_timeout_s=settings.watch_no_leader_timeout_s,
                    cluster_id=identity.cluster_id,
                    security_warnings=tuple(warnings),
                    metrics_elsewhere=settings.listen_metrics,
                    browsers=browsers,
                    auth=auth_settings,
                    # The console asks the other members at their client URLs as a
                    # joining node does: trusting the cluster's CA, showing our certificate.
                    console=ConsoleSettings(member_tls=join_tls_context(settings)),
                ),
                self._etcd,
            )
            self._backups = app[BACKUPS]
            port_settings = ClientPortSettings(
                max_connections=settings.max_client_connections,
                keepalive_timeout_s=settings.http_keepalive_timeout_s,
                shutdown_timeout_s=settings.shutdown_timeout_s,
            )
            client_port: ClientPort | FrontedClientPort
            if settings.http_workers:
                client_port = self._fronted_port(app, host, port, port_settings, browsers)
            else:
                client_port = ClientPort(
                    app,
                    host,
                    port,
                    port_settings,
                    ssl_context=None if self.tls is None else self.tls.listening_context,
                )
            app[METRICS].client_port = client_port
            try:
                await client_port.start()  # closes itself if it fails
            except FrontsFailed as error:
                raise StartFailed(f"setting http_workers: {error}") from error
            except OSError as error:
                raise StartFailed(
                    f"setting listen_client: cannot listen on {settings.listen_client}: "
                    f"{error.strerror or error}"
                ) from error
            self._client_port = client_port
            if settings.listen_metrics:
                await self._serve_metrics(app[METRICS])
            if settings.listen_client_grpc:
                await self._serve_etcd_api()
        except BaseException:
            await self.stop()
            raise
        if self.tls is not None:
            self._tls_watcher = asyncio.create_task(self.tls.watch(), name="raftkv-tls-watch")
        self._publisher = asyncio.create_task(self._publish(), name="raftkv-publish-member")
        if settings.auto_compaction_retention:
            self._compactor = AutoCompactor(
                self.service,
                settings.auto_compaction_retention,
                settings.auto_compaction_interval_s,
            )
            self._compactor.start()
        self._lease_keeper = LeaseKeeper(
            self.service,
            LeaseKeeperSettings(
                interval_s=settings.lease_check_interval_s,
                checkpoint_interval_s=settings.lease_checkpoint_interval_s,
            ),
        )
        self._lease_keeper.start()
        app[METRICS].lease_keeper = self._lease_keeper
        self._corrupt_checker = CorruptChecker(
            node,
            machine,
            CorruptCheckerSettings(
                interval_s=settings.corrupt_check_interval_s,
                check_at_start=settings.corrupt_check_at_start,
            ),
        )
        self._corrupt_checker.start()
        app[METRICS].corrupt_checker = self._corrupt_checker
        storage_path = self.service.storage_path()
        if storage_path is not None:
            self._space_monitor = SpaceMonitor(
                node,
                machine,
                functools.partial(measure_directory, storage_path),
                SpaceSettings(
                    quota_bytes=settings.quota_backend_bytes,
                    min_free_bytes=settings.min_free_disk_bytes,
                ),
            )
            self._space_monitor.start()
            app[METRICS].space_monitor = self._space_monitor
        logger.info(
            "node %d serving clients at %s, peers at %s, data in %s",
            settings.id,
            settings.client_url,
            settings.listen_peer,
            settings.data_dir,
        )

    def _fronted_port(
        self,
        app: web.Application,
        host: str,
        port: int,
        port_settings: ClientPortSettings,
        browsers: BrowserGuards,
    ) -> FrontedClientPort:
        """The client port served by `http_workers` front processes (raftkv.server.fronts)."""
        settings, service = self.settings, self.service
        assert service is not None  # made before the client port
        gateway = FrontGateway(
            service,
            app[METRICS],
            request_timeout_s=settings.request_timeout_s,
            max_frame_bytes=max_frame_bytes(settings.max_body_bytes),
            max_calls_in_flight=settings.max_client_connections,
        )
        fronts = FrontSettings(
            count=settings.http_workers,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.http_body_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            hosts=browsers.hosts,
            origins=browsers.origins,
        )
        return FrontedClientPort(
            app,
            gateway,
            host,
            port,
            settings=port_settings,
            fronts=fronts,
            data_dir=settings.data_dir,
        )

    async def _with_joined_cluster_id(self, settings: ServerSettings) -> ServerSettings:
        """`settings` with the id of the cluster at `join` (asked of it): a new data dir
        joining a cluster takes its id, which its founders derived."""
        cluster = await cluster_at(settings.join_urls, timeout=10.0, tls=join_tls_context(settings))
        if cluster.cluster_id == NO_CLUSTER_ID:
            raise JoinFailed(
                f"the cluster at {settings.join} does not say its id (an older raftkv): "
                "give it with --cluster-id (raftkv status on a member shows it)"
            )
        logger.info("joining cluster %d", cluster.cluster_id)
        return replace(settings, cluster_id=cluster.cluster_id)

    async def _serve_metrics(self, metrics: Metrics) -> None:
        """GET /metrics on listen_metrics, a port of its own (etcd's --listen-metrics-urls):
        plain HTTP, the client port's limits, few connections (scrapers)."""
        settings = self.settings
        host, port = split_address(settings.listen_metrics)
        metrics_port = ClientPort(
            create_metrics_app(metrics),
            host,
            port,
            ClientPortSettings(
                max_connections=_METRICS_CONNECTIONS,
                keepalive_timeout_s=settings.http_keepalive_timeout_s,
                shutdown_timeout_s=settings.shutdown_timeout_s,
            ),
        )
        try:
            await metrics_port.start()
        except OSError as error:
            raise StartFailed(
                f"setting listen_metrics: cannot listen on {settings.listen_metrics}: "
                f"{error.strerror or error}"
            ) from error
        self._metrics_port = metrics_port
        logger.info("metrics at http://%s/metrics", settings.listen_metrics)

    def reload_tls(self) -> None:
        """SIGHUP: reload the client port's TLS files (without TLS: say so)."""
        if self.tls is None:
            logger.info("SIGHUP: no TLS on the client port (cert_file): nothing to reload")
            return
        self.tls.reload()

    async def _serve_etcd_api(self) -> None:
        """etcd's v3 gRPC API on listen_client_grpc (raftkv.etcd)."""
        assert self._etcd is not None
        settings = self.settings
        tls = None if self.tls is None else self.tls.pem
        etcd_port = EtcdGrpcPort(self._etcd, settings.listen_client_grpc, tls)
        try:
            await etcd_port.start()
        except OSError as error:
            raise StartFailed(
                f"setting listen_client_grpc: cannot listen on {settings.listen_client_grpc}: "
                f"{error.strerror or error}"
            ) from error
        self._etcd_port = etcd_port

    async def _join(self, node: Node, identity: Identity) -> None:
        """Ask the cluster at `join` (client URLs) for its members' peer addresses, then
        join through them: added as a learner, and with auto_promote made a voter once
        caught up. Safe to repeat: a node already added is not added twice.

        The identity file records that this node holds Raft state once it is a learner,
        before it asks to be promoted: a voter must never be able to come back without
        its state under the same id (`raftkv.server.identity`)."""
        settings = self.settings
        cluster = await cluster_at(settings.join_urls, timeout=10.0, tls=join_tls_context(settings))
        seeds = [member.peer_url for member in cluster.members if member.peer_url]
        logger.info("joining the cluster through %s", ", ".join(seeds))
        deadline = asyncio.get_running_loop().time() + settings.join_timeout_s
        try:
            await node.join(seeds, promote=False, timeout=settings.join_timeout_s)
            mark_raft_state(settings.data_dir, identity)
            if settings.auto_promote:
                remaining = max(deadline - asyncio.get_running_loop().time(), 0.0)
                await node.join(seeds, promote=True, timeout=remaining)
        except (RaftError, TimeoutError) as error:
            raise JoinFailed(f"joining through {settings.join}: {error}") from error
        logger.info("joined as a %s", "voter" if settings.auto_promote else "learner (promote it)")

    async def _publish(self) -> None:
        """Publish this node's client URL until the committed state shows it."""
        assert self.service is not None
        service, url, etcd_url = self.service, self.settings.client_url, self.settings.etcd_url
        delay, cap = _PUBLISH_RETRY_S

        def published() -> bool:
            me = self.settings.id
            return (
                service.member_client_urls().get(me) == url
                and service.member_etcd_urls().get(me, "") == etcd_url
            )

        while not published():
            try:
                await service.publish_member(self.settings.id, url, etcd_url=etcd_url, timeout=5.0)
            except (RaftError, KvError, TimeoutError) as error:
                logger.debug("publishing the client URL failed (%s); retrying", error)
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(cap, delay * 2)
        logger.info("published client URL %s", url)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (bounded), stop the node."""
        if self._compactor is not None:
            await self._compactor.stop()
        if self._lease_keeper is not None:
            await self._lease_keeper.stop()
        if self._corrupt_checker is not None:
            await self._corrupt_checker.stop()
        if self._space_monitor is not None:
            await self._space_monitor.stop()
        await cancel_and_wait(self._tls_watcher)
        if self.service is not None:
            # Ends every watch stream ("stopping"), so the handlers below can finish.
            self.service.watch_hub.close()
        await cancel_and_wait(self._publisher)
        if self._etcd_port is not None:
            await self._etcd_port.close()
            self._etcd_port = None
        if self._etcd is not None:
            self._etcd.context.close()
            self._etcd = None
        if self._client_port is not None:
            # Closes the listening socket, then waits up to shutdown_timeout for handlers.
            await self._client_port.close()
            self._client_port = None
        if self._metrics_port is not None:
            await self._metrics_port.close()
            self._metrics_port = None
        if self.service is not None:
            self.service.close()
        if self.node is not None:
            await self.node.stop()
            self.node = None
            if self._node_started:
                logger.info("node %d stopped", self.settings.id)


async def run_server(
    settings: ServerSettings,
    *,
    on_started: Callable[[Server], None] | None = None,
    stop_on_stdin_eof: bool = False,
    log_context: NodeContext | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or, with `stop_on_stdin_eof`, until stdin closes: how a
    supervisor's death reaches its children); return the exit code."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = 0

    def on_signal(number: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            # The operator insists: leave now. RocksDB's WAL keeps what was acknowledged.
            logger.warning("second signal %d: exiting at once", number)
            os._exit(1)
        logger.info("signal %d: shutting down", number)
        stop_requested.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal, number)
    server = Server(settings, log_context)
    # SIGHUP: read the client port's TLS files again (renewed certificates).
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    watcher = asyncio.create_task(_watch_stdin(stop_requested)) if stop_on_stdin_eof else None
    exit_code = 0
    try:
        await server.start()
        if on_started is not None:
            on_started(server)
        assert server.node is not None
        failure = await _first_of(stop_requested.wait(), _node_failure(server.node))
        if failure is not None:
            # A zombie would keep answering with stale state: stop serving and exit
            # non-zero so a supervisor restarts the process (a restart recovers from what
            # is durable; the node flushed what it could when it stopped).
            logger.error(
                "node %d failed and stopped: %s; exiting with code %d",
                settings.id,
                failure,
                EXIT_NODE_FAILED,
            )
            exit_code = EXIT_NODE_FAILED
    finally:
        if watcher is not None:
            watcher.cancel()
        await server.stop()
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(number)
    return exit_code


async def _node_failure(node: Node) -> BaseException:
    """The error the node failed with, once it stops by itself (nothing else stops it
    while the server runs)."""
    try:
        await node.wait_stopped()
    except NodeFailed as error:
        return error.__cause__ or error
    return NodeFailed(f"node {node.id} stopped by itself")


async def _first_of(
    stop_requested: Awaitable[object], failure: Awaitable[BaseException]
) -> BaseException | None:
    """None when a stop is requested first, else the node's failure."""
    stopping = asyncio.ensure_future(stop_requested)
    failing = asyncio.ensure_future(failure)
    try:
        done, _ = await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        return None if stopping in done else failing.result()
    finally:
        stopping.cancel()
        failing.cancel()


async def _watch_stdin(stop_requested: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    logger.info("stdin closed (the supervisor is gone): shutting down")
    stop_requested.set()


def started_line(settings: ServerSettings) -> str:
    """One JSON line a supervisor (raftkv dev, tests) can wait for on stdout."""
    return json.dumps(
        {
            "started": settings.id,
            "client_url": settings.client_url,
            "peer": settings.listen_peer,
            "client_grpc": settings.listen_client_grpc,
            "data_dir": str(Path(settings.data_dir)),
        }
    )
