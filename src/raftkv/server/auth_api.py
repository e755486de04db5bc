"""The auth routes (`/v1/auth/...`): logins, auth on and off, users and roles.

Each calls `raftkv.kv.auth_service.AuthService` (the etcd API's Auth service calls the same),
which checks the caller (root for everything but a login, the status, and a user's own
record and password) and proposes each change through the log. Answers never carry a
password hash.
"""

from __future__ import annotations

from aiohttp import web

from raftkv.api.auth import (
    AuthenticateAnswer,
    AuthenticateBody,
    AuthStatusAnswer,
    GrantRoleBody,
    PasswordBody,
    PermissionAnswer,
    PermissionBody,
    RoleAnswer,
    RoleBody,
    RolesAnswer,
    UserAnswer,
    UserBody,
    UsersAnswer,
)
from raftkv.kv.auth_commands import Permission
from raftkv.kv.auth_service import AuthService
from raftkv.kv.layout import RoleRecord, UserRecord
from raftkv.server.http_common import (
    ApiError,
    Codec,
    bool_query,
    decode_body,
    json_answer,
    key_range,
)

__all__ = ["AuthHandlers"]


def user_answer(user: UserRecord) -> UserAnswer:
    return UserAnswer(user.name, list(user.roles), has_password=bool(user.password_hash))


def role_answer(role: RoleRecord, codec: Codec) -> RoleAnswer:
    return RoleAnswer(
        role.name,
        [
            PermissionAnswer(
                permission.kind,
                codec.encode(permission.key, "permission key"),
                codec.encode(permission.range_end, "permission range_end"),
            )
            for permission in role.permissions
        ],
    )


class AuthHandlers:
    def __init__(self, auth: AuthService, timeout: float, max_body_bytes: int) -> None:
        self.auth = auth
        # How long a change waits for its outcome, a listing for its read point.
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes

    def _status(self) -> web.Response:
        enabled, revision = self.auth.status()
        return json_answer(AuthStatusAnswer(enabled, revision))

    async def authenticate(self, request: web.Request) -> web.Response:
        body = await decode_body(request, AuthenticateBody, self.max_body_bytes)
        login = await self.auth.authenticate(
            body.name, body.password, request.remote or "unknown", timeout=self.timeout
        )
        return json_answer(AuthenticateAnswer(login.token, login.ttl_s))

    async def status(self, request: web.Request) -> web.Response:
        return self._status()

    async def enable(self, request: web.Request) -> web.Response:
        await self.auth.enable(timeout=self.timeout)
        return self._status()

    async def disable(self, request: web.Request) -> web.Response:
        await self.auth.disable(timeout=self.timeout)
        return self._status()

    # -- users ------------------------------------------------------------------------------

    async def users(self, request: web.Request) -> web.Response:
        found = await self.auth.users(timeout=self.timeout)
        return json_answer(UsersAnswer([user_answer(user) for user in found]))

    async def add_user(self, request: web.Request) -> web.Response:
        body = await decode_body(request, UserBody, self.max_body_bytes)
        if body.no_password == bool(body.password):
            raise ApiError(
                400, "invalid_request", "give a password, or no_password: true (not both)"
            )
        password = None if body.no_password else body.password
        await self.auth.add_user(body.name, password, timeout=self.timeout)
        return await self._user(body.name)

    async def _user(self, name: str) -> web.Response:
        return json_answer(user_answer(await self.auth.user(name, timeout=self.timeout)))

    async def user(self, request: web.Request) -> web.Response:
        return await self._user(request.match_info["name"])

    async def delete_user(self, request: web.Request) -> web.Response:
        await self.auth.delete_user(request.match_info["name"], timeout=self.timeout)
        return self._status()

    async def change_password(self, request: web.Request) -> web.Response:
        body = await decode_body(request, PasswordBody, self.max_body_bytes)
        await self.auth.change_password(
            request.match_info["name"], body.password, timeout=self.timeout
        )
        return self._status()

    async def grant_role(self, request: web.Request) -> web.Response:
        body = await decode_body(request, GrantRoleBody, self.max_body_bytes)
        name = request.match_info["name"]
        await self.auth.grant_role(name, body.role, timeout=self.timeout)
        return await self._user(name)

    async def revoke_role(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self.auth.revoke_role(name, request.match_info["role"], timeout=self.timeout)
        return await self._user(name)

    # -- roles ------------------------------------------------------------------------------

    async def roles(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        found = await self.auth.roles(timeout=self.timeout)
        return json_answer(RolesAnswer([role_answer(role, codec) for role in found]))

    async def _role(self, name: str, codec: Codec) -> web.Response:
        return json_answer(role_answer(await self.auth.role(name, timeout=self.timeout), codec))

    async def add_role(self, request: web.Request) -> web.Response:
        body = await decode_body(request, RoleBody, self.max_body_bytes)
        await self.auth.add_role(body.name, timeout=self.timeout)
        return await self._role(body.name, Codec.of(request))

    async def role(self, request: web.Request) -> web.Response:
        return await self._role(request.match_info["name"], Codec.of(request))

    async def delete_role(self, request: web.Request) -> web.Response:
        await self.auth.delete_role(request.match_info["name"], timeout=self.timeout)
        return self._status()

    async def grant_permission(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        body = await decode_body(request, PermissionBody, self.max_body_bytes)
        key, range_end = key_range(
            codec.decode(body.key, "key"), codec.decode(body.range_end, "range_end"), body.prefix
        )
        name = request.match_info["name"]
        await self.auth.grant_permission(
            name, Permission(body.kind, key, range_end), timeout=self.timeout
        )
        return await self._role(name, codec)

    async def revoke_permission(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        query = request.query
        key, range_end = key_range(
            codec.decode(query.get("key", ""), "key"),
            codec.decode(query.get("range_end", ""), "range_end"),
            bool_query(request, "prefix"),
        )
        name = request.match_info["name"]
        await self.auth.revoke_permission(name, key, range_end, timeout=self.timeout)
        return await self._role(name, codec)
