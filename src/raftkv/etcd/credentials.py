"""Who each call on the etcd gRPC port acts for: `CallerInterceptor`, the port's one door.

etcd's clients send the token `Authenticate` answered as the metadata "token" of every
later call (etcdctl and Go's clientv3 do; some clients send "authorization", with or
without "Bearer "). The interceptor wraps every method the port serves, unary and
streaming alike, so that its handler runs `acting_as` the caller the call's credentials
name (`raftkv.kv.callers`; `KvService` checks that caller at every read, write and admin
call), in this order:
1. a token: the user it names; a malformed, forged, expired or void one ends the call with
   etcd's Unauthenticated "etcdserver: invalid auth token" (clientv3 then logs in again
   and retries), except on `PUBLIC_METHODS`, where it is ignored;
2. a client certificate the TLS handshake verified (the port requires them when it has a
   client CA): the user its common name names, as etcd does;
3. else no one (`ANONYMOUS`: refused while auth is enabled, as "etcdserver: user name is
   empty").
A stream's caller is named once, when it opens (etcd checks a watch's permission when it
is created); its tasks inherit it. The JSON gateway does not come through here: the HTTP
port's auth guard names its callers (raftkv.server.auth_guard), for the same servicers.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import grpc
import grpc.aio

from raftkv.etcd.call_stats import CallStats
from raftkv.etcd.calls import Context
from raftkv.etcd.errors import INVALID_AUTH_TOKEN
from raftkv.kv.auth_tokens import bearer_token
from raftkv.kv.authorization import Authorizer
from raftkv.kv.callers import ANONYMOUS, Caller, acting_as
from raftkv.kv.errors import InvalidToken

# Methods any client may call while auth is enabled, an invalid token or not (the HTTP
# guard's PUBLIC_ROUTES for the same methods): logging in, the auth status, where the
# members are and this member's status.
PUBLIC_METHODS: Final = frozenset(
    {
        "/etcdserverpb.Auth/Authenticate",
        "/etcdserverpb.Auth/AuthStatus",
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Maintenance/Status",
    }
)
# The metadata keys a token comes in, the first found winning.
TOKEN_KEYS: Final = ("token", "authorization")


def token_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of a call's metadata (see the module docstring), None if it has none."""
    found = {key.lower(): value for key, value in metadata or ()}
    for key in TOKEN_KEYS:
        value = found.get(key)
        if value:
            return bearer_token(value.decode() if isinstance(value, bytes) else value)
    return None


def common_name_of(auth_context: Mapping[str, Iterable[bytes]] | None) -> str | None:
    """The common name of the client certificate gRPC verified, if any."""
    for name in (auth_context or {}).get("x509_common_name") or ():
        return name.decode(errors="replace")
    return None


def caller_of(call: Context, authorizer: Authorizer, *, public: bool = False) -> Caller:
    """The caller `call`'s credentials name (see the module docstring); InvalidToken for
    a token that names no one now, unless `public`."""
    if not authorizer.enabled:
        return ANONYMOUS  # everything is allowed: no credentials to read (the hot path)
    token = token_of(call.invocation_metadata())
    if token is not None:
        try:
            return authorizer.caller_for_token(token)
        except InvalidToken:
            if not public:
                raise
            return ANONYMOUS
    common_name = common_name_of(call.auth_context())
    if common_name is not None:
        return authorizer.caller_for_certificate(common_name)
    return ANONYMOUS


Behavior = Callable[..., Any]
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
if TYPE_CHECKING:  # grpc's class is generic in its stubs only
    Handler = grpc.RpcMethodHandler[RequestT, ResponseT]


class CallerInterceptor(grpc.aio.ServerInterceptor):
    """Runs every handler of the port as its call's caller (see the module docstring).
    A call refused for its token is counted in `stats` under its method's name, as the
    unary calls `raftkv.etcd.calls.translated` counts."""

    def __init__(self, authorizer: Authorizer, stats: CallStats) -> None:
        self.authorizer = authorizer
        self.stats = stats
        # Method -> its handler as wrapped, made at its first call: the handler gRPC
        # resolves for a method is the same at every call, and wrapping it anew (closures,
        # a handler object, an inspection) cost every call. Bounded by the port's methods:
        # an unknown one has no handler and is never kept.
        self._wrapped_handlers: dict[str, tuple[Handler[Any, Any], Handler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[Handler[RequestT, ResponseT] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler[RequestT, ResponseT] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED
            return None
        method = handler_call_details.method
        known = self._wrapped_handlers.get(method)
        if known is not None and known[0] is handler:
            return cast("Handler[RequestT, ResponseT]", known[1])
        wrapped = self._wrapped(handler, method)
        self._wrapped_handlers[method] = (handler, wrapped)
        return wrapped

    def _wrapped(
        self, handler: Handler[RequestT, ResponseT], method: str
    ) -> Handler[RequestT, ResponseT]:
        public = method in PUBLIC_METHODS
        name = method.rsplit("/", 1)[-1]
        authorizer, stats = self.authorizer, self.stats

        async def named(call: Context) -> Caller:
            try:
                return caller_of(call, authorizer, public=public)
            except InvalidToken:
                if not (handler.request_streaming or handler.response_streaming):
                    stats.observe(name, INVALID_AUTH_TOKEN[0].name, 0.0)
                await call.abort(*INVALID_AUTH_TOKEN)

        def coroutine(behavior: Behavior) -> Behavior:
            async def run(request: Any, call: Context) -> Any:
                with acting_as(await named(call)):
                    return await behavior(request, call)

            return run

        def generator(behavior: Behavior) -> Behavior:
            # gRPC iterates a handler's async generator in the call's one task, so the
            # caller set around it holds at every step.
            async def run(request: Any, call: Context) -> AsyncIterator[Any]:
                with acting_as(await named(call)):
                    async for response in behavior(request, call):
                        yield response

            return run

        def wrap(behavior: Behavior | None) -> Any:
            assert behavior is not None, "the handler's shape names its behavior"
            # gRPC tells a handler's shape by its kind of function: keep it.
            return (
                generator(behavior) if inspect.isasyncgenfunction(behavior) else coroutine(behavior)
            )

        deserializer, serializer = handler.request_deserializer, handler.response_serializer
        wrapped: Handler[Any, Any]
        match handler.request_streaming, handler.response_streaming:
            case False, False:
                wrapped = grpc.unary_unary_rpc_method_handler(
                    wrap(handler.unary_unary), deserializer, serializer
                )
            case False, True:
                wrapped = grpc.unary_stream_rpc_method_handler(
                    wrap(handler.unary_stream), deserializer, serializer
                )
            case True, False:
                wrapped = grpc.stream_unary_rpc_method_handler(
                    wrap(handler.stream_unary), deserializer, serializer
                )
            case _:
                wrapped = grpc.stream_stream_rpc_method_handler(
                    wrap(handler.stream_stream), deserializer, serializer
                )
        return cast("Handler[RequestT, ResponseT]", wrapped)
