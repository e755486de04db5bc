"""The `/v1/auth` routes as `protocol.Request`s (sans-I/O, like `protocol`): logins are
the credentials' business (`raftkv.client.credentials`); these are auth's status, enabling
it, and the users and roles.

Kinds: the listings are reads; every change is retried like a session write after an
unknown outcome, because each is safe to repeat or says so: a repeated add finds the user
or role there (409 `auth_conflict`), a repeated delete finds it gone (404
`auth_not_found`), a repeated grant or password change sets the same again (a password
change draws a new salt, which voids tokens again: harmless)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

import msgspec

from raftkv.api.auth import (
    AuthStatusAnswer,
    GrantRoleBody,
    PasswordBody,
    PermissionBody,
    PermissionKind,
    RoleAnswer,
    RoleBody,
    RolesAnswer,
    UserAnswer,
    UserBody,
    UsersAnswer,
)
from raftkv.client.protocol import Decoded, Kind, Request, from_base64, read_answer, to_base64
from raftkv.client.results import AuthStatus, Permission, Role, User
from raftkv.client.txn import Data, to_bytes

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
_BASE64 = ("encoding", "base64")


def _segment(name: str) -> str:
    return quote(name, safe="")


def _status(content: bytes, endpoint: str) -> Decoded[AuthStatus]:
    answer = read_answer(AuthStatusAnswer, content)
    return Decoded(AuthStatus(answer.enabled, answer.auth_revision), None)


def _user_of(answer: UserAnswer) -> User:
    return User(answer.name, tuple(answer.roles), answer.has_password)


def _user(content: bytes, endpoint: str) -> Decoded[User]:
    return Decoded(_user_of(read_answer(UserAnswer, content)), None)


def _users(content: bytes, endpoint: str) -> Decoded[tuple[User, ...]]:
    return Decoded(tuple(_user_of(user) for user in read_answer(UsersAnswer, content).users), None)


def _role_of(answer: RoleAnswer) -> Role:
    return Role(
        answer.name,
        tuple(
            Permission(
                permission.kind,
                from_base64(permission.key, "permission key"),
                from_base64(permission.range_end, "permission range_end"),
            )
            for permission in answer.permissions
        ),
    )


def _role(content: bytes, endpoint: str) -> Decoded[Role]:
    return Decoded(_role_of(read_answer(RoleAnswer, content)), None)


def _roles(content: bytes, endpoint: str) -> Decoded[tuple[Role, ...]]:
    return Decoded(tuple(_role_of(role) for role in read_answer(RolesAnswer, content).roles), None)


def _write(
    method: str,
    path: str,
    body: msgspec.Struct | None,
    decode: Callable[[bytes, str], Decoded[T]],
    description: str,
    *,
    params: tuple[tuple[str, str], ...] = (),
) -> Request[T]:
    encoded = None if body is None else _encoder.encode(body)
    return Request(method, path, params, encoded, Kind.WRITE, True, decode, description)


def auth_status() -> Request[AuthStatus]:
    return Request("GET", "/v1/auth/status", (), None, Kind.READ, False, _status, "auth status")


def auth_enable() -> Request[AuthStatus]:
    return _write("POST", "/v1/auth/enable", None, _status, "enable auth")


def auth_disable() -> Request[AuthStatus]:
    return _write("POST", "/v1/auth/disable", None, _status, "disable auth")


def users() -> Request[tuple[User, ...]]:
    return Request("GET", "/v1/auth/users", (), None, Kind.READ, True, _users, "list users")


def user(name: str) -> Request[User]:
    path = f"/v1/auth/users/{_segment(name)}"
    return Request("GET", path, (), None, Kind.READ, True, _user, f"get user {name!r}")


def add_user(name: str, password: str | None) -> Request[User]:
    body = UserBody(name, password or "", no_password=password is None)
    return _write("POST", "/v1/auth/users", body, _user, f"add user {name!r}")


def delete_user(name: str) -> Request[AuthStatus]:
    path = f"/v1/auth/users/{_segment(name)}"
    return _write("DELETE", path, None, _status, f"delete user {name!r}")


def change_password(name: str, password: str) -> Request[AuthStatus]:
    path = f"/v1/auth/users/{_segment(name)}/password"
    return _write("PUT", path, PasswordBody(password), _status, f"change the password of {name!r}")


def grant_role(name: str, role: str) -> Request[User]:
    path = f"/v1/auth/users/{_segment(name)}/roles"
    return _write("POST", path, GrantRoleBody(role), _user, f"grant role {role!r} to {name!r}")


def revoke_role(name: str, role: str) -> Request[User]:
    path = f"/v1/auth/users/{_segment(name)}/roles/{_segment(role)}"
    return _write("DELETE", path, None, _user, f"revoke role {role!r} from {name!r}")


def roles() -> Request[tuple[Role, ...]]:
    return Request("GET", "/v1/auth/roles", (_BASE64,), None, Kind.READ, True, _roles, "list roles")


def role(name: str) -> Request[Role]:
    path = f"/v1/auth/roles/{_segment(name)}"
    return Request("GET", path, (_BASE64,), None, Kind.READ, True, _role, f"get role {name!r}")


def add_role(name: str) -> Request[Role]:
    return _write(
        "POST", "/v1/auth/roles", RoleBody(name), _role, f"add role {name!r}", params=(_BASE64,)
    )


def delete_role(name: str) -> Request[AuthStatus]:
    path = f"/v1/auth/roles/{_segment(name)}"
    return _write("DELETE", path, None, _status, f"delete role {name!r}")


def grant_permission(
    name: str, kind: PermissionKind, key: Data, range_end: Data = b"", *, prefix: bool = False
) -> Request[Role]:
    if kind not in ("read", "write", "readwrite"):
        raise ValueError(f"permission kind must be read, write or readwrite, got {kind!r}")
    body = PermissionBody(
        kind,
        to_base64(to_bytes(key, "key")),
        to_base64(to_bytes(range_end, "range_end")),
        prefix=prefix,
    )
    path = f"/v1/auth/roles/{_segment(name)}/permissions"
    return _write("POST", path, body, _role, f"grant {kind} to role {name!r}", params=(_BASE64,))


def revoke_permission(
    name: str, key: Data, range_end: Data = b"", *, prefix: bool = False
) -> Request[Role]:
    params = (
        _BASE64,
        ("key", to_base64(to_bytes(key, "key"))),
        ("range_end", to_base64(to_bytes(range_end, "range_end"))),
        ("prefix", "true" if prefix else "false"),
    )
    path = f"/v1/auth/roles/{_segment(name)}/permissions"
    return _write(
        "DELETE", path, None, _role, f"revoke a permission of role {name!r}", params=params
    )
