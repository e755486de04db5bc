"""Prometheus metrics of one raftkv node and its HTTP API (issue 5, "Observability").

`Metrics(node, machine)` owns a `CollectorRegistry` of its own (never prometheus_client's
global one: one process may run many nodes, as the tests do) and gives the server two
things to wire in:

    metrics = Metrics(node, machine)
    app = create_app(service, settings)
    app.middlewares.insert(0, metrics.middleware)  # before the app starts; see below
    app.router.add_get("/metrics", metrics.handler)

`metrics.middleware` must be the OUTERMOST middleware (first in the list; aiohttp runs the
list's first middleware first), so that it times and counts the answer the client gets,
including the ones another middleware makes from an exception (the error middleware's 404,
413, 503 ...). A `web.HTTPException` that reaches it counts with its own status; any other
exception counts as 500. A request cancelled because its client went away is not counted.

Raft, MVCC and transport metrics are read when scraped (a custom collector over
`node.status()`, `node.stats`, the transport's stats and the state machine), so nothing is
kept up to date on the hot path except what the driver already counts. The scrape runs on
the event loop, which is also the only place those are written.

Metrics, all prefixed `raftkv_` (counters end in `_total`):

Raft state (gauges; absent before the node has started; after it stopped, its last state)
- `raftkv_term`: the current term.
- `raftkv_role{role}`: 1 for this node's role, 0 for the others; role is one of
  `follower`, `pre_candidate`, `candidate`, `leader`.
- `raftkv_leader_id`: the leader this node knows, 0 if none.
- `raftkv_commit_index`, `raftkv_applied_index`: the log's commit index; the index the state
  machine has applied.
- `raftkv_log_first_index`, `raftkv_log_last_index`, `raftkv_snapshot_index`: the log held
  in storage (first index after the snapshot, last index) and the latest snapshot's index.
- `raftkv_voters`, `raftkv_learners`: members of each kind in the current configuration.
- `raftkv_batching`: 1 while this node writes batch entries (`batch_proposals` on, and every
  member has declared it reads them: docs/operations.md#upgrades).
- `raftkv_peer_match_index{peer}`: on the leader only, the highest index known replicated
  on each member (itself included); the leader's last index minus it is the member's lag.
- `raftkv_proposals_pending`, `raftkv_reads_pending`: requests on this node waiting for
  their outcome (bounded by NodeSettings.max_pending_requests each).

Raft counters and histograms (since the node started)
- `raftkv_leader_changes_total`: times the leader this node knows changed (to none too).
- `raftkv_proposals_committed_total`: proposals made on this node that committed and were
  applied here, whatever the state machine answered (a failed compare is committed too).
- `raftkv_proposals_failed_total`: proposals made on this node that will never apply or
  whose outcome is unknown: refused (no leader, leadership moving), overwritten by a new
  leader, timed out, covered by a snapshot, node stopping or removed. Overloaded refusals
  never became proposals: see `raftkv_limit_hits_total`.
- `raftkv_proposals_batched_total`: proposals that went into the log entry of the one
  before them (`batch_proposals`): the entries batching saved.
- `raftkv_fsyncs_total`, `raftkv_entries_persisted_total`: durable writes (one per Ready
  that must be durable) and log entries written.
- `raftkv_commands_applied_total`: commands applied to the state machine.
- `raftkv_messages_rejected_total`: peer messages dropped as malformed, misaddressed, or
  from an unknown or removed id.
- `raftkv_append_duration_seconds` (histogram): from submitting a Ready's write to the
  node's loop finding it durable: the write plus any wait for the writer thread (behind a
  snapshot write) and for the loop.
- `raftkv_fsync_duration_seconds` (histogram): the storage write of a Ready that must be
  durable (write + fsync) on the writer thread, waits excluded: the disk's own latency.
- `raftkv_entries_per_fsync` (histogram): log entries per durable write (group commit: the
  more, the more proposals share an fsync; 0 for a hard state alone, such as a vote).
- `raftkv_apply_duration_seconds` (histogram): one state machine `apply` call (the
  committed commands of one Ready, applied together).
- `raftkv_snapshots_total{operation}`: snapshots `create`d of our own state (then the log
  is compacted) and `install`ed from the leader.
- `raftkv_snapshot_duration_seconds{operation}` (histogram): for `create`, from encoding
  the state machine to the snapshot being durable; for `install`, restoring the leader's.
- `raftkv_snapshot_last_size_bytes`: the data size of the latest snapshot created or
  installed (0 before the first).

Limits (STYLE: every limit is visible in metrics)
- `raftkv_limit_hits_total{limit}`: requests or messages refused at a limit, by the
  setting that refused them:
  - `max_pending_requests` (NodeSettings): proposals and reads answered Overloaded (503);
  - `max_inbox_messages` (NodeSettings): peer messages dropped, the inbox being full;
  - `max_body_bytes` (HttpSettings): HTTP 413 `body_too_large`;
  - `kv_request_limits` (KvSettings' key, value and txn limits): HTTP 413 `limit_exceeded`;
  - `max_command_bytes` (NodeSettings): HTTP 413 `command_too_large`;
  - `watch_max_total_buffered_bytes`: watches ended `too_slow` to keep the bytes the
    node's watches hold under it (also in `raftkv_watch_canceled_total`).
  - `max_scan_entries` (ReadLimits: `max_scan_entries` for reads, `max_txn_scan_entries`
    for the ranges of a txn that writes): HTTP 413 `scan_too_large`;
  - `max_client_connections` (ServerSettings): client connections closed as soon as
    accepted, that many being open already.
  A 413 is attributed by the error code of its JSON body; aiohttp's own 413 (a body over
  client_max_size, no JSON body) counts as `max_body_bytes`, a 413 with another code not
  at all (it still counts in the HTTP histogram).

MVCC (gauges)
- `raftkv_mvcc_revision`: the store's current revision.
- `raftkv_mvcc_compacted_revision`: the revision history is compacted to (0 if never).
- `raftkv_mvcc_keys`: live keys; absent until the store has counted them after it started
  (raftkv.kv.key_count: until then a range's `count` scans the rest of its range).

Leases and watches
- `raftkv_leases`: live leases; `raftkv_lease_expired_total`: leases this node expired
  while leading; `raftkv_lease_expiry_delay_seconds{quantile}`: how long after its deadline
  each of the recent (up to 1000) expiries applied (quantiles 0.5, 0.99 and 1.0 = the maximum).
- `raftkv_watches`: watch streams open on this node;
  `raftkv_watch_events_sent_total`, `raftkv_watch_messages_sent_total`;
  `raftkv_watch_canceled_total{reason}`: watches the server ended (`compacted`,
  `too_slow`, `no_leader`, `stopping`, `removed`, `not_utf8`).
- `raftkv_watch_buffered_bytes`: bytes of events the node's watches hold until their
  clients take them (at most `watch_max_total_buffered_bytes`; the watches ended
  `too_slow` to stay under it count in `raftkv_limit_hits_total`).

Hash checks (`raftkv.kv.hash_checks`: members compare hashes of their state)
- `raftkv_corrupt_alarm{member}`: 1 for each member a CORRUPT alarm names (its state
  differs from the majority's); no sample when there is none. The same on every member
  (the alarms are replicated); alert on any sample.
- `raftkv_hash_check_index`: the log index of the last hash check (0: none yet).
- `raftkv_hash_checks_total`: hashes of its own state this node computed and reported.
- `raftkv_hash_checks_started_total`: checks this node proposed (start-up and periodic).
- `raftkv_hash_check_mismatches_total`: CORRUPT alarms raised by the reports this node
  applied since it started.
- `raftkv_hash_check_duration_seconds`: how long this node's last hash took (on a worker
  thread; 0 before the first).

Space (`raftkv.kv.space_alarms`: a member out of space makes the cluster read-only)
- `raftkv_nospace_alarm{member,reason}`: 1 for each member a NOSPACE alarm names
  (`quota` or `disk_free`); no sample when there is none. The same on every member; while
  there is one, writes that add data are refused (507 no_space). Alert on any sample.
- `raftkv_storage_bytes`, `raftkv_disk_free_bytes`: this node's storage and its disk's
  free space, as last measured (every second); `raftkv_storage_quota_bytes`: its quota.
  Alert well before storage reaches the quota.

Transport (when the node's transport is a TcpTransport or GrpcTransport; absent otherwise)
- `raftkv_peer_send_queue_messages{peer}`: messages queued to each peer (at most
  PeerTransportSettings.max_queue_messages; one staying long means a slow or dead peer).
- `raftkv_transport_send_failures_total`: streams to peers that failed (write error or
  timeout, connect timeout, peer ended it); what was queued is dropped, then a backoff.
- `raftkv_transport_messages_sent_total`, `raftkv_transport_messages_received_total`,
  `raftkv_transport_frames_sent_total`, `raftkv_transport_frames_received_total`.
- `raftkv_transport_messages_dropped_total`: dropped before the wire (queue full, unknown
  peer, queued when a stream failed). Raft retransmits what matters.
- `raftkv_transport_streams_rejected_total`: incoming streams aborted for what the peer
  sent.
- `raftkv_transport_snapshots_total{outcome}`: snapshot transfers `sent`, `failed` (to send),
  `received`, and `refused` (received whole but unusable: data this node could not
  install; the transfer failed and nothing of it was stored).
- Sending snapshots: `raftkv_snapshot_full_bytes_total` (the data size of every snapshot
  offered: what sending it whole would cost), `raftkv_snapshot_bytes_sent_total` (chunk
  bytes actually sent, compressed), `raftkv_snapshot_delta_bytes_saved_total` (data the
  receivers already held, so not sent), `raftkv_snapshot_chunks_sent_total`,
  `raftkv_snapshot_chunks_reused_total`.
- Receiving snapshots: `raftkv_snapshot_bytes_received_total` (compressed),
  `raftkv_snapshot_incoming_chunks_total{source}`: chunks of incoming snapshots that came
  over the `wire`, from the `cache` of earlier transfers, or from this node's own state
  (`local`); `raftkv_snapshot_cache_bytes`: chunks kept for resuming transfers.

The event loop (it runs Raft, the API and everything else: a stall past the election
timeout costs an election)
- `raftkv_event_loop_lag_seconds` (histogram): how late a task that sleeps
  `LOOP_LAG_INTERVAL_S` at a time wakes up, each time: the longest any callback waited.
- `raftkv_gc_pause_seconds{generation}` (histogram): how long each collection of the
  cyclic garbage collector stopped the process (raftkv.server.collector tunes it).

HTTP
- `raftkv_http_connections`: client connections open now (at most
  `max_client_connections`); `raftkv_http_accept_errors_total`: connections the client
  port could not accept (out of descriptors or memory).
- `raftkv_http_request_duration_seconds{route,method,status}` (histogram): time to answer
  a request, until its handler returned (a streamed answer counts until it ended). `route`
  is the route's template, e.g. `/v1/kv/{key}`, never the raw path (its values are
  bounded by the routes); `unmatched` when no route matched (404 unknown route, 405).
  `method` is the HTTP method, `other` for a method HTTP does not define. `status` is the
  answer's status code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Protocol

import msgspec
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Histogram as PrometheusHistogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from raftkv.etcd.servicers import EtcdServicers
from raftkv.kv import CorruptChecker, KvStateMachine, LeaseKeeper, SpaceMonitor
from raftkv.raft.driver.node import Node
from raftkv.raft.tasks import cancel_and_wait
from raftkv.raft.transport.peer_transport import PeerTransport
from raftkv.server.collector import GcPauses
from raftkv.server.etcd_metrics import etcd_families
from raftkv.server.histograms import bound_text
from raftkv.server.raft_metrics import gauge, raft_families

__all__ = ["UNMATCHED_ROUTE", "Metrics", "error_code_of"]

# Buckets of the HTTP latency histogram: a local serializable read (~100µs) to a write
# that waits for a slow quorum or times out (seconds).
HTTP_BUCKETS_S = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
    5.0, 10.0, 30.0,
)  # fmt: skip

UNMATCHED_ROUTE = "unmatched"

# How often the loop lag task wakes up: its observations are at most this far apart, and a
# stall is seen with at most this much less than its length.
LOOP_LAG_INTERVAL_S = 0.05
LOOP_LAG_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# The error code of a 413 answer -> the setting that refused the request.
_LIMIT_OF_ERROR_CODE = {
    "body_too_large": "max_body_bytes",
    "limit_exceeded": "kv_request_limits",
    "command_too_large": "max_command_bytes",
    "scan_too_large": "max_scan_entries",
}
_LIMITS = (
    "max_pending_requests",
    "max_inbox_messages",
    "max_client_connections",
    *_LIMIT_OF_ERROR_CODE.values(),
    "watch_max_total_buffered_bytes",
)


class _ErrorDetail(msgspec.Struct):
    code: str


class _ErrorBody(msgspec.Struct):
    """What every refusal of the HTTP API looks like: {"error": {"code", "message"}}."""

    error: _ErrorDetail


_ERROR_BODY_DECODER = msgspec.json.Decoder(_ErrorBody)


class WatchCounters(Protocol):
    """What the watch route counts (raftkv.server.watch_api.WatchHandlers)."""

    messages_sent: int
    events_sent: int
    canceled: dict[str, int]


class ClientPortCounters(Protocol):
    """What the client port counts (raftkv.server.listener)."""

    @property
    def open_connections(self) -> int: ...

    @property
    def refused_connections(self) -> int: ...

    @property
    def accept_errors(self) -> int: ...


class Metrics:
    """The metrics of `node` (serving `machine`) and of the HTTP API in front of it; see the
    module docstring for the list and for how to wire `middleware` and `handler`. The
    server sets `watches`, `lease_keeper`, `corrupt_checker`, `space_monitor` and
    `client_port` once it has them, and runs `loop_lag` and `gc_pauses` while it serves
    (aiohttp cleanup contexts)."""

    def __init__(self, node: Node, machine: KvStateMachine) -> None:
        self.node = node
        self.machine = machine
        self.watches: WatchCounters | None = None
        self.lease_keeper: LeaseKeeper | None = None
        self.corrupt_checker: CorruptChecker | None = None
        self.space_monitor: SpaceMonitor | None = None
        self.client_port: ClientPortCounters | None = None
        self.etcd: EtcdServicers | None = None
        self.registry = CollectorRegistry()
        self._loop_lag = PrometheusHistogram(
            "raftkv_event_loop_lag_seconds",
            "How late the event loop ran a task that sleeps a fixed interval.",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=self.registry,
        )
        # HTTP 413 refusals by limit (see _LIMIT_OF_ERROR_CODE), exported by the collector
        # in raftkv_limit_hits_total along with the node's own limit counters.
        self.http_limit_hits: dict[str, int] = dict.fromkeys(_LIMIT_OF_ERROR_CODE.values(), 0)
        self._http_duration = PrometheusHistogram(
            "raftkv_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status code.",
            ("route", "method", "status"),
            buckets=HTTP_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(self))
        self._gc_pauses = GcPauses(self.registry)

        # The histogram's child per (route, method, status): prometheus_client's `labels`
        # costs more than the observation. Bounded by the routes, METH_ALL and the status
        # codes the API answers with.
        self._http_children: dict[tuple[str, str, int], Any] = {}

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except web.HTTPException as error:
                self._observe(request, error, started)
                raise
            except Exception:
                self._observe(request, None, started)
                raise
            self._observe(request, response, started)
            return response

        self.middleware: Middleware = middleware

    async def loop_lag(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: while the app runs, a task observes the loop's lag
        into `raftkv_event_loop_lag_seconds`."""
        task = asyncio.create_task(self._observe_loop_lag(), name="raftkv-loop-lag")
        yield
        await cancel_and_wait(task)

    async def gc_pauses(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: while the app runs, every collection's pause goes
        into `raftkv_gc_pause_seconds`."""
        with self._gc_pauses.observing():
            yield

    async def _observe_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_LAG_INTERVAL_S
            await asyncio.sleep(LOOP_LAG_INTERVAL_S)
            self._loop_lag.observe(max(0.0, loop.time() - due))

    async def handler(self, request: web.Request) -> web.Response:
        """GET /metrics: every metric, in Prometheus' text format."""
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def _observe(
        self, request: web.Request, response: web.StreamResponse | None, started: float
    ) -> None:
        """Count one answer: `response` (None: an exception aiohttp will answer with 500)."""
        elapsed = time.perf_counter() - started
        status = response.status if response is not None else 500
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        body = response.body if isinstance(response, web.Response) else None
        code = error_code_of(body if isinstance(body, bytes) else None) if status == 413 else ""
        self.observe_answer(route, request.method, status, elapsed, code)

    def observe_answer(
        self, route: str, method: str, status: int, elapsed_s: float, error_code: str = ""
    ) -> None:
        """Count one answer to a request for `route` (a route template); `error_code` is
        its API error code ("" if none or not known), which for a 413 names the limit hit.
        Also for the requests a front process served (raftkv.server.fronts.gateway)."""
        method = method if method in hdrs.METH_ALL else "other"
        key = (route, method, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self._http_duration.labels(
                route, method, str(status)
            )
        child.observe(elapsed_s)
        if status == 413:
            # No API error code: aiohttp's own 413, a body over client_max_size.
            limit = _LIMIT_OF_ERROR_CODE.get(error_code or "body_too_large")
            if limit is not None:
                self.http_limit_hits[limit] += 1


def error_code_of(body: bytes | None) -> str:
    """The `error.code` of an API error answer's body; "" if it is not one."""
    if body is None:
        return ""
    try:
        return _ERROR_BODY_DECODER.decode(body).error.code
    except msgspec.DecodeError:
        return ""


class _NodeCollector:
    """Reads the node, its transport and the state machine at scrape time. Always yields
    the same families (some without samples), so `describe` can be `collect`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        node = self._metrics.node
        yield from raft_families(node)
        yield _limit_hits(self._metrics)
        yield from _client_port(self._metrics.client_port)
        yield from _mvcc(self._metrics.machine)
        yield from _leases_and_watches(self._metrics)
        yield from _hash_checks(self._metrics)
        yield from _space(self._metrics)
        if isinstance(node.transport, PeerTransport):
            yield from _transport(node.transport)
        yield from etcd_families(self._metrics.etcd)


def _limit_hits(metrics: Metrics) -> Metric:
    family = CounterMetricFamily(
        "raftkv_limit_hits",
        "Requests or messages refused at a limit, by the setting that refused them.",
        labels=["limit"],
    )
    node, port = metrics.node, metrics.client_port
    counts = {
        "max_pending_requests": node.stats.overloaded,
        "max_inbox_messages": node.stats.messages_dropped,
        "max_client_connections": port.refused_connections if port is not None else 0,
        **metrics.http_limit_hits,
        "watch_max_total_buffered_bytes": metrics.machine.watch_hub.total_budget_cancels,
    }
    for limit in _LIMITS:
        family.add_metric([limit], counts[limit])
    return family


def _client_port(port: ClientPortCounters | None) -> Iterator[Metric]:
    connections = GaugeMetricFamily("raftkv_http_connections", "Client connections open now.")
    errors = CounterMetricFamily(
        "raftkv_http_accept_errors", "Client connections that could not be accepted."
    )
    if port is not None:
        connections.add_metric([], port.open_connections)
        errors.add_metric([], port.accept_errors)
    yield connections
    yield errors


def _mvcc(machine: KvStateMachine) -> Iterator[Metric]:
    compacted, live_keys = machine.compacted_revision(), machine.live_keys()
    yield gauge("raftkv_mvcc_revision", "The store's current revision.", machine.current_revision())
    yield gauge("raftkv_mvcc_compacted_revision", "History compacted to (0: never).", compacted)
    if live_keys is not None:
        yield gauge("raftkv_mvcc_keys", "Live keys.", live_keys)


def _leases_and_watches(metrics: Metrics) -> Iterator[Metric]:
    machine, keeper, watches = metrics.machine, metrics.lease_keeper, metrics.watches
    yield gauge("raftkv_leases", "Live leases.", len(machine.lease_timers))
    expired = CounterMetricFamily("raftkv_lease_expired", "Leases this node expired while it led.")
    delays = GaugeMetricFamily(
        "raftkv_lease_expiry_delay_seconds",
        "Time from a lease's deadline to its expiry being applied, over recent expiries.",
        labels=["quantile"],
    )
    if keeper is not None:
        expired.add_metric([], keeper.expired)
        recent = sorted(keeper.expiry_delays)
        if recent:
            for quantile in (0.5, 0.99, 1.0):
                position = min(len(recent) - 1, int(quantile * len(recent)))
                delays.add_metric([bound_text(quantile)], recent[position])
    yield expired
    yield delays
    yield gauge("raftkv_watches", "Watch streams open on this node.", machine.watch_hub.active)
    yield gauge(
        "raftkv_watch_buffered_bytes",
        "Bytes of events this node's watches hold until their clients take them.",
        machine.watch_hub.buffered_bytes,
    )
    events = CounterMetricFamily("raftkv_watch_events_sent", "Watch events sent.")
    messages = CounterMetricFamily("raftkv_watch_messages_sent", "Watch messages sent.")
    canceled = CounterMetricFamily(
        "raftkv_watch_canceled", "Watches the server ended, by reason.", labels=["reason"]
    )
    if watches is not None:
        events.add_metric([], watches.events_sent)
        messages.add_metric([], watches.messages_sent)
        for reason, count in sorted(watches.canceled.items()):
            canceled.add_metric([reason], count)
    yield events
    yield messages
    yield canceled


def _hash_checks(metrics: Metrics) -> Iterator[Metric]:
    machine, checker = metrics.machine, metrics.corrupt_checker
    alarms = GaugeMetricFamily(
        "raftkv_corrupt_alarm",
        "1 for each member a CORRUPT alarm names: its state differs from the majority's.",
        labels=["member"],
    )
    for alarm in machine.corrupt_alarms():
        alarms.add_metric([str(alarm.member_id)], 1)
    yield alarms
    yield gauge(
        "raftkv_hash_check_index",
        "The log index of the last hash check (0: none yet).",
        machine.hash_check_record().check_index,
    )
    hashed = CounterMetricFamily(
        "raftkv_hash_checks", "Hashes of its own state this node computed and reported."
    )
    started = CounterMetricFamily(
        "raftkv_hash_checks_started", "Hash checks this node proposed (start-up and periodic)."
    )
    duration = GaugeMetricFamily(
        "raftkv_hash_check_duration_seconds", "How long this node's last hash took."
    )
    if checker is not None:
        hashed.add_metric([], checker.hashes_reported)
        started.add_metric([], checker.checks_started)
        duration.add_metric([], checker.last_hash_seconds)
    yield hashed
    yield started
    yield duration
    mismatches = CounterMetricFamily(
        "raftkv_hash_check_mismatches",
        "CORRUPT alarms raised by the hash reports this node applied since it started.",
    )
    mismatches.add_metric([], machine.corrupt_alarms_raised)
    yield mismatches


def _space(metrics: Metrics) -> Iterator[Metric]:
    alarms = GaugeMetricFamily(
        "raftkv_nospace_alarm",
        "1 for each member a NOSPACE alarm names: the cluster refuses writes that add data.",
        labels=["member", "reason"],
    )
    for alarm in metrics.machine.nospace_alarms():
        alarms.add_metric([str(alarm.member_id), alarm.reason], 1)
    yield alarms
    monitor = metrics.space_monitor
    storage = GaugeMetricFamily(
        "raftkv_storage_bytes", "Bytes of this node's storage (<data_dir>/db), last measured."
    )
    free = GaugeMetricFamily(
        "raftkv_disk_free_bytes", "Free bytes of the disk holding the storage, last measured."
    )
    quota = GaugeMetricFamily("raftkv_storage_quota_bytes", "quota_backend_bytes (0: no quota).")
    if monitor is not None:
        quota.add_metric([], monitor.settings.quota_bytes)
        if monitor.last_usage is not None:
            storage.add_metric([], monitor.last_usage.storage_bytes)
            free.add_metric([], monitor.last_usage.free_bytes)
    yield storage
    yield free
    yield quota


def _transport(transport: PeerTransport) -> Iterator[Metric]:
    queues = GaugeMetricFamily(
        "raftkv_peer_send_queue_messages", "Messages queued to each peer.", labels=["peer"]
    )
    for peer, length in sorted(transport.queue_lengths().items()):
        queues.add_metric([str(peer)], length)
    yield queues
    stats = transport.stats
    counters = (
        (
            "raftkv_transport_send_failures",
            "Streams to peers that failed (their queued messages were dropped).",
            stats.stream_failures,
        ),
        ("raftkv_transport_messages_sent", "Raft messages sent to peers.", stats.messages_sent),
        (
            "raftkv_transport_messages_received",
            "Raft messages received from peers.",
            stats.messages_received,
        ),
        ("raftkv_transport_frames_sent", "Frames (message batches) sent.", stats.frames_sent),
        ("raftkv_transport_frames_received", "Frames received.", stats.frames_received),
        (
            "raftkv_transport_messages_dropped",
            "Messages dropped before the wire (queue full, unknown peer, stream failed).",
            stats.messages_dropped,
        ),
        (
            "raftkv_transport_streams_rejected",
            "Incoming streams aborted for what the peer sent.",
            stats.streams_rejected,
        ),
    )
    for name, documentation, value in counters:
        yield CounterMetricFamily(name, documentation, value=value)
    snapshots = CounterMetricFamily(
        "raftkv_transport_snapshots", "Snapshot transfers, by outcome.", labels=["outcome"]
    )
    snapshots.add_metric(["sent"], stats.snapshots_sent)
    snapshots.add_metric(["failed"], stats.snapshots_failed)
    snapshots.add_metric(["received"], stats.snapshots_received)
    snapshots.add_metric(["refused"], stats.snapshots_refused)
    yield snapshots
    transfer_counters = (
        (
            "raftkv_snapshot_full_bytes",
            "Data size of the snapshots offered to peers (what sending them whole would cost).",
            stats.snapshot_full_bytes,
        ),
        (
            "raftkv_snapshot_bytes_sent",
            "Snapshot chunk bytes sent to peers (compressed).",
            stats.snapshot_bytes_sent,
        ),
        (
            "raftkv_snapshot_delta_bytes_saved",
            "Snapshot data the receiving peers already held, so not sent.",
            stats.snapshot_bytes_reused,
        ),
        ("raftkv_snapshot_chunks_sent", "Snapshot chunks sent.", stats.snapshot_chunks_sent),
        (
            "raftkv_snapshot_chunks_reused",
            "Snapshot chunks the receiving peers already held.",
            stats.snapshot_chunks_reused,
        ),
        (
            "raftkv_snapshot_bytes_received",
            "Snapshot chunk bytes received from peers (compressed).",
            stats.snapshot_bytes_received,
        ),
    )
    for name, documentation, value in transfer_counters:
        yield CounterMetricFamily(name, documentation, value=value)
    incoming = CounterMetricFamily(
        "raftkv_snapshot_incoming_chunks",
        "Chunks of incoming snapshots, by where they came from.",
        labels=["source"],
    )
    incoming.add_metric(["wire"], stats.snapshot_chunks_received)
    incoming.add_metric(["cache"], stats.snapshot_chunks_from_cache)
    incoming.add_metric(["local"], stats.snapshot_chunks_from_local)
    yield incoming
    yield GaugeMetricFamily(
        "raftkv_snapshot_cache_bytes",
        "Chunks kept from earlier snapshot transfers, for resuming them.",
        value=transport.snapshot_cache_bytes(),
    )
