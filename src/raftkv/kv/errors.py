"""The typed errors of the KV state machine.

Every `KvError` is an expected outcome, not a fault: the request was refused and changed
nothing (the state machine rolls back whatever the request had staged). The state machine
returns the error instance as the command's result, so the proposer sees it and every
replica refuses the same command alike. Each class has a stable `code` for the HTTP layer's
`{"error": {"code", "message"}}` body.
"""

from __future__ import annotations

import math
from typing import ClassVar


class KvError(Exception):
    """A request the KV state machine refused; it changed nothing."""

    code: ClassVar[str] = "kv_error"


class InvalidRequest(KvError):
    """The request breaks a rule of the API (bad field value, command that does not
    decode, client id without a sequence, ...). The message names the rule."""

    code = "invalid_request"


class EmptyKey(InvalidRequest):
    """A key is empty; etcd refuses empty keys in every request and compare."""

    code = "empty_key"

    def __init__(self, where: str) -> None:
        super().__init__(f"{where}: key is empty")
        self.where = where


class LimitExceeded(InvalidRequest):
    """A size or count is beyond its `KvSettings` limit (named in `setting`)."""

    code = "limit_exceeded"

    def __init__(self, what: str, size: int, setting: str, limit: int) -> None:
        super().__init__(f"{what} is {size}, beyond {setting}={limit}")
        self.what = what
        self.size = size
        self.setting = setting
        self.limit = limit


class ScanTooLarge(LimitExceeded):
    """A read, or the ranges of a txn, would scan more MVCC entries than `setting` allows
    (a node-local limit, checked before anything is proposed): refused rather than tie up
    a read thread, or every member's loop, for seconds."""

    code = "scan_too_large"

    def __init__(self, setting: str, limit: int) -> None:
        KvError.__init__(
            self,
            f"the request's ranges scan more than {limit} entries ({setting}={limit}); "
            "read narrower ranges",
        )
        self.what = "entries scanned"
        self.size = limit + 1
        self.setting = setting
        self.limit = limit


class DuplicateKey(InvalidRequest):
    """One branch of a txn writes a key twice (two puts, or a put inside a delete's
    range), which etcd refuses: the outcome would depend on the order of the ops."""

    code = "duplicate_key"

    def __init__(self, key: bytes) -> None:
        super().__init__(f"key {key[:64]!r} is written twice in one txn branch")
        self.key = key


class Compacted(KvError):
    """The revision asked for is older than the compacted revision (history is gone), or
    a compaction asked for a revision already compacted."""

    code = "compacted"

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(f"revision {revision} is compacted (compacted at {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


class FutureRevision(KvError):
    """The revision asked for is newer than the store's current revision."""

    code = "future_revision"

    def __init__(self, revision: int, current_revision: int) -> None:
        super().__init__(
            f"revision {revision} is in the future (current revision {current_revision})"
        )
        self.revision = revision
        self.current_revision = current_revision


class StaleSequence(KvError):
    """An exactly-once write carries a sequence older than the client's last applied one:
    it is a late duplicate of a request whose result is no longer kept."""

    code = "stale_sequence"

    def __init__(self, client_id: str, sequence: int, last_sequence: int) -> None:
        super().__init__(
            f"client {client_id!r}: sequence {sequence} is older than the last applied "
            f"sequence {last_sequence}"
        )
        self.client_id = client_id
        self.sequence = sequence
        self.last_sequence = last_sequence


class SessionExpired(KvError):
    """An exactly-once write with a sequence above 1 from a client id the store holds no
    session for: its session was forgotten (the table is bounded) or never recorded (its
    earlier writes were all refused). Refused rather than applied, because it may be a
    retry of a write that did apply before the session was forgotten (Raft thesis §6.3).
    Nothing was applied; a client starts a new session (a new id, sequence 1)."""

    code = "session_expired"

    def __init__(self, client_id: str, sequence: int) -> None:
        super().__init__(
            f"client {client_id!r}: no session for sequence {sequence} (forgotten, or never "
            "recorded); nothing was applied: start a new session (new client_id, sequence 1)"
        )
        self.client_id = client_id
        self.sequence = sequence


class LeaseNotFound(KvError):
    """The lease does not exist: never granted, revoked, or expired."""

    code = "lease_not_found"

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id} not found (never granted, revoked or expired)")
        self.lease_id = lease_id


