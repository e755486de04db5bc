"""The client's typed errors: what a failed call tells its caller.

    ClientError             base: `code`, `message`, `status` (HTTP, None without an answer)
    ├── Refused             the server refused the request; nothing was applied; final
    │   ├── InvalidRequest  400 (and 404/405 for a route): invalid_request, invalid_json,
    │   │                   invalid_base64, empty_key, duplicate_key, future_revision
    │   ├── LeaseNotFound   404 lease_not_found (the lease expired, was revoked, or never was)
    │   ├── NotUtf8         406 not_utf8
    │   ├── StaleSequence   409 stale_sequence
    │   ├── SessionExpired  409 session_expired (handled by the client itself)
    │   ├── NotCaughtUp     409 not_caught_up
    │   ├── LeaseExists     409 lease_exists
    │   ├── Compacted       410 compacted (with compact_revision and oldest_revision)
    │   ├── LimitExceeded   413 limit_exceeded, body_too_large, command_too_large
    │   ├── Unauthenticated 401 auth_required, invalid_token, auth_failed; 429
    │   │                   too_many_auth_failures
    │   └── PermissionDenied 403 permission_denied (and origin_not_allowed)
    ├── Unavailable         no endpoint answered, or every answer was a 503 (or a timed-out
    │                       read; a 503 `corrupt` is a member whose state diverged): nothing
    │                       was applied; worth trying again later
    ├── OutcomeUnknown      a write may or may not have been applied (504 `timeout` or a
    │                       connection lost after sending, and no retry settled it)
    └── ServerError         a 500, or an answer the client cannot read (a misbehaving server)

Every message says what happened and at which endpoint(s): a refusal names the endpoint
that answered; `Unavailable` and `OutcomeUnknown` list every attempt.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ClientError",
    "Compacted",
    "InvalidRequest",
    "LeaseExists",
    "LeaseNotFound",
    "LimitExceeded",
    "NoSpace",
    "NotUtf8",
    "OutcomeUnknown",
    "PermissionDenied",
    "Refused",
    "ServerError",
    "StaleSequence",
    "Unauthenticated",
    "Unavailable",
    "refusal",
]


class ClientError(Exception):
    """A call that did not succeed. `code` is the server's error code (or the client's own:
    "unavailable", "outcome_unknown", "bad_answer"), `status` the HTTP status of the answer
    that decided it (None when no answer did), `endpoints` where the attempts went."""

    def __init__(
        self, code: str, message: str, *, status: int | None, endpoints: Sequence[str]
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.endpoints = tuple(endpoints)


class Refused(ClientError):
    """The server refused the request (a 4xx answer): nothing was applied, and trying the
    same request again gets the same answer."""


class InvalidRequest(Refused):
    """400: the request breaks a rule of the API (the code names which); also a 404/405
    for a route, which means the endpoint is not a raftkv server of this API version."""


class NotUtf8(Refused):
    """406: a stored key or value is not UTF-8 and was asked for as text. The client asks
    in base64, so seeing this means the server ignored `encoding=base64`."""


class StaleSequence(Refused):
    """409: an exactly-once write carried a sequence older than the session's last. The
    client's session lanes never do this on their own; two clients sharing a client id
    do."""


class SessionExpired(Refused):
    """409 `session_expired`: the server no longer holds (or never recorded) the session of
    an exactly-once write, so it refused it: nothing was applied. The client handles it
    itself: on a first attempt it starts the lane afresh and sends the write again; after an
    attempt whose outcome was unknown it raises OutcomeUnknown instead (the earlier attempt
    may have applied before the session was forgotten)."""


class NotCaughtUp(Refused):
    """409 `not_caught_up`: a learner lags too far behind the leader to be promoted yet."""


class LeaseNotFound(Refused):
    """404 `lease_not_found`: no such lease (it expired, was revoked, or never existed); a
    put naming it applied nothing."""


class LeaseExists(Refused):
    """409 `lease_exists`: a lease with the id asked for already exists."""


class Compacted(Refused):
    """410: the revision asked for is compacted; that history is gone for good.
    `compact_revision`: where history was compacted; `oldest_revision`: the oldest one a
    read or a watch can still start from (None if the server did not say)."""

    compact_revision: int | None = None
    oldest_revision: int | None = None


class LimitExceeded(Refused):
    """413: a key, value, txn, request body or Raft command is over a server limit."""


class NoSpace(Refused):
    """507 `no_space`: a NOSPACE alarm is raised (a member's storage is over its quota, or
    its disk nearly full), so the cluster refuses writes that add data (puts, txns with a
    put, lease grants): nothing was applied. Deletes, compactions and reads still work;
    an operator frees space and disarms the alarm (`disarm_alarms`)."""


class Unauthenticated(Refused):
    """401: the cluster has auth enabled and the client gave no credentials
    (`auth_required`: set `ClientSettings.user` and `password`), a wrong user name or
    password (`auth_failed`), or a token it no longer takes (`invalid_token`); 429
    `too_many_auth_failures`: too many failed logins from this address, wait."""


class PermissionDenied(Refused):
    """403 `permission_denied`: the user may not do this (the message names the access and
    the key range, or the role root it needs)."""


class Unavailable(ClientError):
    """No attempt succeeded and none may have applied anything: every endpoint was
    unreachable or answered 503 (no leader, dropped, overloaded, stopped), or a read timed
    out. Safe to try again."""


class OutcomeUnknown(ClientError):
    """A write may have been applied, or not: an attempt timed out on the server (504) or
    its connection was lost after the request was sent, and the retries (with the same
    exactly-once session, when the write has one) ran out before one settled it. Read the
    data to find out."""


class ServerError(ClientError):
    """The server failed (500 `internal`) or answered something the client cannot read.
    For a write the outcome is unknown as well."""


_REFUSALS: dict[int, type[Refused]] = {
    400: InvalidRequest,
    404: InvalidRequest,
    405: InvalidRequest,
    406: NotUtf8,
    409: StaleSequence,
    410: Compacted,
    401: Unauthenticated,
    403: PermissionDenied,
    413: LimitExceeded,
    429: Unauthenticated,
    507: NoSpace,
}


# Codes that share a status with another refusal.
_REFUSALS_BY_CODE: dict[str, type[Refused]] = {
    "session_expired": SessionExpired,
    "not_caught_up": NotCaughtUp,
    "lease_not_found": LeaseNotFound,
    "lease_exists": LeaseExists,
}


def refusal(
    status: int,
    code: str,
    message: str,
    endpoint: str,
    *,
    compact_revision: int | None = None,
    oldest_revision: int | None = None,
) -> Refused:
    """The typed error for a 4xx (or 507) answer `{"error": {code, message, ...}}` from
    `endpoint`."""
    kind = _REFUSALS_BY_CODE.get(code) or _REFUSALS.get(status, Refused)
    error = kind(
        code, f"{message} (HTTP {status} from {endpoint})", status=status, endpoints=[endpoint]
    )
    if isinstance(error, Compacted):
        error.compact_revision = compact_revision
        error.oldest_revision = oldest_revision
    return error
