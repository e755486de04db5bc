"""etcd's Auth service — AuthEnable, AuthDisable, AuthStatus, Authenticate, User*, Role* —
over the node's `AuthService` (raftkv.kv.auth_service), the one the HTTP API's /v1/auth
routes call: a translation, no rules of its own. Who may do what is `KvService`'s check of
the call's caller (raftkv.etcd.credentials names it); refusals are etcd's statuses
(raftkv.etcd.errors).

As etcd answers:
- AuthEnable while enabled and AuthDisable while disabled succeed, changing nothing;
- UserGrantRole of a role the user holds already succeeds, changing nothing (etcd ignores
  it; raftkv's AuthService refuses it);
- Authenticate counts failures against the client's address (the peer's host, shared with
  the HTTP API's logins), as raftkv's failed-login limit does (docs/etcd.md);
- permissions are etcd's authpb.Permission: READ, WRITE or READWRITE on (key, range_end)
  by the range convention raftkv's permissions share.
Differences: a password hashed by the client (`hashedPassword`, which etcd's own clients
never send) is refused, and an empty password too (raftkv's rule); the role root is built
in (docs/etcd.md).
"""

from __future__ import annotations

from typing import Final

import grpc

from raftkv.etcd.calls import Context, translated
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.errors import PERMISSION_NOT_GIVEN, EtcdError
from raftkv.etcd.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.kv.auth_commands import Permission, PermissionKind
from raftkv.kv.commands import AuthChangeResponse
from raftkv.kv.errors import RoleAlreadyGranted
from raftkv.kv.layout import PermissionRecord

_KIND_OF: Final[dict[int, PermissionKind]] = {
    auth_pb2.Permission.READ: "read",
    auth_pb2.Permission.WRITE: "write",
    auth_pb2.Permission.READWRITE: "readwrite",
}
_TYPE_OF: Final[dict[PermissionKind, auth_pb2.Permission.Type]] = {
    "read": auth_pb2.Permission.READ,
    "write": auth_pb2.Permission.WRITE,
    "readwrite": auth_pb2.Permission.READWRITE,
}
_HASHED_PASSWORD: Final = (
    grpc.StatusCode.INVALID_ARGUMENT,
    "raftkv: hashedPassword is not accepted: send the password, raftkv hashes it",
)


def source_of(peer: str) -> str:
    """The client's host in a gRPC peer string ("ipv4:10.0.0.1:5000", "ipv6:[::1]:5000",
    "unix:/path"): what failed logins are counted against, as the HTTP API counts them
    by the client's address (each new connection's port must not be a fresh source)."""
    scheme, _, address = peer.partition(":")
    if scheme in ("ipv4", "ipv6"):
        host = address.rpartition(":")[0] or address
        return host.removeprefix("[").removesuffix("]")
    return peer or "unknown"


def permission_of(perm: auth_pb2.Permission) -> Permission:
    kind = _KIND_OF.get(perm.permType)
    if kind is None:
        raise EtcdError(
            (grpc.StatusCode.INVALID_ARGUMENT, f"etcdserver: unknown permType {perm.permType}")
        )
    return Permission(kind, perm.key, perm.range_end)


def perm_of(record: PermissionRecord) -> auth_pb2.Permission:
    return auth_pb2.Permission(
        permType=_TYPE_OF[record.kind], key=record.key, range_end=record.range_end
    )