class LeaseExists(KvError):
    """A grant asked for an id that a live lease already has."""

    code = "lease_exists"

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id} already exists")
        self.lease_id = lease_id


class NoSpace(KvError):
    """A write that adds data (a put, a txn that may put, a lease grant) while a NOSPACE
    alarm is raised (`raftkv.kv.space_alarms`): the cluster is read-only for such writes
    until an operator frees space and disarms the alarm. Deletes, compactions and lease
    revokes still apply: they are how space is freed."""

    code = "no_space"

    def __init__(self, members: list[int]) -> None:
        named = ", ".join(str(member) for member in members)
        super().__init__(
            f"the cluster is out of space (NOSPACE alarm of member {named}): writes that "
            "add data are refused; delete or compact to free space, then `raftkv alarm "
            "disarm`"
        )
        self.members = members


class AuthError(KvError):
    """A request about users, roles or credentials that is refused; it changed nothing."""

    code = "auth_error"


class AuthRequired(AuthError):
    """Authentication is enabled and the request carries no credentials (no token, no
    client certificate naming a user)."""

    code = "auth_required"

    def __init__(self) -> None:
        super().__init__(
            "authentication is enabled: authenticate first (raftkv --user NAME, or "
            "POST /v1/auth/authenticate and send Authorization: Bearer <token>)"
        )


class InvalidToken(AuthError):
    """A token that is malformed, forged, expired, or void (its user was deleted or its
    password changed, or auth was disabled and enabled again)."""

    code = "invalid_token"

    def __init__(self, why: str) -> None:
        super().__init__(f"the auth token is {why}: authenticate again")
        self.why = why


class AuthFailed(AuthError):
    """A wrong user name or password (which one is not said)."""

    code = "auth_failed"

    def __init__(self) -> None:
        super().__init__("authentication failed: invalid user name or password")


class PermissionDenied(AuthError):
    """The user may not do this: `what` names the access and the key range or the admin
    action."""

    code = "permission_denied"

    def __init__(self, user: str, what: str) -> None:
        super().__init__(f"user {user!r} may not {what}")
        self.user = user
        self.what = what


class AuthNotEnabled(AuthError):
    """Authenticate while authentication is disabled."""

    code = "auth_not_enabled"

    def __init__(self) -> None:
        super().__init__("authentication is not enabled: every request is allowed without it")


class AuthConflict(AuthError):
    """A change that contradicts the auth state: a user or role that exists already or
    does not exist, a role granted twice, enabling auth without a root user."""

    code = "auth_conflict"


class UserExists(AuthConflict):
    """A user of that name exists already."""


class RoleExists(AuthConflict):
    """A role of that name exists already (root among them: it is built in)."""


class RoleAlreadyGranted(AuthConflict):
    """The user holds that role already."""


class RootNotReady(AuthConflict):
    """Enabling auth without a user root (`root_user_exists` False) or with one that does
    not hold the role root."""

    def __init__(self, message: str, *, root_user_exists: bool) -> None:
        super().__init__(message)
        self.root_user_exists = root_user_exists


class ProtectedAuthChange(AuthConflict):
    """A change the rules of root forbid: deleting user root or taking the role root from
    it while auth is enabled, deleting or editing the built-in role root."""


class AuthRevisionChanged(AuthError):
    """Users, roles or permissions changed between the proposer's permission check and
    the apply (`KvCommand.auth_revision`): nothing applied; the proposer checks again and
    proposes again."""

    code = "auth_revision_changed"

    def __init__(self, checked: int, current: int) -> None:
        super().__init__(
            f"permissions were checked at auth revision {checked}, now {current}: retry"
        )
        self.checked = checked
        self.current = current


class AuthNotFound(AuthError):
    """The user or role named does not exist."""

    code = "auth_not_found"


class UserNotFound(AuthNotFound):
    """No user of that name."""


class RoleNotFound(AuthNotFound):
    """No role of that name."""


class RoleNotGranted(AuthNotFound):
    """A revoke of a role the user does not hold."""


class PermissionNotGranted(AuthNotFound):
    """A revoke of a permission the role does not hold on exactly that range."""


class TooManyFailedLogins(AuthError):
    """A source failed to log in too often: refused before its password is checked."""

    code = "too_many_auth_failures"

    def __init__(self, source: str, retry_after_s: float) -> None:
        super().__init__(
            f"too many failed logins from {source}: retry in {math.ceil(retry_after_s)} s"
        )
        self.source = source
        self.retry_after_s = retry_after_s
