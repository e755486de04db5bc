"""The error answers of the HTTP API: which status and code each expected error gets.

Every refusal is `{"error": {"code", "message"}}` (`raftkv.api.errors`):
- 400: `invalid_json` (not JSON, not UTF-8, half a surrogate pair, a name twice in one
  object), `invalid_request` (wrong types, unknown fields, bad query values, a
  percent-escape that is not UTF-8), `invalid_base64`, `empty_key`, `duplicate_key`,
  `future_revision`, `body_incomplete` (the connection closed mid-body), `invalid_body` (a
  body that cannot be read), `invalid_member_change` (a change the leader refuses, such as
  removing the last voter), `malformed_request` (what aiohttp's parser refuses: a line over
  8 KiB, too many headers, no method, no Host: `raftkv.server.listener`);
- 404 `not_found` (no such key), `lease_not_found` (no such lease: never granted, revoked
  or expired) or `unknown_route` (no such path), 405 `method_not_allowed`;
- 406 `not_utf8`; 409 `stale_sequence` (a late duplicate of an exactly-once write),
  `session_expired` (an exactly-once write whose session the store no longer holds: not
  applied; start a new session),
  `not_caught_up` (a learner too far behind to promote), `lease_exists` (a grant naming a
  live lease's id);
- 408 `body_timeout`: the body did not arrive within `HttpSettings.body_timeout_s`;
- 410 `compacted`: the revision asked for is older than the oldest one kept (the history
  is gone for good, which is what 410 Gone says; a future revision is a 400); the error
  also carries `compact_revision` and `oldest_revision` (see raftkv.api.errors);
- 413 `body_too_large` (over `HttpSettings.max_body_bytes`), `limit_exceeded` (a key,
  value or txn over a `KvSettings` limit), `command_too_large` (over the node's
  `max_command_bytes`), `scan_too_large` (ranges scanning more than `ReadLimits`
  allows);
- 401 `auth_required` (auth is enabled and the request has no credentials),
  `invalid_token` (malformed, forged, expired, or void: its user's password changed or the
  user was deleted), `auth_failed` (a wrong user name or password);
- 403 `permission_denied`: the user may not do this (the message names the access and the
  key range, or that it needs the role root);
- 429 `too_many_auth_failures`: too many failed logins from this address; the answer's
  `Retry-After` says when to try again;
- 400 `auth_not_enabled` (a login while auth is disabled); 404 `auth_not_found` (no such
  user or role); 409 `auth_conflict` (a user or role that exists already, a role held
  already, enabling auth without a root user);
- 503 `auth_revision_changed`: users or roles kept changing while a write was checked
  (retry);
- 403 `origin_not_allowed`: a web page's request (its `Origin`) from an origin the `cors`
  setting does not list (`raftkv.server.browser_guards`);
- 415 `unsupported_content_encoding`: a compressed body (never inflated);
  `unsupported_media_type`: a POST body not sent as `Content-Type: application/json`;
- 421 `host_not_allowed`: a `Host` the `host_whitelist` setting does not list;
- 503 `not_leader`, `proposal_dropped`, `overloaded`, `stopped`, `busy` (another membership
  change under way), `unavailable` (the leader could not be reached), `too_many_watches`,
  `removed` (this member was removed from the cluster: `raftkv.server.removal`):
  nothing was applied; retry (elsewhere);
- 503 `corrupt`: a hash check found this member's state different from the majority's (a
  CORRUPT alarm, listed by `/v1/status` on every member): it serves no reads, writes,
  txns, leases, watches or backups, only `/health`, `/ready` (503), `/metrics`,
  `/v1/status`, `/v1/cluster`, membership and `/openapi.json`; nothing was applied; use
  another member. Remove it and join it again with a new id and an empty data dir;
- 504 `timeout`: for a write the outcome is unknown (retry with the same `client_id` and
  `sequence` to get the original result without applying twice); for a read nothing was read;
  504 `outcome_unknown`: the write had left this node (forwarded to the leader, or appended
  as leader) when this node stopped, failed or was removed: it may apply (retry as for
  `timeout`). A write answered 503 never left the node;
- 505 `http_version_not_supported`: a request line of another version than HTTP/1.0 or
  1.1;
- 507 `no_space`: a write that adds data (a put, a txn with a put, a lease grant) while a
  NOSPACE alarm is raised (a member's storage over its quota or its disk nearly full:
  `raftkv.kv.space_alarms`): nothing applied; deletes, compactions and reads still work.
  Free space, then disarm (`POST /v1/alarms/disarm`);
- 500 `internal` for anything unexpected (logged).

`ERROR_STATUS` is every code the server answers with, and its status (a test checks it
against every answer the server's code makes, and against docs/http-api.md).
`error_answer` maps an error raised by a handler (the HTTP layer's own `ApiError`, the
store's `KvError`s, the driver's errors) to its answer; `ERROR_CODES` is the same list by
status, as `/openapi.json` shows it.
"""

