"""The HTTP/JSON API's application: `create_app` serves the route table
(`raftkv.server.routes`) over one `KvService`, through the handlers of each area and the
middlewares below.

- The routes, what each takes and answers: `raftkv.server.routes` (and `GET /openapi.json`,
  derived from it); the bodies and answers: `raftkv.api`.
- The handlers, by area: `kv_api` (keys, ranges, txns, compaction), `auth_api` (logins,
  users and roles), `lease_api`,
  `watch_api`, `node_api` (health, readiness, status, the API document), `cluster_api`
  (members, membership and leadership changes), `alarm_api` (alarms and their disarm),
  `backup_api` (`GET /v1/snapshot`), `raftkv.server.console` (the web console at `/ui`
  and what it reads: events, metrics history, every member's state), and
  `raftkv.server.metrics` (`GET /metrics`).
- The errors and their codes: `raftkv.server.errors`.
- The middlewares, outermost first: the metrics (they see the status the errors middleware
  answers with), the errors (an exception becomes its JSON error answer), the request
  guards (`request_guards`, in order: the protocol, HTTP/1.0 and 1.1 only and
  percent-escapes in URLs UTF-8; the Host and Origin guards of
  `raftkv.server.browser_guards`, what keeps web pages out; the encoding, a compressed body
  refused before anything reads it; the content type, a body must be JSON), the auth
  guard (who the request acts for, and 401 without credentials:
  `raftkv.server.auth_guard`), the CORRUPT guard (a member a hash check found diverged
  serves no data), the removal guard (`raftkv.server.removal`).

The handlers reach the store through the `KvService` only (its docstring names the metrics
as the one reader around it).
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.typedefs import Handler, Middleware

from raftkv.etcd.gateway import gateway_routes
from raftkv.etcd.servicers import EtcdServicers
from raftkv.kv.auth_service import AuthService, AuthSettings
from raftkv.kv.service import KvService
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.server.alarm_api import AlarmHandlers
from raftkv.server.auth_api import AuthHandlers
from raftkv.server.auth_guard import auth_guard
from raftkv.server.backup_api import BackupHandlers
from raftkv.server.browser_guards import (
    BrowserGuards,
    HostCheck,
    OriginCheck,
    content_type_refusal,
    cors_headers,
)
from raftkv.server.cluster_api import ClusterHandlers
from raftkv.server.console import ConsoleHandlers, ConsoleSettings
from raftkv.server.errors import HTTP_ERROR_CODES, error_answer
from raftkv.server.exposure import ClientWarning
from raftkv.server.http_common import BODY_TIMEOUT, REQUESTED_VERSION, ApiError, error_response
from raftkv.server.kv_api import KvHandlers
from raftkv.server.lease_api import LeaseHandlers
from raftkv.server.metrics import Metrics
from raftkv.server.node_api import NodeHandlers, corrupt_reason
from raftkv.server.removal import guard_removal
from raftkv.server.routes import ROUTES
from raftkv.server.watch_api import WatchHandlers

__all__ = [
    "BACKUPS",
    "METRICS",
    "WATCHES",
    "Handlers",
    "HttpSettings",
    "create_app",
    "errors_middleware",
    "request_guards",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    # The largest request body accepted (413 `body_too_large` beyond). etcd's default
    # request limit is 1.5 MiB; 2 MiB leaves room for a 1 MiB value base64-encoded (4/3)
    # plus JSON framing. Larger bodies cost memory per connection before validation.
    max_body_bytes: int = 2 << 20
    # How long a request body may take to arrive whole (408 `body_timeout` beyond): a
    # client trickling its body holds a connection and a handler that long at most.
    body_timeout_s: float = 10.0
    # How long a write waits for its outcome, or a linearizable read for its read point,
    # on the node's clock (504 `timeout` beyond). Short answers a client sooner during a
    # leader change, but makes more writes end with an unknown outcome.
    request_timeout_s: float = 10.0
    # /ready answers 503 while more committed entries than this wait to be applied (a
    # restarting node replaying its log, a follower catching up).
    ready_max_apply_lag: int = 1000
    # Backups (GET /v1/snapshot) made at once; more are refused with 503 `busy`. Each holds
    # the whole encoded state in memory while it is made.
    max_concurrent_backups: int = 1
    # A watch stream whose writes stay blocked this long (its client stopped reading) is
    # ended with `too_slow`.
    watch_send_timeout_s: float = 10.0
    # The progress notification interval of a watch that asks for them without its own.
    watch_progress_interval_s: float = 10.0
    # A watch served by a member that has had no leader this long (cut off from the rest,
    # so its state may be stale) is ended with `no_leader`, for the client to resume on
    # another member (etcd's require-leader watches). 0: never.
    watch_no_leader_timeout_s: float = 3.0
    # The cluster's id, answered in /v1/cluster (0: not said; tests).
    cluster_id: int = 0
    # What the node exposes unprotected (raftkv.server.exposure), listed by /v1/status.
    security_warnings: tuple[ClientWarning, ...] = ()
    # Where /metrics is served when not here ("": here, on the client port; else its own
    # port, `listen_metrics`, and the client port answers 404 naming it).
    metrics_elsewhere: str = ""
    # The Host and Origin allow-lists (raftkv.server.browser_guards): by default any Host
    # and no cross-origin browser request.
    browsers: BrowserGuards = field(default_factory=BrowserGuards)
    # Logins: token lifetime, failed-login limits, password hashing (raftkv.kv.auth_service).
    auth: AuthSettings = field(default_factory=AuthSettings)
    # The web console (/ui): its sampling, history and events (raftkv.server.console).
    console: ConsoleSettings = field(default_factory=ConsoleSettings)

    def __post_init__(self) -> None:
        size = self.max_body_bytes
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigInvalid(f"HttpSettings.max_body_bytes must be >= 1, got {size!r}")
        timeout = self.request_timeout_s
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0 < timeout < float("inf")
        ):
            raise ConfigInvalid(
                f"HttpSettings.request_timeout_s must be a positive number, got {timeout!r}"
            )
        backups = self.max_concurrent_backups
        if not isinstance(backups, int) or isinstance(backups, bool) or backups < 1:
            raise ConfigInvalid(
                f"HttpSettings.max_concurrent_backups must be >= 1, got {backups!r}"
            )
        for name in ("watch_send_timeout_s", "watch_progress_interval_s", "body_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigInvalid(f"HttpSettings.{name} must be a positive number, got {value!r}")
        no_leader = self.watch_no_leader_timeout_s
        if not isinstance(no_leader, (int, float)) or not 0 <= no_leader < float("inf"):
            raise ConfigInvalid(
                f"HttpSettings.watch_no_leader_timeout_s must be >= 0, got {no_leader!r}"
            )
        lag = self.ready_max_apply_lag
        if not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
            raise ConfigInvalid(f"HttpSettings.ready_max_apply_lag must be >= 0, got {lag!r}")


# The app's Prometheus metrics (its own registry).
METRICS = web.AppKey("metrics", Metrics)
# The watch handlers (their counters feed the metrics).
WATCHES = web.AppKey("watches", WatchHandlers)
# The backups, for etcd's Maintenance.Snapshot to share their limit (raftkv.server.runner).
BACKUPS = web.AppKey("backups", BackupHandlers)


@dataclass(frozen=True, slots=True)
class Handlers:
    """The handlers of one app, by area: a route's `handler` "<area>.<method>" names one."""

    kv: KvHandlers
    node: NodeHandlers
    cluster: ClusterHandlers
    alarms: AlarmHandlers
    auth: AuthHandlers
    leases: LeaseHandlers
    watches: WatchHandlers
    backups: BackupHandlers
    metrics: Metrics
    console: ConsoleHandlers

    def of(self, handler: str) -> Handler:
        found: Handler = operator.attrgetter(handler)(self)
        return found


