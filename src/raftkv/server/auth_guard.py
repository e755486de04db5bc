"""Who each HTTP request acts for, and the routes open without credentials.

The middleware names the request's caller (`raftkv.kv.callers`) from its credentials, in
this order:
1. `Authorization: Bearer <token>` (or the bare token, as etcd's JSON gateway clients send
   it): the token's user; a malformed, forged, expired or void token is a 401
   `invalid_token` (on a public route it is ignored);
2. a verified client certificate (the client port requires them with `client_ca_file`)
   whose common name is a user's name: that user (as etcd does);
3. else no one (`ANONYMOUS`).
Then, while auth is enabled, a request for a route outside `PUBLIC_ROUTES` without a caller
is a 401 `auth_required` before its handler runs (on etcd's gateway, `/v3/...`, etcd's own
refusal in the gateway's body), and `/metrics` on the client port needs the role root
(Prometheus scrapes the separate `listen_metrics` port, which is open). What each caller
may do beyond that is `KvService`'s check (`raftkv.kv.authorization`).
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from raftkv.etcd.errors import status_of
from raftkv.etcd.gateway_errors import error_response as gateway_error
from raftkv.kv.auth_tokens import bearer_token
from raftkv.kv.authorization import Authorizer
from raftkv.kv.callers import ANONYMOUS, Caller, acting_as, current_caller
from raftkv.kv.errors import AuthError, InvalidToken

__all__ = ["PUBLIC_ROUTES", "auth_guard", "request_caller", "token_caller"]

# Routes any client may call while auth is enabled (by route template): liveness and
# readiness probes, the API document, where the members are (clients and joining nodes
# find the cluster through it; etcd's MemberList needs no auth either), this node's status
# (etcd's Maintenance.Status) and the console's view of every member's (the same facts;
# members gather it from each other without credentials), the console's page and files
# (its login form must load), logging in and the auth status.
PUBLIC_ROUTES: Final = frozenset(
    {
        "/health",
        "/ready",
        "/openapi.json",
        "/v1/cluster",
        "/v1/status",
        "/v1/console/node",
        "/v1/console/members",
        "/ui",
        "/ui/{asset}",
        "/v1/auth/authenticate",
        "/v1/auth/status",
        "/v3/auth/authenticate",
        "/v3/auth/status",
        "/v3/cluster/member/list",
        "/v3/maintenance/status",
    }
)


def _common_name(request: web.Request) -> str | None:
    """The common name of the client certificate the TLS handshake verified, if any."""
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    if not certificate:
        return None
    for relative_name in certificate.get("subject", ()):
        for attribute, value in relative_name:
            if attribute == "commonName":
                return str(value)
    return None


def token_caller(authorization: str, authorizer: Authorizer) -> Caller | None:
    """The caller an Authorization header's token names; None without one (InvalidToken
    for a token that names no one)."""
    header = authorization.strip()
    return authorizer.caller_for_token(bearer_token(header)) if header else None


def request_caller(request: web.Request, authorizer: Authorizer) -> Caller:
    """The caller the request's credentials name (see the module docstring)."""
    caller = token_caller(request.headers.get(hdrs.AUTHORIZATION, ""), authorizer)
    if caller is not None:
        return caller
    common_name = _common_name(request)
    if common_name is not None:
        return authorizer.caller_for_certificate(common_name)
    return ANONYMOUS


def auth_guard(authorizer: Authorizer) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:  # no such route: 404, 405
            return await handler(request)
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else ""
        public = template in PUBLIC_ROUTES
        try:
            try:
                caller = request_caller(request, authorizer)
            except InvalidToken:
                if not public:
                    raise
                caller = ANONYMOUS
            if not public:
                authorizer.user(caller)  # AuthRequired without credentials
            if template == "/metrics":
                authorizer.require_root(caller, "read the metrics on the client port")
        except AuthError as error:
            if template.startswith("/v3/"):
                # etcd's JSON gateway says it as etcd does ("user name is empty", "invalid
                # auth token"), in its own body.
                translated = status_of(error)
                assert translated is not None  # every AuthError has etcd's status
                return gateway_error(*translated)
            raise
        if caller == current_caller():  # anonymous requests while auth is disabled
            return await handler(request)
        with acting_as(caller):
            return await handler(request)

    return guard