class AuthServicer(rpc_pb2_grpc.AuthServicer):
    def __init__(self, context: EtcdContext) -> None:
        self.context = context
        self.auth = context.auth

    def _changed(self, response: AuthChangeResponse) -> rpc_pb2.ResponseHeader:
        return self.context.header(response.header.revision)

    # -- auth itself ------------------------------------------------------------------------

    @translated
    async def AuthEnable(
        self, request: rpc_pb2.AuthEnableRequest, call: Context
    ) -> rpc_pb2.AuthEnableResponse:
        changed = await self.auth.enable(timeout=self.context.timeout(call))
        return rpc_pb2.AuthEnableResponse(header=self._changed(changed))

    @translated
    async def AuthDisable(
        self, request: rpc_pb2.AuthDisableRequest, call: Context
    ) -> rpc_pb2.AuthDisableResponse:
        changed = await self.auth.disable(timeout=self.context.timeout(call))
        return rpc_pb2.AuthDisableResponse(header=self._changed(changed))

    @translated
    async def AuthStatus(
        self, request: rpc_pb2.AuthStatusRequest, call: Context
    ) -> rpc_pb2.AuthStatusResponse:
        enabled, revision = self.auth.status()
        return rpc_pb2.AuthStatusResponse(
            header=self.context.header(), enabled=enabled, authRevision=revision
        )

    @translated
    async def Authenticate(
        self, request: rpc_pb2.AuthenticateRequest, call: Context
    ) -> rpc_pb2.AuthenticateResponse:
        login = await self.auth.authenticate(
            request.name,
            request.password,
            source_of(call.peer()),
            timeout=self.context.timeout(call),
        )
        return rpc_pb2.AuthenticateResponse(header=self.context.header(), token=login.token)

    # -- users ------------------------------------------------------------------------------

    @translated
    async def UserAdd(
        self, request: rpc_pb2.AuthUserAddRequest, call: Context
    ) -> rpc_pb2.AuthUserAddResponse:
        if request.hashedPassword:
            raise EtcdError(_HASHED_PASSWORD)
        no_password = request.HasField("options") and request.options.no_password
        changed = await self.auth.add_user(
            request.name,
            None if no_password else request.password,
            timeout=self.context.timeout(call),
        )
        return rpc_pb2.AuthUserAddResponse(header=self._changed(changed))

    @translated
    async def UserGet(
        self, request: rpc_pb2.AuthUserGetRequest, call: Context
    ) -> rpc_pb2.AuthUserGetResponse:
        user = await self.auth.user(request.name, timeout=self.context.timeout(call))
        return rpc_pb2.AuthUserGetResponse(header=self.context.header(), roles=user.roles)

    @translated
    async def UserList(
        self, request: rpc_pb2.AuthUserListRequest, call: Context
    ) -> rpc_pb2.AuthUserListResponse:
        users = await self.auth.users(timeout=self.context.timeout(call))
        return rpc_pb2.AuthUserListResponse(
            header=self.context.header(), users=[user.name for user in users]
        )

    @translated
    async def UserDelete(
        self, request: rpc_pb2.AuthUserDeleteRequest, call: Context
    ) -> rpc_pb2.AuthUserDeleteResponse:
        changed = await self.auth.delete_user(request.name, timeout=self.context.timeout(call))
        return rpc_pb2.AuthUserDeleteResponse(header=self._changed(changed))

    @translated
    async def UserChangePassword(
        self, request: rpc_pb2.AuthUserChangePasswordRequest, call: Context
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        if request.hashedPassword:
            raise EtcdError(_HASHED_PASSWORD)
        changed = await self.auth.change_password(
            request.name, request.password, timeout=self.context.timeout(call)
        )
        return rpc_pb2.AuthUserChangePasswordResponse(header=self._changed(changed))

    @translated
    async def UserGrantRole(
        self, request: rpc_pb2.AuthUserGrantRoleRequest, call: Context
    ) -> rpc_pb2.AuthUserGrantRoleResponse:
        try:
            changed = await self.auth.grant_role(
                request.user, request.role, timeout=self.context.timeout(call)
            )
        except RoleAlreadyGranted:
            return rpc_pb2.AuthUserGrantRoleResponse(header=self.context.header())
        return rpc_pb2.AuthUserGrantRoleResponse(header=self._changed(changed))

    @translated
    async def UserRevokeRole(
        self, request: rpc_pb2.AuthUserRevokeRoleRequest, call: Context
    ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        changed = await self.auth.revoke_role(
            request.name, request.role, timeout=self.context.timeout(call)
        )
        return rpc_pb2.AuthUserRevokeRoleResponse(header=self._changed(changed))

    # -- roles ------------------------------------------------------------------------------

    @translated
    async def RoleAdd(
        self, request: rpc_pb2.AuthRoleAddRequest, call: Context
    ) -> rpc_pb2.AuthRoleAddResponse:
        changed = await self.auth.add_role(request.name, timeout=self.context.timeout(call))
        return rpc_pb2.AuthRoleAddResponse(header=self._changed(changed))

    @translated
    async def RoleGet(
        self, request: rpc_pb2.AuthRoleGetRequest, call: Context
    ) -> rpc_pb2.AuthRoleGetResponse:
        role = await self.auth.role(request.role, timeout=self.context.timeout(call))
        return rpc_pb2.AuthRoleGetResponse(
            header=self.context.header(), perm=[perm_of(held) for held in role.permissions]
        )

    @translated
    async def RoleList(
        self, request: rpc_pb2.AuthRoleListRequest, call: Context
    ) -> rpc_pb2.AuthRoleListResponse:
        roles = await self.auth.roles(timeout=self.context.timeout(call))
        return rpc_pb2.AuthRoleListResponse(
            header=self.context.header(), roles=[role.name for role in roles]
        )

    @translated
    async def RoleDelete(
        self, request: rpc_pb2.AuthRoleDeleteRequest, call: Context
    ) -> rpc_pb2.AuthRoleDeleteResponse:
        changed = await self.auth.delete_role(request.role, timeout=self.context.timeout(call))
        return rpc_pb2.AuthRoleDeleteResponse(header=self._changed(changed))

    @translated
    async def RoleGrantPermission(
        self, request: rpc_pb2.AuthRoleGrantPermissionRequest, call: Context
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        if not request.HasField("perm"):
            raise EtcdError(PERMISSION_NOT_GIVEN)
        changed = await self.auth.grant_permission(
            request.name, permission_of(request.perm), timeout=self.context.timeout(call)
        )
        return rpc_pb2.AuthRoleGrantPermissionResponse(header=self._changed(changed))

    @translated
    async def RoleRevokePermission(
        self, request: rpc_pb2.AuthRoleRevokePermissionRequest, call: Context
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        changed = await self.auth.revoke_permission(
            request.role, request.key, request.range_end, timeout=self.context.timeout(call)
        )
        return rpc_pb2.AuthRoleRevokePermissionResponse(header=self._changed(changed))
