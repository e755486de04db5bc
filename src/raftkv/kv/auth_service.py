"""`AuthService`: logins, and the changes and listings of users and roles, on a running node.

The one implementation underneath the doors: raftkv's `/v1/auth` routes and etcd's Auth
service both call it. Each change is checked (`raftkv.kv.authorization`) before any
password is hashed, then proposed through the log (`KvService.change_auth`); listings read
the auth state after a read point (linearizable), as the data is read.

Logins (`authenticate`):
- refused while auth is disabled (AuthNotEnabled: there is nothing to log in to);
- failures are counted per source (the client's address) in a token bucket: a source may
  fail `max_failed_logins` times in a row, then one more time per
  `failed_login_refill_s`; beyond, TooManyFailedLogins saying when to retry, before any
  password is checked (an online guesser gets a handful of tries a minute);
- an unknown user costs the same hash as a known one (a dummy), so timing does not tell
  which user names exist;
- at most `max_concurrent_hashes` password hashes run at once (each is ~70 ms of a core and
  32 MiB), off the event loop; the others wait their turn.
A login answers a token (`raftkv.kv.auth_tokens`) valid `token_ttl_s` on every member.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

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
from raftkv.kv.auth_state import SIGNING_KEY_BYTES, AuthState, check_auth_request
from raftkv.kv.auth_tokens import TokenClaims, issue_token
from raftkv.kv.callers import current_caller
from raftkv.kv.commands import AuthChangeResponse
from raftkv.kv.errors import (
    AuthFailed,
    AuthNotEnabled,
    RoleNotFound,
    TooManyFailedLogins,
    UserNotFound,
)
from raftkv.kv.layout import RoleRecord, UserRecord
from raftkv.kv.passwords import PasswordCost, check_password, hash_password, verify_password
from raftkv.kv.service import KvService
from raftkv.raft.core.errors import ConfigInvalid

T = TypeVar("T")
# Sources whose failures are remembered; the least recently failing is forgotten first.
MAX_TRACKED_SOURCES: Final = 10_000


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # How long a token is valid (etcd's default TTL for its tokens is 300 s). Clients
    # holding a password log in again when theirs expires.
    token_ttl_s: int = 300
    # Failed logins a source may make in a row before it must wait.
    max_failed_logins: int = 5
    # After that, one more try per this many seconds.
    failed_login_refill_s: float = 10.0
    # Password hashes computed at once (each ~70 ms of a core and 32 MiB).
    max_concurrent_hashes: int = 2
    password_cost: PasswordCost = field(default_factory=PasswordCost)
    # Hash on the event loop rather than a worker thread: for tests on a manual clock only
    # (with a cheap password_cost), where a thread's wall-clock time would race simulated
    # time. A real node never sets it: a hash would stall Raft for its ~70 ms.
    hash_on_loop: bool = False

    def __post_init__(self) -> None:
        for name in ("token_ttl_s", "max_failed_logins", "max_concurrent_hashes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigInvalid(f"AuthSettings.{name} must be an integer >= 1, got {value!r}")
        refill = self.failed_login_refill_s
        if not isinstance(refill, (int, float)) or not 0 < refill < math.inf:
            raise ConfigInvalid(
                f"AuthSettings.failed_login_refill_s must be a positive number, got {refill!r}"
            )


@dataclass(slots=True)
class _Bucket:
    tries: float
    updated: float


class FailedLogins:
    """A token bucket of login tries per source (see the module docstring). Bounded:
    MAX_TRACKED_SOURCES sources."""

    def __init__(self, burst: int, refill_s: float) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _tries(self, source: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(source)
        if bucket is not None:
            bucket.tries = min(self.burst, bucket.tries + (now - bucket.updated) / self.refill_s)
            bucket.updated = now
        return bucket

    def check(self, source: str, now: float) -> None:
        """TooManyFailedLogins if `source` has no try left."""
        bucket = self._tries(source, now)
        if bucket is not None and bucket.tries < 1:
            raise TooManyFailedLogins(source, (1 - bucket.tries) * self.refill_s)

    def failed(self, source: str, now: float) -> None:
        bucket = self._tries(source, now)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(self.burst, now)
        bucket.tries -= 1
        self._buckets.move_to_end(source)
        while len(self._buckets) > MAX_TRACKED_SOURCES:
            self._buckets.popitem(last=False)

    def succeeded(self, source: str) -> None:
        self._buckets.pop(source, None)


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    token: str
    ttl_s: int


class AuthService:
    def __init__(self, kv: KvService, settings: AuthSettings | None = None) -> None:
        self.kv = kv
        self.settings = settings if settings is not None else AuthSettings()
        self.failed_logins = FailedLogins(
            self.settings.max_failed_logins, self.settings.failed_login_refill_s
        )
        self._hashing = asyncio.Semaphore(self.settings.max_concurrent_hashes)
        # What an unknown user's password is checked against (made at the first login).
        self._dummy_hash: str | None = None
        # Logins refused since start (not exported as a metric yet).
        self.failed_login_count = 0

    @property
    def _auth(self) -> AuthState:
        return self.kv.machine.auth

    # -- logins -----------------------------------------------------------------------------

    async def authenticate(
        self, name: str, password: str, source: str, *, timeout: float | None = None
    ) -> Login:
        """A token for user `name` if `password` is its password (see the module
        docstring); AuthFailed, AuthNotEnabled or TooManyFailedLogins."""
        if not self._auth.enabled:
            raise AuthNotEnabled()
        clock = self.kv.clock
        self.failed_logins.check(source, clock.now())
        # A password change or user deletion acknowledged before the login holds for it.
        await self.kv.read_barrier(timeout=timeout)
        user = self._auth.user(name)
        async with self._hashing:
            if self._dummy_hash is None:
                self._dummy_hash = await self._off_loop(
                    hash_password, secrets.token_hex(16), self.settings.password_cost
                )
            stored = user.password_hash if user is not None else self._dummy_hash
            matches = await self._off_loop(verify_password, password, stored)
        if user is None or not matches:
            self.failed_login_count += 1
            self.failed_logins.failed(source, clock.now())
            raise AuthFailed()
        self.failed_logins.succeeded(source)
        ttl_s = self.settings.token_ttl_s
        claims = TokenClaims(
            user.name, user.password_revision, self.kv.authorizer.now_ms() + ttl_s * 1000
        )
        return Login(user.name, issue_token(self._auth.signing_key, claims), ttl_s)

    # -- changes ----------------------------------------------------------------------------

    async def _change(self, request: AuthRequest, timeout: float | None) -> AuthChangeResponse:
        # Validated by KvService (check_request) before it is checked and proposed.
        return await self.kv.change_auth(request, timeout=timeout)

    async def _hash(self, password: str) -> str:
        check_password(password)
        async with self._hashing:
            return await self._off_loop(hash_password, password, self.settings.password_cost)

    async def _off_loop(self, function: Callable[..., T], *arguments: object) -> T:
        """`function(*arguments)` on a worker thread (on the loop with hash_on_loop)."""
        if self.settings.hash_on_loop:
            return function(*arguments)
        return await asyncio.to_thread(function, *arguments)

    async def enable(self, *, timeout: float | None = None) -> AuthChangeResponse:
        return await self._change(AuthEnable(secrets.token_bytes(SIGNING_KEY_BYTES)), timeout)

    async def disable(self, *, timeout: float | None = None) -> AuthChangeResponse:
        return await self._change(AuthDisable(), timeout)

    async def add_user(
        self, name: str, password: str | None, *, timeout: float | None = None
    ) -> AuthChangeResponse:
        """Add a user; `password` None: one a client certificate names, with no password."""
        # Checked before the hash: a caller who may not add users costs no hashing.
        check_auth_request(UserAdd(name, ""))
        self.kv.authorizer.check(current_caller(), UserAdd(name, ""))
        hashed = "" if password is None else await self._hash(password)
        return await self._change(UserAdd(name, hashed), timeout)

    async def change_password(
        self, name: str, password: str, *, timeout: float | None = None
    ) -> AuthChangeResponse:
        check_auth_request(UserChangePassword(name, ""))
        self.kv.authorizer.check(current_caller(), UserChangePassword(name, ""))
        if self._auth.user(name) is None:
            raise UserNotFound(f"user {name!r} does not exist")
        return await self._change(UserChangePassword(name, await self._hash(password)), timeout)

    async def delete_user(self, name: str, *, timeout: float | None = None) -> AuthChangeResponse:
        return await self._change(UserDelete(name), timeout)

    async def grant_role(
        self, name: str, role: str, *, timeout: float | None = None
    ) -> AuthChangeResponse:
        return await self._change(UserGrantRole(name, role), timeout)

    async def revoke_role(
        self, name: str, role: str, *, timeout: float | None = None
    ) -> AuthChangeResponse:
        return await self._change(UserRevokeRole(name, role), timeout)

    async def add_role(self, name: str, *, timeout: float | None = None) -> AuthChangeResponse:
        return await self._change(RoleAdd(name), timeout)

    async def delete_role(self, name: str, *, timeout: float | None = None) -> AuthChangeResponse:
        return await self._change(RoleDelete(name), timeout)

    async def grant_permission(
        self, role: str, permission: Permission, *, timeout: float | None = None
    ) -> AuthChangeResponse:
        return await self._change(RoleGrantPermission(role, permission), timeout)

    async def revoke_permission(
        self, role: str, key: bytes, range_end: bytes, *, timeout: float | None = None
    ) -> AuthChangeResponse:
        return await self._change(RoleRevokePermission(role, key, range_end), timeout)

    # -- listings ---------------------------------------------------------------------------

    def status(self) -> tuple[bool, int]:
        """Whether auth is enabled, and the auth revision (this node's view: anyone may
        ask, as etcd's AuthStatus)."""
        return self._auth.enabled, self._auth.revision

    async def users(self, *, timeout: float | None = None) -> list[UserRecord]:
        """Every user, by name (root only while auth is enabled)."""
        await self.kv.read_barrier(timeout=timeout)
        self.kv.authorizer.require_root(current_caller(), "list the users")
        return self._auth.users()

    async def user(self, name: str, *, timeout: float | None = None) -> UserRecord:
        """User `name` (root, or the user itself); AuthNotFound if there is none."""
        await self.kv.read_barrier(timeout=timeout)
        self.kv.authorizer.check_user_read(current_caller(), name)
        user = self._auth.user(name)
        if user is None:
            raise UserNotFound(f"user {name!r} does not exist")
        return user

    async def roles(self, *, timeout: float | None = None) -> list[RoleRecord]:
        """Every role, root among them, by name (root only while auth is enabled)."""
        await self.kv.read_barrier(timeout=timeout)
        self.kv.authorizer.require_root(current_caller(), "list the roles")
        return self._auth.roles()

    async def role(self, name: str, *, timeout: float | None = None) -> RoleRecord:
        await self.kv.read_barrier(timeout=timeout)
        self.kv.authorizer.require_root(current_caller(), f"read role {name!r}")
        role = self._auth.role(name)
        if role is None:
            raise RoleNotFound(f"role {name!r} does not exist")
        return role
