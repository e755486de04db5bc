"""Users, roles and key-range permissions: the replicated auth state, and what it permits.

Theory of operation. The auth state is one record of the store (`AUTH_KEY`, an
`AuthRecord`), changed only by the commands of `raftkv.kv.auth_commands` applied from the
log, so it is identical on every member at the same log index, a restart keeps it, a
snapshot and a backup carry it. Each change raises the auth `revision` by one; a client's
write carries the revision its permissions were checked at (`KvCommand.auth_revision`) and
the apply refuses it if the revision moved meanwhile (etcd's rule), so no member lets a
write through on permissions revoked before the write's entry.

Rules (etcd's):
- the role `root` is built in: it holds every permission and every admin right (users,
  roles, members, compaction, backups); it cannot be created, deleted or given permissions;
- auth can be enabled only while a user `root` holding the role `root` exists; while it is
  enabled, that user cannot be deleted nor lose the role;
- a permission is a kind (read, write, readwrite) on a key, a prefix or a range; a user may
  read (or write) a range when the union of its roles' read (or write) ranges covers it;
- a token names a user and the revision that last set its password (`password_revision`):
  changing the password or deleting the user voids every token issued before; a disable and
  enable changes the signing key and voids them all.

Bounds: MAX_USERS users, MAX_ROLES roles, MAX_ROLES_PER_USER roles a user holds,
MAX_PERMISSIONS_PER_ROLE permissions a role holds, names of MAX_NAME_BYTES: the whole
record stays small enough to rewrite on every change (auth changes are rare).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Final, Literal, assert_never

import msgspec

from raftkv.kv.auth_commands import (
    AuthDisable,
    AuthEnable,
    AuthRequest,
    Permission,
    RoleAdd,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    UserAdd,
    UserChangePassword,
    UserDelete,
    UserGrantRole,
    UserRevokeRole,
)
from raftkv.kv.errors import (
    InvalidRequest,
    LimitExceeded,
    PermissionNotGranted,
    ProtectedAuthChange,
    RoleAlreadyGranted,
    RoleExists,
    RoleNotFound,
    RoleNotGranted,
    RootNotReady,
    UserExists,
    UserNotFound,
)
from raftkv.kv.layout import (
    AUTH_KEY,
    AuthRecord,
    PermissionRecord,
    RoleRecord,
    UserRecord,
    decode_record,
    encode_record,
)
from raftkv.kv.staging import StagedWrites

ROOT: Final = "root"
MAX_USERS: Final = 1000
MAX_ROLES: Final = 1000
MAX_ROLES_PER_USER: Final = 64
MAX_PERMISSIONS_PER_ROLE: Final = 256
MAX_NAME_BYTES: Final = 128
MAX_PASSWORD_HASH_BYTES: Final = 512
MAX_PERMISSION_KEY_BYTES: Final = 4096
SIGNING_KEY_BYTES: Final = 32

Access = Literal["read", "write"]
_RECORD_DECODER = msgspec.msgpack.Decoder(AuthRecord)
# The state of a store that never applied an auth change.
_INITIAL = AuthRecord(enabled=False, revision=1, signing_key=b"", users=[], roles=[])


@dataclass(frozen=True, slots=True)
class _Interval:
    """[start, end) of keys; end None: to the last key."""

    start: bytes
    end: bytes | None


def _interval(key: bytes, range_end: bytes) -> _Interval | None:
    """The keys of (key, range_end) by the range convention, None if it has none."""
    if range_end == b"":
        return _Interval(key, key + b"\0")
    if range_end == b"\0":
        return _Interval(key, None)
    return _Interval(key, range_end) if key < range_end else None


def _covers(intervals: list[_Interval], wanted: _Interval) -> bool:
    """Whether the union of `intervals` (sorted by start) holds every key of `wanted`."""
    reached: bytes | None = wanted.start
    for interval in intervals:
        if reached is None:
            return True
        if interval.start > reached:
            return False
        if interval.end is None or interval.end > reached:
            reached = interval.end
        if reached is not None and wanted.end is not None and reached >= wanted.end:
            return True
    return reached is None or (wanted.end is not None and reached >= wanted.end)


class AuthState:
    """The auth record of a store (see the module docstring): read once when the store
    opens, kept in memory, each change staged with the `apply` call's other writes.
    Single-threaded, like the store."""

    def __init__(self, staged: StagedWrites) -> None:
        self.staged = staged
        data = staged.get(AUTH_KEY)
        # Invariant: what AUTH_KEY holds (staged writes included), or _INITIAL if absent.
        self.record = _INITIAL if data is None else decode_record(_RECORD_DECODER, AUTH_KEY, data)
        self._users = {user.name: user for user in self.record.users}
        self._roles = {role.name: role for role in self.record.roles}
        # Each user's ranges by access, merged from its roles; None for root. Rebuilt on
        # demand, dropped on every change.
        self._ranges: dict[tuple[str, Access], list[_Interval] | None] = {}

    # -- queries ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.record.enabled

    @property
    def revision(self) -> int:
        return self.record.revision

    @property
    def stamp(self) -> int:
        """What a command checked against this state carries (`KvCommand.auth_revision`):
        the revision, or 0 while auth was never used (no record: commands then encode
        exactly as before auth existed, so members of an older version decode them)."""
        return 0 if self.record is _INITIAL else self.record.revision

    @property
    def signing_key(self) -> bytes:
        return self.record.signing_key

    def user(self, name: str) -> UserRecord | None:
        return self._users.get(name)

    def role(self, name: str) -> RoleRecord | None:
        if name == ROOT:
            return RoleRecord(ROOT, [])
        return self._roles.get(name)

    def users(self) -> list[UserRecord]:
        return list(self.record.users)

    def roles(self) -> list[RoleRecord]:
        """Every role, the built-in root among them, by name."""
        roles = [*self.record.roles, RoleRecord(ROOT, [])]
        return sorted(roles, key=lambda role: role.name)

    def is_root(self, name: str) -> bool:
        user = self._users.get(name)
        return user is not None and ROOT in user.roles

    def permits(self, name: str, access: Access, key: bytes, range_end: bytes) -> bool:
        """Whether user `name` may `access` every key of (key, range_end). An empty range
        holds no key: permitted."""
        wanted = _interval(key, range_end)
        if wanted is None:
            return True
        cached = (name, access)
        if cached not in self._ranges:
            self._ranges[cached] = self._merged_ranges(name, access)
        ranges = self._ranges[cached]
        return ranges is None or _covers(ranges, wanted)

    def _merged_ranges(self, name: str, access: Access) -> list[_Interval] | None:
        user = self._users.get(name)
        if user is None:
            return []
        if ROOT in user.roles:
            return None
        found: list[_Interval] = []
        for role_name in user.roles:
            role = self._roles.get(role_name)
            for permission in role.permissions if role is not None else ():
                if permission.kind in (access, "readwrite"):
                    interval = _interval(permission.key, permission.range_end)
                    if interval is not None:
                        found.append(interval)
        found.sort(key=lambda interval: interval.start)
        return found

    # -- changes ----------------------------------------------------------------------------

    def apply(self, request: AuthRequest) -> None:
        """Apply one change (validated by `check_auth_request`); an AuthConflict or
        AuthNotFound subclass (nothing changed) if the state refuses it."""
        users, roles = dict(self._users), dict(self._roles)
        enabled, signing_key = self.record.enabled, self.record.signing_key
        match request:
            case AuthEnable():
                if enabled:
                    return
                if not self.is_root(ROOT):
                    raise RootNotReady(
                        "auth enable needs a user root holding the role root: "
                        "`raftkv user add root` then `raftkv user grant-role root root`",
                        root_user_exists=ROOT in users,
                    )
                enabled, signing_key = True, request.signing_key
            case AuthDisable():
                if not enabled:
                    return
                enabled, signing_key = False, b""
            case UserAdd():
                if request.name in users:
                    raise UserExists(f"user {request.name!r} exists already")
                if len(users) >= MAX_USERS:
                    raise LimitExceeded("users", len(users) + 1, "MAX_USERS", MAX_USERS)
                users[request.name] = UserRecord(
                    request.name, request.password_hash, [], self.revision + 1
                )
            case UserDelete():
                self._existing_user(request.name)
                if enabled and request.name == ROOT:
                    raise ProtectedAuthChange("user root cannot be deleted while auth is enabled")
                del users[request.name]
            case UserChangePassword():
                user = self._existing_user(request.name)
                users[user.name] = msgspec.structs.replace(
                    user, password_hash=request.password_hash, password_revision=self.revision + 1
                )
            case UserGrantRole():
                user = self._existing_user(request.name)
                if request.role != ROOT and request.role not in roles:
                    raise RoleNotFound(f"role {request.role!r} does not exist")
                if request.role in user.roles:
                    raise RoleAlreadyGranted(
                        f"user {user.name!r} holds role {request.role!r} already"
                    )
                if len(user.roles) >= MAX_ROLES_PER_USER:
                    raise LimitExceeded(
                        "roles of a user",
                        len(user.roles) + 1,
                        "MAX_ROLES_PER_USER",
                        MAX_ROLES_PER_USER,
                    )
                users[user.name] = msgspec.structs.replace(
                    user, roles=sorted([*user.roles, request.role])
                )
            case UserRevokeRole():
                user = self._existing_user(request.name)
                if request.role not in user.roles:
                    raise RoleNotGranted(f"user {user.name!r} does not hold role {request.role!r}")
                if enabled and user.name == ROOT and request.role == ROOT:
                    raise ProtectedAuthChange(
                        "user root cannot lose the role root while auth is enabled"
                    )
                users[user.name] = msgspec.structs.replace(
                    user, roles=[role for role in user.roles if role != request.role]
                )
            case RoleAdd():
                if request.name == ROOT or request.name in roles:
                    raise RoleExists(f"role {request.name!r} exists already")
                if len(roles) >= MAX_ROLES:
                    raise LimitExceeded("roles", len(roles) + 1, "MAX_ROLES", MAX_ROLES)
                roles[request.name] = RoleRecord(request.name, [])
            case RoleDelete():
                self._editable_role(request.name)
                del roles[request.name]
                for user in list(users.values()):
                    if request.name in user.roles:
                        users[user.name] = msgspec.structs.replace(
                            user, roles=[role for role in user.roles if role != request.name]
                        )
            case RoleGrantPermission():
                role = self._editable_role(request.name)
                granted = request.permission
                kept = [
                    held
                    for held in role.permissions
                    if (held.key, held.range_end) != (granted.key, granted.range_end)
                ]
                if len(kept) >= MAX_PERMISSIONS_PER_ROLE:
                    raise LimitExceeded(
                        "permissions of a role",
                        len(kept) + 1,
                        "MAX_PERMISSIONS_PER_ROLE",
                        MAX_PERMISSIONS_PER_ROLE,
                    )
                record = PermissionRecord(granted.kind, granted.key, granted.range_end)
                bisect.insort(kept, record, key=lambda held: (held.key, held.range_end))
                roles[role.name] = RoleRecord(role.name, kept)
            case RoleRevokePermission():
                role = self._editable_role(request.name)
                kept = [
                    held
                    for held in role.permissions
                    if (held.key, held.range_end) != (request.key, request.range_end)
                ]
                if len(kept) == len(role.permissions):
                    raise PermissionNotGranted(
                        f"role {role.name!r} has no permission on that range "
                        f"({request.key[:64]!r}, {request.range_end[:64]!r})"
                    )
                roles[role.name] = RoleRecord(role.name, kept)
            case _:
                assert_never(request)
        self._write(
            AuthRecord(
                enabled=enabled,
                revision=self.revision + 1,
                signing_key=signing_key,
                users=[users[name] for name in sorted(users)],
                roles=[roles[name] for name in sorted(roles)],
            )
        )

    def _existing_user(self, name: str) -> UserRecord:
        user = self._users.get(name)
        if user is None:
            raise UserNotFound(f"user {name!r} does not exist")
        return user

    def _editable_role(self, name: str) -> RoleRecord:
        if name == ROOT:
            raise ProtectedAuthChange("role root is built in: it holds every permission already")
        role = self._roles.get(name)
        if role is None:
            raise RoleNotFound(f"role {name!r} does not exist")
        return role

    def _write(self, record: AuthRecord) -> None:
        self.staged.put(AUTH_KEY, encode_record(record))
        self.record = record
        self._users = {user.name: user for user in record.users}
        self._roles = {role.name: role for role in record.roles}
        self._ranges.clear()


def check_name(what: str, name: str) -> None:
    """InvalidRequest unless `name` is a user or role name: 1..MAX_NAME_BYTES bytes of
    UTF-8 without control characters (they would be invisible in a listing) nor '/' (a
    name is a segment of the HTTP API's paths)."""
    size = len(name.encode())
    if size == 0:
        raise InvalidRequest(f"{what} name is empty")
    if size > MAX_NAME_BYTES:
        # A name's form, as its characters (400, not a limit's 413: it is often a path's).
        raise InvalidRequest(
            f"{what} name length is {size}, beyond MAX_NAME_BYTES={MAX_NAME_BYTES}"
        )
    if any(not character.isprintable() for character in name):
        raise InvalidRequest(f"{what} name {name[:64]!r} holds a control character")
    if "/" in name:
        raise InvalidRequest(f"{what} name {name[:64]!r} holds a '/'")


def check_permission(permission: Permission) -> None:
    """InvalidRequest unless the permission names a non-empty range."""
    for what, value in (("key", permission.key), ("range_end", permission.range_end)):
        if len(value) > MAX_PERMISSION_KEY_BYTES:
            raise LimitExceeded(
                f"permission {what} length",
                len(value),
                "MAX_PERMISSION_KEY_BYTES",
                MAX_PERMISSION_KEY_BYTES,
            )
    if permission.key == b"":
        raise InvalidRequest("permission key is empty (every key: key \\0 with range_end \\0)")
    if _interval(permission.key, permission.range_end) is None:
        raise InvalidRequest(
            f"permission range is empty or inverted: range_end {permission.range_end[:64]!r} "
            f"is not after key {permission.key[:64]!r}"
        )


def check_auth_request(request: AuthRequest) -> None:
    """Raise an InvalidRequest naming the first rule `request` breaks."""
    match request:
        case AuthEnable():
            if len(request.signing_key) != SIGNING_KEY_BYTES:
                raise InvalidRequest(f"the signing key must be {SIGNING_KEY_BYTES} bytes")
        case AuthDisable():
            pass
        case UserAdd() | UserChangePassword():
            check_name("user", request.name)
            size = len(request.password_hash.encode())
            if size > MAX_PASSWORD_HASH_BYTES:
                raise LimitExceeded(
                    "password hash length", size, "MAX_PASSWORD_HASH_BYTES", MAX_PASSWORD_HASH_BYTES
                )
        case UserDelete():
            check_name("user", request.name)
        case UserGrantRole() | UserRevokeRole():
            check_name("user", request.name)
            check_name("role", request.role)
        case RoleAdd() | RoleDelete():
            check_name("role", request.name)
        case RoleGrantPermission():
            check_name("role", request.name)
            check_permission(request.permission)
        case RoleRevokePermission():
            check_name("role", request.name)
            check_permission(Permission("read", request.key, request.range_end))
        case _:
            assert_never(request)