# -- middlewares -----------------------------------------------------------------------------


def _encoding_refusal(request: web.Request) -> web.Response | None:
    """415 for a compressed request body, before anything reads it: the API never needs
    one, and inflating one is where a small "gzip bomb" costs seconds of CPU. (The server
    does not inflate bodies itself: raftkv.server.listener.)"""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip()
    if encoding.lower() != "identity":
        response = error_response(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {encoding[:64]!r} is not accepted: send the body uncompressed",
        )
        response.force_close()
        return response
    return None


# A run of percent-escapes: the bytes of one or more characters. A raw path or query is
# ASCII, so it is UTF-8 exactly when each run is.
_PERCENT_ESCAPES = re.compile(r"(?:%[0-9a-fA-F]{2})+")


def _not_utf8_escape(text: str) -> str | None:
    """The first run of percent-escapes in `text` (a raw path or query string) that is not
    UTF-8, or None. yarl leaves such a run as it is (in a path) or makes it U+FFFD (in a
    query), so `/v1/kv/%FF` would name the key "%FF", the same as `/v1/kv/%25FF`."""
    if "%" not in text:
        return None
    for escapes in _PERCENT_ESCAPES.findall(text):
        try:
            unquote_to_bytes(escapes).decode("utf-8")
        except UnicodeDecodeError:
            return str(escapes)
    return None


