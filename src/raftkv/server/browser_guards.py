"""No open doors for browsers (issue 17): what keeps a web page from using a node's HTTP API.

A page on any site can make the browser send "simple" requests to any address, the
developer's `localhost:8080` included: a POST whose body is text/plain or a form, a GET, a
body-less POST or DELETE... without asking the server first, and DNS rebinding makes the
page's own name resolve to 127.0.0.1 so the browser even lets it read the answers. Three
guards close those doors, before any handler runs (nothing is read or written):

- **Content type** (`content_type_refusal`): a POST with a body must say
  `Content-Type: application/json` (a `charset` of UTF-8 allowed), or it is answered 415
  `unsupported_media_type`. POST is the one method with a body a browser sends
  cross-origin without a CORS preflight (with a form or text/plain body); JSON it sends
  only after one, which the origin guard answers. Any other method (PUT, DELETE) is always
  preflighted cross-origin, so its body is read as JSON whatever type it says: `curl -X
  PUT -d '{"value": "v"}'` (a form type, curl's default) works. A body-less request is
  not affected. On etcd's gateway (`/v3/`) a body with no Content-Type at all is taken,
  as etcd takes it (etcd3gw's txns have none); a type other than JSON is refused there
  too.
- **Host** (`HostCheck`, etcd's `--host-whitelist`): the Host header (its port
  stripped) must be in `BrowserGuards.hosts` ("*": any), or 421 `host_not_allowed`. A
  DNS-rebinding page sends its own name as Host (`evil.example:8080`), which a node
  serving on loopback does not accept (`raftkv.server.browser_policy` derives that
  default, and parses and matches the entries). A request without a Host header
  (HTTP/1.0) is not a browser's and passes.
- **Origin** (`OriginCheck`, etcd's `--cors`): a request whose `Origin` header is
  neither the node's own origin (same-origin: `scheme://Host`, trusted because the Host
  guard ran first) nor in `BrowserGuards.origins` ("*": any, even "null") is answered 403
  `origin_not_allowed`. A preflight (`OPTIONS` with `Access-Control-Request-Method`) from
  an allowed origin is answered 204 with what the API takes; every answer to an allowed
  cross-origin request carries `Access-Control-Allow-Origin` (`cors_headers`, on
  `on_response_prepare`, so streamed answers such as watches get it too). Requests
  without an Origin header (curl, raftkv's client, etcd's clients) are not affected.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from raftkv.server.browser_policy import (
    ANY,
    host_allowed,
    host_of_header,
    normalize_origin,
    parse_host_pattern,
)
from raftkv.server.http_common import error_response

__all__ = ["BrowserGuards", "HostCheck", "OriginCheck", "content_type_refusal", "cors_headers"]

# What a preflight answers: the methods and request headers the API takes, and how long a
# browser may remember that (seconds; browsers cap it at 2 h or less).
_CORS_METHODS = "GET, HEAD, PUT, POST, DELETE"
_CORS_HEADERS = "Content-Type, Authorization"
_CORS_MAX_AGE_S = 600
# Where the origin guard leaves an allowed cross-origin request's Origin for cors_headers.
_CROSS_ORIGIN = web.RequestKey("cross_origin", str)
_JSON_CHARSETS = frozenset({"utf-8", "utf8"})
# Host headers whose verdict the Host guard remembers (forgotten all at once past this).
_MAX_REMEMBERED_HOSTS = 256
# etcd's JSON gateway, where a body without any Content-Type is read as JSON, as etcd's
# gateway does: etcd3gw sends its txns so (requests' data=). A browser sends no type only
# from fetch with an untyped Blob, which carries an Origin the origin guard checks first.
_GATEWAY = "/v3/"


@dataclass(frozen=True, slots=True)
class BrowserGuards:
    """The Host and Origin allow-lists (see the module docstring). The library's default
    accepts any Host (`raftkv serve` on loopback gets the loopback names instead:
    `browser_policy.allowed_hosts`) and no cross-origin request.

    Invariant: entries are normalized (`parse_host_pattern`, `normalize_origin`), so
    matching is comparing."""

    # Host names, IP addresses and IP networks ("10.0.0.0/8"), lower-case; "*": any.
    hosts: tuple[str, ...] = (ANY,)
    # Origins as scheme://host[:port] (the port only when not the scheme's default); "*": any.
    origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for host in self.hosts:
            if host != ANY and parse_host_pattern(host) != host:
                raise ValueError(f"host {host!r} is not normalized: use parse_host_pattern")
        for origin in self.origins:
            if origin != ANY and normalize_origin(origin) != origin:
                raise ValueError(f"origin {origin!r} is not normalized: use normalize_origin")


# -- the guards ------------------------------------------------------------------------------
# Each is a check of a request before any handler runs: the answer refusing it, or None
# (raftkv.server.app runs them in one middleware, `request_guards`).


def content_type_refusal(request: web.Request) -> web.Response | None:
    """415 for a POST body that does not say it is JSON (see the module docstring)."""
    if request.body_exists and request.method == hdrs.METH_POST:
        if hdrs.CONTENT_TYPE not in request.headers and request.path.startswith(_GATEWAY):
            return None
        # aiohttp's parsed type: lower-case, application/octet-stream when none is given.
        media_type = request.content_type
        charset = (request.charset or "utf-8").lower()
        if media_type != "application/json" or charset not in _JSON_CHARSETS:
            given = request.headers.get(hdrs.CONTENT_TYPE, "none")
            return error_response(
                415,
                "unsupported_media_type",
                f"Content-Type {given[:64]!r} is not accepted: a request body is JSON, "
                "sent with Content-Type: application/json",
            )
    return None


class HostCheck:
    """421 for a request whose Host is not in `hosts` (see the module docstring)."""

    def __init__(self, hosts: tuple[str, ...]) -> None:
        self.hosts = hosts
        self._any = ANY in hosts
        # The verdict per Host header seen: matching parses IP addresses, and clients send
        # the same few Host values again and again. Bounded: Host is the client's to choose.
        self._verdicts: dict[str, bool] = {}

    def __call__(self, request: web.Request) -> web.Response | None:
        header = request.headers.get(hdrs.HOST)
        if self._any or header is None:
            return None
        allowed = self._verdicts.get(header)
        if allowed is None:
            allowed = host_allowed(host_of_header(header), self.hosts)
            if len(self._verdicts) >= _MAX_REMEMBERED_HOSTS:
                self._verdicts.clear()
            self._verdicts[header] = allowed
        if allowed:
            return None
        return error_response(
            421,
            "host_not_allowed",
            f"Host {header[:64]!r} is not one this node answers to: add it to the setting "
            "host_whitelist (or reach the node by one of its names)",
        )


class OriginCheck:
    """403 for a request from an origin not allowed; the answer to the preflights of those
    allowed (see the module docstring). Runs after `HostCheck`."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.origins = origins

    def __call__(self, request: web.Request) -> web.Response | None:
        header = request.headers.get(hdrs.ORIGIN)
        if header is None:
            return None
        origin = _origin_or_none(header)
        if origin is not None and origin == _own_origin(request):
            return None  # same-origin: no CORS headers needed
        if ANY not in self.origins and (origin is None or origin not in self.origins):
            return error_response(
                403,
                "origin_not_allowed",
                f"Origin {header[:64]!r} may not use this node's API: add it to the setting "
                "cors to let pages from it in",
            )
        request[_CROSS_ORIGIN] = header
        if (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        ):
            preflight = web.Response(status=204)
            preflight.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = _CORS_METHODS
            preflight.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = _CORS_HEADERS
            preflight.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(_CORS_MAX_AGE_S)
            return preflight
        return None


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` signal: an answer to an allowed cross-origin request says
    so (errors and streams included, as they are all prepared through here)."""
    origin = request.get(_CROSS_ORIGIN)
    if origin is not None:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)


def _origin_or_none(header: str) -> str | None:
    """The normalized origin of an Origin header, or None ("null": a sandboxed or file:
    page, or something unreadable: never allowed)."""
    try:
        return normalize_origin(header)
    except ValueError:
        return None


def _own_origin(request: web.Request) -> str | None:
    """The origin a page served by this node at the request's Host would have."""
    host = request.headers.get(hdrs.HOST)
    if host is None:
        return None
    return _origin_or_none(f"{request.scheme}://{host}")
