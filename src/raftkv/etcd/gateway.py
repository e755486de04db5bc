"""etcd's JSON gateway: `POST /v3/...` on the HTTP port, for clients that speak etcd's API
as JSON (etcd3gw, curl scripts written for etcd).

Each route takes one request message as JSON and answers one response message, with the
mapping etcd's gateway uses (protobuf's JSON mapping with the .proto's own field names:
bytes in base64, 64-bit integers as strings, fields at their default value left out). The
route calls the same servicer method the gRPC port does, so the two cannot differ; a
refusal answers etcd's gateway error body `{"error", "code", "message"}` (code: the gRPC
status number) with the HTTP status grpc-gateway gives that code.

Served here: the unary methods of KV, Lease, Cluster, Maintenance and Auth, and the streams
(`/v3/watch`, `/v3/lease/keepalive`, `/v3/maintenance/snapshot`) as newline-delimited
`{"result": ...}` lines (raftkv.etcd.gateway_streams).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn, assert_never, cast

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from raftkv.etcd.calls import Context
from raftkv.etcd.gateway_errors import Aborted, error_response
from raftkv.etcd.gateway_streams import Handler, stream_handler
from raftkv.etcd.maintenance_servicer import VERSION
from raftkv.etcd.proto import rpc_pb2
from raftkv.etcd.servicers import EtcdServicers


class _GatewayCall:
    """What a servicer's unary method uses of its gRPC context: no deadline (the service
    applies the server's request timeout), the client's address as gRPC names a peer, and
    `abort`, which ends the HTTP request with the status instead. (The caller is named by
    the HTTP port's auth guard, not from this stand-in.)"""

    def __init__(self, remote: str | None) -> None:
        self._code = grpc.StatusCode.OK
        self._remote = remote

    def peer(self) -> str:
        if self._remote is None:
            return "unknown"
        if ":" in self._remote:
            return f"ipv6:[{self._remote}]:0"
        return f"ipv4:{self._remote}:0"

    def time_remaining(self) -> float | None:
        return None

    def code(self) -> grpc.StatusCode:
        return self._code

    # What a generated servicer's method that is not implemented sets before it raises
    # NotImplementedError.
    def set_code(self, code: grpc.StatusCode) -> None:
        pass

    def set_details(self, details: str) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self._code = code
        raise Aborted(code, details)


class Shape(enum.Enum):
    """How a route's method takes requests and answers (its gRPC method's shape)."""

    UNARY = "unary"
    # One request, a stream of responses (Snapshot).
    SERVER_STREAM = "server_stream"
    # A stream of requests (the body's), a stream of responses (Watch, LeaseKeepAlive).
    BIDIRECTIONAL = "bidirectional"


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    path: str
    service: str
    method: str
    request: type[Message]
    shape: Shape = Shape.UNARY


# etcd's gateway paths (its .proto's google.api.http options), with the alternative paths
# etcd also binds.
ROUTES: Final = (
    GatewayRoute("/v3/kv/range", "kv", "Range", rpc_pb2.RangeRequest),
    GatewayRoute("/v3/kv/put", "kv", "Put", rpc_pb2.PutRequest),
    GatewayRoute("/v3/kv/deleterange", "kv", "DeleteRange", rpc_pb2.DeleteRangeRequest),
    GatewayRoute("/v3/kv/txn", "kv", "Txn", rpc_pb2.TxnRequest),
    GatewayRoute("/v3/kv/compaction", "kv", "Compact", rpc_pb2.CompactionRequest),
    GatewayRoute("/v3/watch", "watch", "Watch", rpc_pb2.WatchRequest, Shape.BIDIRECTIONAL),
    GatewayRoute("/v3/lease/grant", "lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest),
    GatewayRoute("/v3/lease/revoke", "lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest),
    GatewayRoute("/v3/kv/lease/revoke", "lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest),
    GatewayRoute(
        "/v3/lease/timetolive", "lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest
    ),
    GatewayRoute(
        "/v3/kv/lease/timetolive", "lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest
    ),
    GatewayRoute("/v3/lease/leases", "lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest),
    GatewayRoute(
        "/v3/lease/keepalive",
        "lease",
        "LeaseKeepAlive",
        rpc_pb2.LeaseKeepAliveRequest,
        Shape.BIDIRECTIONAL,
    ),
    GatewayRoute("/v3/kv/lease/leases", "lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest),
    GatewayRoute("/v3/cluster/member/add", "cluster", "MemberAdd", rpc_pb2.MemberAddRequest),
    GatewayRoute(
        "/v3/cluster/member/remove", "cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest
    ),
    GatewayRoute(
        "/v3/cluster/member/update", "cluster", "MemberUpdate", rpc_pb2.MemberUpdateRequest
    ),
    GatewayRoute("/v3/cluster/member/list", "cluster", "MemberList", rpc_pb2.MemberListRequest),
    GatewayRoute(
        "/v3/cluster/member/promote", "cluster", "MemberPromote", rpc_pb2.MemberPromoteRequest
    ),
    GatewayRoute("/v3/maintenance/alarm", "maintenance", "Alarm", rpc_pb2.AlarmRequest),
    GatewayRoute("/v3/maintenance/status", "maintenance", "Status", rpc_pb2.StatusRequest),
    GatewayRoute(
        "/v3/maintenance/defragment", "maintenance", "Defragment", rpc_pb2.DefragmentRequest
    ),
    GatewayRoute(
        "/v3/maintenance/snapshot",
        "maintenance",
        "Snapshot",
        rpc_pb2.SnapshotRequest,
        Shape.SERVER_STREAM,
    ),
    GatewayRoute("/v3/maintenance/hash", "maintenance", "Hash", rpc_pb2.HashRequest),
    GatewayRoute("/v3/maintenance/hashkv", "maintenance", "HashKV", rpc_pb2.HashKVRequest),
    GatewayRoute(
        "/v3/maintenance/transfer-leadership",
        "maintenance",
        "MoveLeader",
        rpc_pb2.MoveLeaderRequest,
    ),
    GatewayRoute("/v3/auth/enable", "auth", "AuthEnable", rpc_pb2.AuthEnableRequest),
    GatewayRoute("/v3/auth/disable", "auth", "AuthDisable", rpc_pb2.AuthDisableRequest),
    GatewayRoute("/v3/auth/status", "auth", "AuthStatus", rpc_pb2.AuthStatusRequest),
    GatewayRoute("/v3/auth/authenticate", "auth", "Authenticate", rpc_pb2.AuthenticateRequest),
    GatewayRoute("/v3/auth/user/add", "auth", "UserAdd", rpc_pb2.AuthUserAddRequest),
    GatewayRoute("/v3/auth/user/get", "auth", "UserGet", rpc_pb2.AuthUserGetRequest),
    GatewayRoute("/v3/auth/user/list", "auth", "UserList", rpc_pb2.AuthUserListRequest),
    GatewayRoute("/v3/auth/user/delete", "auth", "UserDelete", rpc_pb2.AuthUserDeleteRequest),
    GatewayRoute(
        "/v3/auth/user/changepw",
        "auth",
        "UserChangePassword",
        rpc_pb2.AuthUserChangePasswordRequest,
    ),
    GatewayRoute("/v3/auth/user/grant", "auth", "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest),
    GatewayRoute(
        "/v3/auth/user/revoke", "auth", "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest
    ),
    GatewayRoute("/v3/auth/role/add", "auth", "RoleAdd", rpc_pb2.AuthRoleAddRequest),
    GatewayRoute("/v3/auth/role/get", "auth", "RoleGet", rpc_pb2.AuthRoleGetRequest),
    GatewayRoute("/v3/auth/role/list", "auth", "RoleList", rpc_pb2.AuthRoleListRequest),
    GatewayRoute("/v3/auth/role/delete", "auth", "RoleDelete", rpc_pb2.AuthRoleDeleteRequest),
    GatewayRoute(
        "/v3/auth/role/grant", "auth", "RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest
    ),
    GatewayRoute(
        "/v3/auth/role/revoke",
        "auth",
        "RoleRevokePermission",
        rpc_pb2.AuthRoleRevokePermissionRequest,
    ),
)


async def version(request: web.Request) -> web.Response:
    """`GET /version`, as etcd answers it: the server and cluster versions, plain
    major.minor.patch (etcd's API level: gateway clients such as etcd3gw parse them as
    integers to find the API's path), and raftkv's own version beside them."""
    api_level, _, raftkv = VERSION.partition("+raftkv.")
    return web.json_response({"etcdserver": api_level, "etcdcluster": api_level, "raftkv": raftkv})


def gateway_routes(servicers: EtcdServicers) -> list[tuple[str, str, Handler]]:
    """(method, path, handler) of every gateway route, for the HTTP API's app to serve
    (behind its middlewares: metrics, body limits, the CORRUPT and removal guards)."""
    found: list[tuple[str, str, Handler]] = [("GET", "/version", version)]
    for route in ROUTES:
        method = getattr(getattr(servicers, route.service), route.method)
        handler: Handler
        match route.shape:
            case Shape.UNARY:
                handler = _handler(method, route.request)
            case Shape.SERVER_STREAM | Shape.BIDIRECTIONAL:
                handler = stream_handler(
                    method,
                    route.request,
                    bidirectional=route.shape is Shape.BIDIRECTIONAL,
                    service=servicers.context.service,
                )
            case _:
                assert_never(route.shape)
        found.append(("POST", route.path, handler))
    return found


Method = Callable[[Any, Context], Awaitable[Message]]


def _handler(method: Method, request_type: type[Message]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        message = request_type()
        try:
            if body.strip():
                json_format.Parse(body, message)
        except json_format.ParseError as error:
            # protobuf's message goes on with the list of every field: its first line says it.
            reason = str(error).splitlines()[0] if str(error) else "not JSON"
            name = request_type.DESCRIPTOR.name
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT, f"invalid JSON for {name}: {reason}"
            )
        try:
            answer = await method(message, cast(Context, _GatewayCall(request.remote)))
        except Aborted as refused:
            return error_response(refused.code, refused.message)
        except NotImplementedError:
            return error_response(
                grpc.StatusCode.UNIMPLEMENTED, "raftkv: this method is not served yet"
            )
        text = json_format.MessageToJson(answer, preserving_proto_field_name=True, indent=None)
        return web.Response(text=text, content_type="application/json")

    return handle
