"""The log commands that change users, roles and permissions (`raftkv.kv.auth_state`), and
their answer.

Passwords never enter the log: the node that receives a password hashes it
(`raftkv.kv.passwords`) and proposes the hash, so every member stores the same bytes and no
member ever runs the slow hash at apply time. The token signing key of `AuthEnable` is
drawn by the proposer for the same reason (apply must be deterministic).

Names (users and roles) are text of 1..MAX_NAME_BYTES bytes without control characters;
`raftkv.kv.auth_state.check_auth_request` states every rule. Their answer is
`raftkv.kv.commands.AuthChangeResponse`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

PermissionKind = Literal["read", "write", "readwrite"]


class Permission(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """`kind` access to a key range, by the range convention of `raftkv.kv.commands`:
    `range_end` empty is the key alone, b"\\0" every key from `key` on, else [key,
    range_end). `key` b"\\0" with range_end b"\\0" is every key."""

    kind: PermissionKind
    key: bytes
    range_end: bytes = b""


class AuthEnable(msgspec.Struct, tag="auth_enable", frozen=True, forbid_unknown_fields=True):
    """Turn authentication on (refused unless user root exists and holds role root).
    `signing_key`: the key tokens are signed with from now on, drawn by the proposer; a new
    one each time, so a disable and enable ends every token."""

    signing_key: bytes


class AuthDisable(msgspec.Struct, tag="auth_disable", frozen=True, forbid_unknown_fields=True):
    pass


class UserAdd(msgspec.Struct, tag="user_add", frozen=True, forbid_unknown_fields=True):
    """Create user `name`. `password_hash` "" makes a user without a password, who can
    only be named by a client certificate (etcd's `--no-password`)."""

    name: str
    password_hash: str


class UserDelete(msgspec.Struct, tag="user_delete", frozen=True, forbid_unknown_fields=True):
    name: str


class UserChangePassword(
    msgspec.Struct, tag="user_change_password", frozen=True, forbid_unknown_fields=True
):
    """Set user `name`'s password; every token issued to the user before ends."""

    name: str
    password_hash: str


class UserGrantRole(msgspec.Struct, tag="user_grant_role", frozen=True, forbid_unknown_fields=True):
    name: str
    role: str


class UserRevokeRole(
    msgspec.Struct, tag="user_revoke_role", frozen=True, forbid_unknown_fields=True
):
    name: str
    role: str


class RoleAdd(msgspec.Struct, tag="role_add", frozen=True, forbid_unknown_fields=True):
    name: str


class RoleDelete(msgspec.Struct, tag="role_delete", frozen=True, forbid_unknown_fields=True):
    """Delete role `name` and take it from every user who holds it."""

    name: str


class RoleGrantPermission(
    msgspec.Struct, tag="role_grant_permission", frozen=True, forbid_unknown_fields=True
):
    """Give role `name` a permission; one on the same range as an existing one replaces
    it (etcd's rule: the kinds are not merged)."""

    name: str
    permission: Permission


class RoleRevokePermission(
    msgspec.Struct, tag="role_revoke_permission", frozen=True, forbid_unknown_fields=True
):
    """Take from role `name` its permission on exactly this range."""

    name: str
    key: bytes
    range_end: bytes = b""


AuthRequest = (
    AuthEnable
    | AuthDisable
    | UserAdd
    | UserDelete
    | UserChangePassword
    | UserGrantRole
    | UserRevokeRole
    | RoleAdd
    | RoleDelete
    | RoleGrantPermission
    | RoleRevokePermission
)
