"""Users, roles and logins: the `/v1/auth` routes' requests and answers.

Keys of permissions are written like the KV routes' keys (UTF-8, or base64 with
`encoding=base64`); a permission's range follows the range convention of `GET /v1/kv`
(`range_end` "" the key alone, "\\u0000" every key from it on) or `prefix: true`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "AuthStatusAnswer",
    "AuthenticateAnswer",
    "AuthenticateBody",
    "GrantRoleBody",
    "PasswordBody",
    "PermissionAnswer",
    "PermissionBody",
    "RoleAnswer",
    "RoleBody",
    "RolesAnswer",
    "UserAnswer",
    "UserBody",
    "UsersAnswer",
]

PermissionKind = Literal["read", "write", "readwrite"]


class AuthenticateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/auth/authenticate`: log in as `name`."""

    name: str
    password: str


class AuthenticateAnswer(msgspec.Struct, frozen=True):
    """A token to send as `Authorization: Bearer <token>` to any member, valid `ttl_s`
    seconds (or until the user's password changes, the user is deleted or auth is
    disabled)."""

    token: str
    ttl_s: int


class AuthStatusAnswer(msgspec.Struct, frozen=True):
    """Whether authentication is enabled, and the auth revision (each change of users,
    roles or auth raises it)."""

    enabled: bool
    auth_revision: int


class UserBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/auth/users`: a new user. `no_password`: a user only a client certificate
    (its common name) can stand for."""

    name: str
    password: str = ""
    no_password: bool = False


class PasswordBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`PUT /v1/auth/users/{name}/password` (root, or the user itself)."""

    password: str


class GrantRoleBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/auth/users/{name}/roles`."""

    role: str


class UserAnswer(msgspec.Struct, frozen=True):
    name: str
    roles: list[str]
    # Whether the user has a password (else only a client certificate names it).
    has_password: bool = True


class UsersAnswer(msgspec.Struct, frozen=True):
    users: list[UserAnswer]


class RoleBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/auth/roles`."""

    name: str


class PermissionBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/auth/roles/{name}/permissions`: `kind` access to `key` alone, the range
    [key, range_end), every key from `key` on (range_end "\\u0000"), or every key starting
    with `key` (`prefix`)."""

    kind: PermissionKind
    key: str
    range_end: str = ""
    prefix: bool = False


class PermissionAnswer(msgspec.Struct, frozen=True):
    kind: PermissionKind
    key: str
    range_end: str


class RoleAnswer(msgspec.Struct, frozen=True):
    name: str
    permissions: list[PermissionAnswer]


class RolesAnswer(msgspec.Struct, frozen=True):
    roles: list[RoleAnswer]