from __future__ import annotations

import math

from aiohttp import hdrs, web

from raftkv.kv.errors import (
    AuthConflict,
    AuthFailed,
    AuthNotEnabled,
    AuthNotFound,
    AuthRequired,
    AuthRevisionChanged,
    Compacted,
    FutureRevision,
    InvalidToken,
    KvError,
    LeaseExists,
    LeaseNotFound,
    LimitExceeded,
    NoSpace,
    PermissionDenied,
    SessionExpired,
    StaleSequence,
    TooManyFailedLogins,
)
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    ConfChangePending,
    InvalidArgument,
    NotLeader,
    ProposalDropped,
)
from raftkv.raft.driver.errors import (
    CommandTooLarge,
    LearnerNotCaughtUp,
    MembershipError,
    OutcomeUnknown,
    Overloaded,
    ProposalTimeout,
    ReadTimeout,
    Stopped,
)
from raftkv.raft.storage.base import StorageClosed
from raftkv.server.http_common import ApiError, error_response

__all__ = ["ERROR_CODES", "ERROR_STATUS", "HTTP_ERROR_CODES", "error_answer"]

# What each error status of the API means: the codes it carries (/openapi.json's text).
ERROR_CODES: dict[int, str] = {
    400: "Bad request: invalid_json, invalid_request, invalid_base64, empty_key, "
    "duplicate_key, future_revision, body_incomplete, invalid_body, invalid_member_change, "
    "malformed_request, auth_not_enabled",
    401: "auth_required: auth is enabled and the request carries no credentials; "
    "invalid_token: the token is malformed, forged, expired or void; auth_failed: wrong user "
    "name or password",
    403: "origin_not_allowed: the request's Origin (a web page's) is neither this node's own "
    "nor in the server's cors setting; permission_denied: the user may not do this",
    429: "too_many_auth_failures: too many failed logins from this address (Retry-After)",
    404: "not_found: no such key; lease_not_found: no such lease (never granted, revoked "
    "or expired); unknown_route: no such path; auth_not_found: no such user or role",
    405: "method_not_allowed: the route does not take this method (Allow lists those it takes)",
    406: "not_utf8: the stored key or value is not UTF-8; ask with encoding=base64",
    408: "body_timeout: the request body did not arrive whole within the server's "
    "http_body_timeout_s",
    409: "stale_sequence: a late duplicate of an exactly-once write; session_expired: the "
    "store no longer holds the write's session (not applied; start a new one); "
    "not_caught_up: the learner lags too far to be promoted; lease_exists: a grant asked for "
    "the id of a live lease; auth_conflict: the user or role exists already (or not), or "
    "auth enable without a root user",
    410: "compacted: the revision asked for is older than the oldest one kept (the "
    "error carries compact_revision and oldest_revision)",
    413: "body_too_large, limit_exceeded, command_too_large, or scan_too_large (the "
    "request's ranges would scan more entries than the server's max_scan_entries; for a "
    "txn that writes, max_txn_scan_entries): nothing applied; answer_too_large: an answer "
    "over what a front process carries (http_workers)",
    415: "unsupported_content_encoding: the body is compressed (Content-Encoding); the "
    "server never inflates a body: send it uncompressed; unsupported_media_type: a POST's "
    "body is not sent as Content-Type: application/json",
    421: "host_not_allowed: the request's Host is not in the server's host_whitelist (a "
    "DNS-rebinding page's name)",
    500: "internal: an unexpected error (logged by the server)",
    503: "not_leader, proposal_dropped, overloaded, stopped, busy (another membership "
    "change is under way), unavailable, too_many_watches or removed (the member was removed "
    "from the cluster): nothing applied; retry (elsewhere); corrupt: a hash check found this "
    "member's state diverged (see /v1/status alarms): nothing applied; use another member; "
    "auth_revision_changed: users or roles kept changing while the write was checked: retry; "
    "member_unavailable: a front process lost its node: retry (a write may have applied)",
    504: "timeout or outcome_unknown: a write's outcome is unknown (retry with the same "
    "client_id and sequence); a read read nothing",
    505: "http_version_not_supported: the request line is not HTTP/1.0 or HTTP/1.1",
    507: "no_space: a NOSPACE alarm is raised (a member's storage is over its quota or its "
    "disk nearly full): writes that add data are refused, nothing applied; free space "
    "(delete, compact), then POST /v1/alarms/disarm",
}

