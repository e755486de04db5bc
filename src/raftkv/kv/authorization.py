"""What a caller may do: the permission checks of every request, in one place.

`KvService` asks the `Authorizer` before proposing a write (the answer is the auth revision
the check was made at, which the command carries: `raftkv.kv.state_machine` refuses it if
users, roles or permissions changed before it applied) and after a read's read point
(linearizable reads check against state at least as recent as the read). The doors (HTTP,
etcd) turn credentials into a `Caller` here too (`caller_for_token`,
`caller_for_certificate`).

The rules, while auth is enabled (`raftkv.kv.auth_state`; while it is disabled everything
is allowed, as in etcd):
- no credentials: AuthRequired, for everything but the routes the doors keep public;
- a range read needs read on the range; a put or delete write on its key or range, and read
  too when it asks for the previous key-values; a txn needs read on every range its compares
  and ranges touch and write on every key its puts and deletes touch, in both branches;
- leases: any user may grant and renew; a revoke needs write on every key attached;
- watches need read on the watched range;
- compaction, membership, leadership, alarms, defragmentation, backups, hashes, metrics and
  every user and role change need the role root; a user may read its own record and change
  its own password;
- exactly-once sessions are the user's own (`session_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import assert_never

from raftkv.kv.auth_commands import AuthRequest, UserChangePassword
from raftkv.kv.auth_state import Access, AuthState
from raftkv.kv.auth_tokens import read_token
from raftkv.kv.callers import ANONYMOUS, Caller
from raftkv.kv.commands import (
    Compact,
    DeleteRange,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Put,
    Range,
    RequestOp,
    Txn,
    WriteRequest,
)
from raftkv.kv.errors import AuthRequired, InvalidToken, PermissionDenied


def _describe(key: bytes, range_end: bytes) -> str:
    if range_end == b"":
        return f"key {key[:64]!r}"
    end = "the end" if range_end == b"\0" else repr(range_end[:64])
    return f"range {key[:64]!r} to {end}"


class Authorizer:
    """Reads the auth state through `auth` (the state machine's current one: a snapshot
    install replaces it); `wall_clock_ms` gives tokens' expiry time."""

    def __init__(self, auth: Callable[[], AuthState], wall_clock_ms: Callable[[], int]) -> None:
        self._auth = auth
        self._wall_clock_ms = wall_clock_ms

    @property
    def enabled(self) -> bool:
        return self._auth().enabled

    def now_ms(self) -> int:
        """The wall clock tokens expire by, in Unix milliseconds."""
        return self._wall_clock_ms()

    # -- credentials ------------------------------------------------------------------------

    def caller_for_token(self, token: str) -> Caller:
        """The user `token` names; InvalidToken if it does not name one now. With auth
        disabled a token is ignored (ANONYMOUS: everything is allowed)."""
        auth = self._auth()
        if not auth.enabled:
            return ANONYMOUS
        claims = read_token(auth.signing_key, token, self._wall_clock_ms())
        user = auth.user(claims.user)
        if user is None:
            raise InvalidToken("void: its user was deleted")
        if user.password_revision != claims.password_revision:
            raise InvalidToken("void: its user's password changed")
        return Caller(user.name)

    def caller_for_certificate(self, common_name: str) -> Caller:
        """The user a verified client certificate names by its common name (as etcd does),
        if auth is enabled and that user exists; else ANONYMOUS."""
        auth = self._auth()
        if auth.enabled and auth.user(common_name) is not None:
            return Caller(common_name)
        return ANONYMOUS

    # -- checks -----------------------------------------------------------------------------

    def user(self, caller: Caller) -> str | None:
        """The caller's user; None if it needs none (auth disabled, or the node itself).
        AuthRequired for a caller without credentials while auth is enabled."""
        if caller.internal or not self._auth().enabled:
            return None
        if caller.user is None:
            raise AuthRequired()
        return caller.user

    def require_root(self, caller: Caller, what: str) -> None:
        """PermissionDenied unless the caller holds the role root (or needs none)."""
        user = self.user(caller)
        if user is not None and not self._auth().is_root(user):
            raise PermissionDenied(user, f"{what} (it needs the role root)")

    def check_read(self, caller: Caller, key: bytes, range_end: bytes) -> None:
        self._check(caller, "read", key, range_end)

    def check_write(self, caller: Caller, key: bytes, range_end: bytes) -> None:
        self._check(caller, "write", key, range_end)

    def check_keys_writable(self, caller: Caller, keys: Iterable[bytes]) -> None:
        for key in keys:
            self._check(caller, "write", key, b"")

    def _check(self, caller: Caller, access: Access, key: bytes, range_end: bytes) -> None:
        user = self.user(caller)
        if user is None:
            return
        if not self._auth().permits(user, access, key, range_end):
            raise PermissionDenied(user, f"{access} {_describe(key, range_end)}")

    def check(self, caller: Caller, request: WriteRequest | Range) -> int:
        """Raise AuthRequired or PermissionDenied unless the caller may make `request`;
        else the stamp of the auth state checked against (`AuthState.stamp`), for the
        command to carry. The node itself may do anything, but its commands are stamped
        too: the apply then knows they were made against current permissions."""
        auth = self._auth()
        if caller.internal or not auth.enabled:
            # Nothing to refuse (every rule below would pass): O(1) on the write path.
            return auth.stamp
        if isinstance(request, UserChangePassword) and self._is_self(caller, request.name):
            return auth.stamp
        if isinstance(request, AuthRequest):
            self.require_root(caller, f"change users or roles ({type(request).__name__})")
            return auth.stamp
        match request:
            case Range() | Put() | DeleteRange():
                self._check_op(caller, request)
            case Txn():
                for compare in request.compares:
                    self.check_read(caller, compare.key, compare.range_end)
                for op in (*request.success, *request.failure):
                    self._check_op(caller, op)
            case LeaseGrant() | LeaseKeepAlive():
                self.user(caller)
            case Compact():
                self.require_root(caller, "compact the history")
            case LeaseRevoke() | LeaseExpire() | LeaseCheckpoint():
                # A revoke's keys are checked by the service, which knows them; expiry and
                # checkpoints are the node's own.
                self.user(caller)
            case _:
                self.require_root(caller, f"propose {type(request).__name__}")
        return auth.stamp

    def _check_op(self, caller: Caller, op: RequestOp) -> None:
        match op:
            case Range():
                self.check_read(caller, op.key, op.range_end)
            case Put():
                self.check_write(caller, op.key, b"")
                if op.prev_kv:
                    self.check_read(caller, op.key, b"")
            case DeleteRange():
                self.check_write(caller, op.key, op.range_end)
                if op.prev_kv:
                    self.check_read(caller, op.key, op.range_end)
            case _:
                assert_never(op)

    def _is_self(self, caller: Caller, name: str) -> bool:
        """Whether the caller is user `name` (who may read its record and change its own
        password)."""
        return caller.user == name and self._auth().user(name) is not None

    def session_of(self, caller: Caller, client_id: str) -> str:
        """The exactly-once session a write of `client_id` uses: while auth is enabled,
        the user's own ("<user>/<client_id>": names hold no '/'), so that no user can read
        another's stored results (a retry's answer) by naming its client id, nor spoil
        its sessions. The whole must fit max_client_id_bytes."""
        user = self.user(caller)
        if not client_id or user is None:
            return client_id
        return f"{user}/{client_id}"

    def check_user_read(self, caller: Caller, name: str) -> None:
        """Root, or user `name` itself, may read that user's record."""
        if not self._is_self(caller, name):
            self.require_root(caller, f"read user {name!r}")