def _protocol_refusal(request: web.Request) -> web.Response | None:
    """What HTTP/1.1 and the API's URLs cannot carry: another HTTP version (505), a
    percent-escape in the path or query that is not UTF-8 (400: a binary key goes in
    base64, with encoding=base64)."""
    version = request.get(REQUESTED_VERSION, request.version)
    if version not in (HttpVersion10, HttpVersion11):
        response = error_response(
            505,
            "http_version_not_supported",
            f"HTTP/{version.major}.{version.minor} is not served: send HTTP/1.1",
        )
        response.force_close()
        return response
    url = request.rel_url
    for part, text in (("path", url.raw_path), ("query", url.raw_query_string)):
        escape = _not_utf8_escape(text)
        if escape is not None:
            return error_response(
                400,
                "invalid_request",
                f"the {part}'s percent-escapes {escape[:48]} are not UTF-8: send a binary key "
                "or value base64-encoded, with encoding=base64",
            )
    return None


def request_guards(browsers: BrowserGuards) -> Middleware:
    """The checks every request passes before any handler runs, in order (the first
    refusal is the answer): the protocol, the Host and Origin guards, the encoding and the
    content type (raftkv.server.browser_guards). One middleware, not one each: a layer
    costs every request a coroutine (~2.5 µs)."""
    checks: tuple[Callable[[web.Request], web.Response | None], ...] = (
        _protocol_refusal,
        HostCheck(browsers.hosts),
        OriginCheck(browsers.origins),
        _encoding_refusal,
        content_type_refusal,
    )

    @web.middleware
    async def guards(request: web.Request, handler: Handler) -> web.StreamResponse:
        for check in checks:
            refusal = check(request)
            if refusal is not None:
                return refusal
        return await handler(request)

    return guards


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = HTTP_ERROR_CODES.get(error.status, "http_error")
        allow = error.headers.get(hdrs.ALLOW)
        if allow is None:
            return error_response(error.status, code, error.reason)
        # A 405 says which methods the route takes, in Allow and in its message.
        refusal = error_response(error.status, code, f"{error.reason}: this route takes {allow}")
        refusal.headers[hdrs.ALLOW] = allow
        return refusal
    except Exception as error:
        response = error_answer(error)
        if response is not None:
            return response
        logger.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, "internal", f"internal error: {type(error).__name__}")


# Routes a CORRUPT member still serves (by route template): its own state and the
# cluster's, membership changes (an operator removes it through any member), metrics and
# the API document. Every other route reads or writes the data, which may be wrong here.
_SERVED_WHEN_CORRUPT = frozenset(
    {
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/v1/status",
        "/v1/cluster",
        "/v1/members",
        "/v1/members/{id}",
        "/v1/members/{id}/promote",
        "/v1/leader/transfer",
        "/v1/alarms",
        "/v1/alarms/disarm",
        # The console shows the member's state and the cluster's (raftkv.server.console).
        "/ui",
        "/ui/{asset}",
        "/v1/events",
        "/v1/console/history",
        "/v1/console/node",
        "/v1/console/members",
    }
)