# Every error code the server answers with, and its status.
ERROR_STATUS: dict[str, int] = {
    **dict.fromkeys(
        (
            "invalid_json",
            "invalid_request",
            "invalid_base64",
            "empty_key",
            "duplicate_key",
            "future_revision",
            "body_incomplete",
            "invalid_body",
            "invalid_member_change",
            "malformed_request",
            "auth_not_enabled",
        ),
        400,
    ),
    **dict.fromkeys(("auth_required", "invalid_token", "auth_failed"), 401),
    **dict.fromkeys(("origin_not_allowed", "permission_denied"), 403),
    **dict.fromkeys(("not_found", "lease_not_found", "unknown_route", "auth_not_found"), 404),
    "method_not_allowed": 405,
    "not_utf8": 406,
    "body_timeout": 408,
    **dict.fromkeys(
        ("stale_sequence", "session_expired", "not_caught_up", "lease_exists", "auth_conflict"),
        409,
    ),
    "compacted": 410,
    **dict.fromkeys(
        (
            "body_too_large",
            "limit_exceeded",
            "command_too_large",
            "scan_too_large",
            "answer_too_large",
        ),
        413,
    ),
    **dict.fromkeys(("unsupported_content_encoding", "unsupported_media_type"), 415),
    "host_not_allowed": 421,
    "too_many_auth_failures": 429,
    "internal": 500,
    **dict.fromkeys(
        (
            "not_leader",
            "proposal_dropped",
            "overloaded",
            "stopped",
            "busy",
            "unavailable",
            "too_many_watches",
            "removed",
            "corrupt",
            "auth_revision_changed",
            "member_unavailable",
        ),
        503,
    ),
    **dict.fromkeys(("timeout", "outcome_unknown"), 504),
    "http_version_not_supported": 505,
    "no_space": 507,
}

# Statuses aiohttp itself answers (no such route, no such method, a body over the limit).
HTTP_ERROR_CODES = {
    404: "unknown_route",
    405: "method_not_allowed",
    413: "body_too_large",
}


# MembershipError.code -> (HTTP status, error code).
_MEMBERSHIP_ERRORS = {
    "invalid": (400, "invalid_member_change"),
    "busy": (503, "busy"),
    # The request never reached the leader this node knew: nothing changed; retry.
    "not_sent": (503, "unavailable"),
    # The leader did not answer: the change may have been made.
    "unreachable": (504, "timeout"),
}


def _kv_error_status(error: KvError) -> int:
    match error:
        case LimitExceeded():
            return 413
        case Compacted():
            return 410
        case StaleSequence() | SessionExpired() | LeaseExists():
            return 409
        case LeaseNotFound():
            return 404
        case NoSpace():
            return 507
        case AuthRequired() | InvalidToken() | AuthFailed():
            return 401
        case PermissionDenied():
            return 403
        case AuthNotFound():
            return 404
        case AuthConflict():
            return 409
        case AuthRevisionChanged():
            return 503
        case FutureRevision() | AuthNotEnabled():
            return 400
        case _:
            return 400


def error_answer(error: Exception) -> web.Response | None:
    """The answer for an expected error of the service or the driver, or None."""
    match error:
        case ApiError():
            return error_response(error.status, error.code, error.message, **error.details)
        case Compacted():
            return error_response(
                410,
                error.code,
                str(error),
                compact_revision=error.compact_revision,
                oldest_revision=error.compact_revision,
            )
        case TooManyFailedLogins():
            response = error_response(429, error.code, str(error))
            response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(error.retry_after_s)))
            return response
        case KvError():
            response = error_response(_kv_error_status(error), error.code, str(error))
            if response.status == 401:
                response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="raftkv"'
            return response
        case NotLeader():
            return error_response(503, "not_leader", str(error))
        case ProposalDropped():
            return error_response(503, "proposal_dropped", str(error))
        case Overloaded():
            return error_response(503, "overloaded", str(error))
        case Stopped():
            return error_response(503, "stopped", str(error) or "the node is stopped")
        case StorageClosed():
            # A request that outlived its node (stopping, or failed and about to exit).
            return error_response(503, "stopped", "the node is stopped")
        case ProposalTimeout():
            return error_response(
                504,
                "timeout",
                "the write's outcome is unknown: it may still apply; retry with the same "
                "client_id and sequence to apply it at most once",
            )
        case OutcomeUnknown():
            return error_response(
                504,
                "outcome_unknown",
                f"{error}: retry with the same client_id and sequence to apply it at most once",
            )
        case ReadTimeout():
            return error_response(
                504, "timeout", "the read could not be confirmed; nothing was read"
            )
        case LearnerNotCaughtUp():
            return error_response(409, "not_caught_up", str(error))
        case MembershipError():
            status, code = _MEMBERSHIP_ERRORS.get(error.code, (400, "invalid_member_change"))
            return error_response(status, code, error.detail)
        case ConfChangePending():
            return error_response(503, "busy", f"{error}: retry once it is applied")
        case ConfChangeInvalid():
            # Refused by the leader's core itself (removing the last voter, ...).
            return error_response(
                400, "invalid_member_change", f"the membership change is refused: {error}"
            )
        case CommandTooLarge():
            return error_response(413, "command_too_large", str(error))
        case InvalidArgument():
            # An argument the request named that the node refuses (a transfer to a
            # non-member): the request's fault, nothing changed.
            return error_response(400, "invalid_request", str(error))
        case _:
            return None