def _corrupt_guard(service: KvService) -> Middleware:
    """Refuse (503 `corrupt`) every data route while a CORRUPT alarm names this member."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical not in _SERVED_WHEN_CORRUPT:
            alarm = service.corrupt_alarm()
            if alarm is not None:
                return error_response(503, "corrupt", corrupt_reason(service.member_id, alarm))
        return await handler(request)

    return guard


def _metrics_elsewhere(address: str) -> Handler:
    """/metrics on the client port when the node serves it on `listen_metrics` instead."""

    async def refuse(request: web.Request) -> web.StreamResponse:
        raise ApiError(
            404, "unknown_route", f"/metrics is served on its own port, listen_metrics {address}"
        )

    return refuse


def create_metrics_app(metrics: Metrics) -> web.Application:
    """The app of the metrics port (`listen_metrics`): GET /metrics only."""
    app = web.Application()
    app.router.add_route("GET", "/metrics", metrics.handler)
    return app


# -- the application -------------------------------------------------------------------------


def create_app(
    service: KvService, settings: HttpSettings | None = None, etcd: EtcdServicers | None = None
) -> web.Application:
    """The aiohttp application serving `service`'s node (see the module docstring), and
    with `etcd`, etcd's JSON gateway under /v3/ (raftkv.etcd.gateway)."""
    settings = settings if settings is not None else HttpSettings()
    auth = etcd.context.auth if etcd is not None else AuthService(service, settings.auth)
    # The metrics read the node's and the state machine's counters themselves (read-only):
    # the one way around the service, which serves every request.
    metrics = Metrics(service.node, service.machine)
    # client_max_size makes request.read() itself refuse a body over the limit (a chunked
    # body has no Content-Length to check up front).
    app = web.Application(
        middlewares=[
            metrics.middleware,
            errors_middleware,
            request_guards(settings.browsers),
            auth_guard(service.authorizer),
            _corrupt_guard(service),
        ],
        client_max_size=settings.max_body_bytes,
    )
    app.on_response_prepare.append(cors_headers)
    app.cleanup_ctx.append(metrics.loop_lag)
    app.cleanup_ctx.append(metrics.gc_pauses)
    app[METRICS] = metrics
    app[BODY_TIMEOUT] = settings.body_timeout_s
    timeout, max_body_bytes = settings.request_timeout_s, settings.max_body_bytes
    handlers = Handlers(
        kv=KvHandlers(service, timeout, max_body_bytes),
        node=NodeHandlers(service, settings.ready_max_apply_lag, settings.security_warnings),
        cluster=ClusterHandlers(service, timeout, max_body_bytes, settings.cluster_id),
        alarms=AlarmHandlers(service, timeout, max_body_bytes),
        auth=AuthHandlers(auth, timeout, max_body_bytes),
        leases=LeaseHandlers(service, timeout, max_body_bytes),
        watches=WatchHandlers(
            service,
            settings.watch_send_timeout_s,
            settings.watch_progress_interval_s,
            no_leader_timeout_s=settings.watch_no_leader_timeout_s,
        ),
        backups=BackupHandlers(service, timeout, settings.max_concurrent_backups),
        metrics=metrics,
        console=ConsoleHandlers(service, metrics, settings.console, settings.security_warnings),
    )
    app.cleanup_ctx.append(handlers.console.recording)
    app[WATCHES] = handlers.watches
    app[BACKUPS] = handlers.backups
    metrics.watches = handlers.watches
    guard_removal(app, service)
    for route in ROUTES:
        handler = handlers.of(route.handler)
        if route.path == "/metrics" and settings.metrics_elsewhere:
            handler = _metrics_elsewhere(settings.metrics_elsewhere)
        # add_route, not add_get: a GET route does not answer HEAD.
        app.router.add_route(route.method, route.path, handler)
    if etcd is not None:
        metrics.etcd = etcd
        for method, path, handler in gateway_routes(etcd):
            app.router.add_route(method, path, handler)
    return app
