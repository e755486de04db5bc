"""The HTTP API's route table: every route once, with its handler and its documentation.

`raftkv.server.app` serves the routes of this table, and `raftkv.server.openapi` derives
`/openapi.json` from it and from the wire schema (`raftkv.api`), so a route cannot be served
without being documented, nor documented without being served
(tests/server/test_http_cluster.py checks both ways against a running app). A row names:
- the method and the path (aiohttp's template: `{key:[\\s\\S]*}` lets a key hold '/');
- the handler, as "<area>.<method>" of the app's handlers (`raftkv.server.app.Handlers`):
  `kv` (`kv_api`), `node` (`node_api`), `cluster` (`cluster_api`), `leases` (`lease_api`),
  `watches` (`watch_api`), `alarms` (`alarm_api`), `backups` (`backup_api`), `auth`
  (`auth_api`), `metrics` (`raftkv.server.metrics`), `console` (`raftkv.server.console`);
- what it takes (path and query parameters, the JSON body's struct) and what it answers, by
  status (the 200 struct and the error codes of `raftkv.server.errors`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from raftkv.api.auth import (
    AuthenticateAnswer,
    AuthenticateBody,
    AuthStatusAnswer,
    GrantRoleBody,
    PasswordBody,
    PermissionBody,
    RoleAnswer,
    RoleBody,
    RolesAnswer,
    UserAnswer,
    UserBody,
    UsersAnswer,
)
from raftkv.api.cluster import (
    AddMemberBody,
    AlarmsAnswer,
    ClusterAnswer,
    DefragmentAnswer,
    DisarmBody,
    HealthAnswer,
    ReadyAnswer,
    StatusAnswer,
    TransferAnswer,
    TransferBody,
    UpdateMemberBody,
)
from raftkv.api.console import (
    ConsoleMembersAnswer,
    ConsoleNodeAnswer,
    EventsAnswer,
    HistoryAnswer,
)
from raftkv.api.errors import ErrorAnswer
from raftkv.api.kv import (
    CompactAnswer,
    CompactBody,
    DeleteAnswer,
    GetAnswer,
    PutAnswer,
    PutBody,
    RangeAnswer,
    SetBody,
    TxnAnswer,
    TxnBody,
)
from raftkv.api.leases import (
    LeaseAnswer,
    LeaseGrantAnswer,
    LeaseGrantBody,
    LeaseKeepAliveAnswer,
    LeaseRevokeAnswer,
    LeasesAnswer,
)
from raftkv.api.watches import WatchCanceled, WatchCreated, WatchEvents, WatchProgress
from raftkv.server.errors import ERROR_CODES

__all__ = ["ROUTES", "Body", "Parameter", "Response", "Route"]

Struct = type[msgspec.Struct]
# A JSON Schema written out, for what is not one of the API's structs.
Schema = Mapping[str, Any]
# What a body is: a struct of the API; one of several structs (a stream of messages, one
# per line); or a schema of its own (a body that is not JSON).
Body = Struct | tuple[Struct, ...] | Schema


@dataclass(frozen=True, slots=True)
class Parameter:
    """A path parameter (part of the path, so required) or a query parameter (optional)."""

    name: str
    schema: Schema
    description: str
    location: Literal["query", "path"] = "query"


@dataclass(frozen=True, slots=True)
class Response:
    """An answer a route may give with some status."""

    description: str
    body: Body
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Route:
    method: Literal["GET", "PUT", "POST", "DELETE"]
    path: str
    handler: str
    summary: str
    # By status, in the order the document lists them.
    responses: Mapping[int, Response]
    parameters: tuple[Parameter, ...] = ()
    # The JSON body it requires, if any.
    body: Struct | None = None

    @property
    def template(self) -> str:
        """The path without its parameters' patterns, as OpenAPI and aiohttp's canonical
        resource name write it: "/v1/kv/{key}"."""
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


def error(status: int) -> Response:
    return Response(ERROR_CODES[status], ErrorAnswer)


def answers(answer: Struct, *errors: int) -> dict[int, Response]:
    """A JSON route's answers: 200 with `answer`, or one of `errors`, or one of the errors
    every route can meet (a bad query value, missing or invalid credentials, a permission
    denied or a web page's origin or a Host not allowed, a compressed or non-JSON body, an
    unexpected error, a stopped node)."""
    responses = {200: Response("OK", answer)}
    for status in sorted({400, 401, 403, 415, 421, 500, 503, *errors}):
        responses[status] = error(status)
    return responses


# -- parameters ------------------------------------------------------------------------------

_MAX_INT64 = (1 << 63) - 1
_BOOLEAN: Schema = {"type": "string", "enum": ["true", "false", "1", "0"]}
_STRING: Schema = {"type": "string"}
_COUNT: Schema = {"type": "integer", "minimum": 0, "maximum": _MAX_INT64}

KEY = Parameter("key", _STRING, "The key (UTF-8, or base64 with encoding=base64).", location="path")
MEMBER = Parameter(
    "id", {"type": "integer", "minimum": 1}, "The member's node id.", location="path"
)
LEASE = Parameter(
    "id",
    {"type": "integer", "minimum": 1, "maximum": _MAX_INT64},
    "The lease id.",
    location="path",
)
ENCODING = Parameter(
    "encoding",
    {"type": "string", "enum": ["utf-8", "utf8", "base64"]},
    "How keys and values are written in the request and the answer (default utf-8).",
)
CONSISTENCY = Parameter(
    "consistency",
    {"type": "string", "enum": ["linearizable", "serializable"]},
    "linearizable (default: ReadIndex through the leader) or serializable (local state).",
)
REVISION = Parameter("revision", _COUNT, "Read at this past revision (0: the current one).")
RANGE_END = Parameter(
    "range_end", _STRING, "End of the range, exclusive; empty: key alone; '\\0': to the end."
)
PREFIX = Parameter("prefix", _BOOLEAN, "Every key starting with key (all if empty).")
KEY_READ = (KEY, ENCODING, CONSISTENCY, REVISION)
# A user's or role's name (raftkv.kv.auth_state.check_name: 1..128 bytes, no '/').
_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 128}
USER = Parameter("name", _NAME, "The user's name.", location="path")
ROLE = Parameter("name", _NAME, "The role's name.", location="path")


# -- the routes ------------------------------------------------------------------------------

ROUTES: tuple[Route, ...] = (
    Route(
        "PUT",
        "/v1/kv/{key:[\\s\\S]*}",
        "kv.put",
        "Put a key (any member; forwarded through Raft)",
        answers(PutAnswer, 404, 406, 408, 409, 413, 504, 507),
        (KEY, ENCODING),
        PutBody,
    ),
    Route(
        "GET",
        "/v1/kv/{key:[\\s\\S]*}",
        "kv.get",
        "Get a key (linearizable unless consistency=serializable)",
        answers(GetAnswer, 404, 406, 410, 413, 504),
        KEY_READ,
    ),
    Route(
        "DELETE",
        "/v1/kv/{key:[\\s\\S]*}",
        "kv.delete",
        "Delete a key, or every key starting with it (prefix=true)",
        answers(DeleteAnswer, 406, 409, 413, 504),
        (
            KEY,
            ENCODING,
            Parameter("prefix", _BOOLEAN, "Delete every key starting with key."),
            Parameter("prev_kv", _BOOLEAN, "Answer with the deleted key-values."),
            Parameter(
                "client_id",
                {"type": "string", "maxLength": 128},
                "Exactly-once: the client's id (with sequence).",
            ),
            Parameter(
                "sequence", _COUNT, "Exactly-once: this write's number, increasing per client_id."
            ),
        ),
    ),
    Route(
        "GET",
        "/v1/kv",
        "kv.range",
        "Range over keys: [key, range_end), a prefix, or every key",
        answers(RangeAnswer, 406, 410, 413, 504),
        (
            Parameter("key", _STRING, "First key of the range."),
            RANGE_END,
            PREFIX,
            Parameter(
                "limit",
                _COUNT,
                "At most this many key-values (0: no limit). The server answers at most "
                "max_response_bytes of key-values whatever the limit, with more: true when it "
                "leaves keys out.",
            ),
            REVISION,
            Parameter("keys_only", _BOOLEAN, "Leave values out."),
            Parameter("count_only", _BOOLEAN, "Only count the keys."),
            ENCODING,
            CONSISTENCY,
        ),
    ),
    Route(
        "POST",
        "/v1/txn",
        "kv.txn",
        "A transaction: compares, then the success or failure ops. One without put or "
        "delete ops is a read (never in the log; consistency applies)",
        answers(TxnAnswer, 404, 406, 408, 409, 410, 413, 504, 507),
        (
            ENCODING,
            Parameter(
                "consistency",
                {"type": "string", "enum": ["linearizable", "serializable"]},
                "For a txn without writes: linearizable (default) or serializable. A txn "
                "that writes goes through the log: serializable is a 400.",
            ),
        ),
        TxnBody,
    ),
    Route(
        "POST",
        "/v1/compact",
        "kv.compact",
        "Discard history older than a revision",
        answers(CompactAnswer, 408, 410, 413, 504),
        body=CompactBody,
    ),
    Route(
        "GET",
        "/v1/status",
        "node.status",
        "This node's Raft and MVCC state",
        answers(StatusAnswer),
        (Parameter("hash", _BOOLEAN, "Include the state hash (full scan)."),),
    ),
    Route(
        "GET",
        "/v1/cluster",
        "cluster.cluster",
        "The members, the leader and the term, as this node knows them",
        answers(ClusterAnswer),
    ),
    Route(
        "POST",
        "/v1/members",
        "cluster.add_member",
        "Add a learner (it votes once promoted)",
        answers(ClusterAnswer, 408, 413, 504),
        body=AddMemberBody,
    ),
    Route(
        "POST",
        "/v1/members/{id}/promote",
        "cluster.promote_member",
        "Promote a caught-up learner to voter (409 not_caught_up if it lags)",
        answers(ClusterAnswer, 409, 504),
        (MEMBER,),
    ),
    Route(
        "PUT",
        "/v1/members/{id}",
        "cluster.update_member",
        "Change a member's peer address (every member reaches it there from now on; start "
        "it listening there)",
        answers(ClusterAnswer, 408, 413, 504),
        (MEMBER,),
        UpdateMemberBody,
    ),
    Route(
        "DELETE",
        "/v1/members/{id}",
        "cluster.remove_member",
        "Remove a member (the leader included: it hands over first)",
        answers(ClusterAnswer, 504),
        (MEMBER,),
    ),
    Route(
        "POST",
        "/v1/leader/transfer",
        "cluster.transfer_leadership",
        "Hand leadership to a voter (asked of the leader; 503 elsewhere)",
        answers(TransferAnswer, 408, 413, 504),
        body=TransferBody,
    ),
    Route(
        "POST",
        "/v1/defragment",
        "node.defragment",
        "Compact this node's storage files whole (etcd's defragment), giving back the space "
        "of deleted and compacted data now; the node serves meanwhile (503 overloaded while "
        "one runs)",
        answers(DefragmentAnswer),
    ),
    Route(
        "GET",
        "/v1/alarms",
        "alarms.alarms",
        "The cluster's alarms: CORRUPT (a member's state diverged) and NOSPACE (a member "
        "is out of space: writes that add data are refused)",
        answers(AlarmsAnswer, 504),
    ),
    Route(
        "POST",
        "/v1/alarms/disarm",
        "alarms.disarm",
        "End the NOSPACE alarm of a member (member 0 or absent: of every member); a member "
        "still out of space raises it again within a second",
        answers(AlarmsAnswer, 408, 413, 504),
        body=DisarmBody,
    ),
    Route(
        "POST",
        "/v1/lease",
        "leases.grant",
        "Grant a lease of ttl seconds (id chosen by the server if 0)",
        answers(LeaseGrantAnswer, 408, 409, 413, 504, 507),
        body=LeaseGrantBody,
    ),
    Route(
        "POST",
        "/v1/lease/{id}/keepalive",
        "leases.keep_alive",
        "Renew a lease to its full TTL (answered once applied)",
        answers(LeaseKeepAliveAnswer, 404, 504),
        (LEASE,),
    ),
    Route(
        "GET",
        "/v1/lease/{id}",
        "leases.status",
        "A lease's remaining TTL (and its keys with keys=true)",
        answers(LeaseAnswer, 404, 406, 504),
        (
            LEASE,
            Parameter("keys", _BOOLEAN, "List the keys attached to the lease."),
            ENCODING,
            CONSISTENCY,
        ),
    ),
    Route(
        "DELETE",
        "/v1/lease/{id}",
        "leases.revoke",
        "Revoke a lease: it and its keys are deleted in one revision",
        answers(LeaseRevokeAnswer, 404, 504),
        (LEASE,),
    ),
    Route(
        "GET",
        "/v1/leases",
        "leases.list",
        "Every lease with its remaining TTL",
        answers(LeasesAnswer, 504),
        (CONSISTENCY,),
    ),
    Route(
        "GET",
        "/v1/watch",
        "watches.watch",
        "Watch a key, a prefix or a range: a stream of NDJSON messages, resumable with "
        "start_revision = last revision + 1",
        {
            200: Response(
                "One JSON message per line: created, then events and progress, and canceled "
                "last if the server ends the watch",
                (WatchCreated, WatchEvents, WatchProgress, WatchCanceled),
                "application/x-ndjson",
            ),
            # Refusals before the stream starts.
            **{status: error(status) for status in (400, 406, 410, 413, 415, 500, 503)},
        },
        (
            Parameter("key", _STRING, "The key, or first key of the range."),
            RANGE_END,
            PREFIX,
            Parameter("start_revision", _COUNT, "First revision to deliver (0: the next one)."),
            Parameter("prev_kv", _BOOLEAN, "Add each key's previous value."),
            Parameter("no_put", _BOOLEAN, "Leave put events out."),
            Parameter("no_delete", _BOOLEAN, "Leave delete events out."),
            Parameter("progress_notify", _BOOLEAN, "Send progress messages when idle."),
            Parameter(
                "progress_interval_s",
                {"type": "number", "minimum": 0.05, "maximum": 3600},
                "Seconds between progress messages (default: the server's).",
            ),
            ENCODING,
        ),
    ),
    Route(
        "POST",
        "/v1/auth/authenticate",
        "auth.authenticate",
        "Log in: a token for Authorization: Bearer, valid on every member for ttl_s (429 "
        "after too many failures from one address)",
        answers(AuthenticateAnswer, 408, 413, 429, 504),
        body=AuthenticateBody,
    ),
    Route(
        "GET",
        "/v1/auth/status",
        "auth.status",
        "Whether auth is enabled, and the auth revision",
        answers(AuthStatusAnswer),
    ),
    Route(
        "POST",
        "/v1/auth/enable",
        "auth.enable",
        "Enable auth (409 unless user root exists with the role root)",
        answers(AuthStatusAnswer, 409, 504),
    ),
    Route(
        "POST",
        "/v1/auth/disable",
        "auth.disable",
        "Disable auth (root): every request is allowed again and every token ends",
        answers(AuthStatusAnswer, 504),
    ),
    Route("GET", "/v1/auth/users", "auth.users", "Every user (root)", answers(UsersAnswer, 504)),
    Route(
        "POST",
        "/v1/auth/users",
        "auth.add_user",
        "Add a user (root), with a password or none (a client certificate names it)",
        answers(UserAnswer, 408, 409, 413, 504),
        body=UserBody,
    ),
    Route(
        "GET",
        "/v1/auth/users/{name}",
        "auth.user",
        "A user and its roles (root, or the user itself)",
        answers(UserAnswer, 404, 504),
        (USER,),
    ),
    Route(
        "DELETE",
        "/v1/auth/users/{name}",
        "auth.delete_user",
        "Delete a user (root); its tokens end",
        answers(AuthStatusAnswer, 404, 409, 504),
        (USER,),
    ),
    Route(
        "PUT",
        "/v1/auth/users/{name}/password",
        "auth.change_password",
        "Change a user's password (root, or the user itself); its tokens end",
        answers(AuthStatusAnswer, 404, 408, 413, 504),
        (USER,),
        PasswordBody,
    ),
    Route(
        "POST",
        "/v1/auth/users/{name}/roles",
        "auth.grant_role",
        "Grant a user a role (root)",
        answers(UserAnswer, 404, 408, 409, 413, 504),
        (USER,),
        GrantRoleBody,
    ),
    Route(
        "DELETE",
        "/v1/auth/users/{name}/roles/{role}",
        "auth.revoke_role",
        "Take a role from a user (root)",
        answers(UserAnswer, 404, 409, 504),
        (USER, Parameter("role", _NAME, "The role's name.", location="path")),
    ),
    Route(
        "GET",
        "/v1/auth/roles",
        "auth.roles",
        "Every role and its permissions (root)",
        answers(RolesAnswer, 406, 504),
        (ENCODING,),
    ),
    Route(
        "POST",
        "/v1/auth/roles",
        "auth.add_role",
        "Add a role (root)",
        answers(RoleAnswer, 408, 409, 413, 504),
        body=RoleBody,
    ),
    Route(
        "GET",
        "/v1/auth/roles/{name}",
        "auth.role",
        "A role and its permissions (root)",
        answers(RoleAnswer, 404, 406, 504),
        (ROLE, ENCODING),
    ),
    Route(
        "DELETE",
        "/v1/auth/roles/{name}",
        "auth.delete_role",
        "Delete a role (root); its users lose it",
        answers(AuthStatusAnswer, 404, 409, 504),
        (ROLE,),
    ),
    Route(
        "POST",
        "/v1/auth/roles/{name}/permissions",
        "auth.grant_permission",
        "Give a role read, write or readwrite on a key, a prefix or a range (root); one on "
        "the same range is replaced",
        answers(RoleAnswer, 404, 406, 408, 409, 413, 504),
        (ROLE, ENCODING),
        PermissionBody,
    ),
    Route(
        "DELETE",
        "/v1/auth/roles/{name}/permissions",
        "auth.revoke_permission",
        "Take from a role its permission on exactly this range (root)",
        answers(RoleAnswer, 404, 406, 409, 504),
        (
            ROLE,
            Parameter("key", _STRING, "The permission's key."),
            RANGE_END,
            PREFIX,
            ENCODING,
        ),
    ),
    Route("GET", "/health", "node.health", "Liveness", answers(HealthAnswer)),
    Route(
        "GET",
        "/ready",
        "node.ready",
        "Readiness (503 with the reason when not ready)",
        {
            200: Response("Ready", ReadyAnswer),
            503: Response("Not ready", ReadyAnswer),
            500: error(500),
        },
    ),
    Route(
        "GET",
        "/v1/snapshot",
        "backups.snapshot",
        "A backup of the whole state at a linearizable point (streamed)",
        {
            200: Response(
                "The backup file (raftkv.server.backup)",
                {"type": "string", "format": "binary"},
                "application/octet-stream",
            ),
            500: error(500),
            503: error(503),
            504: error(504),
        },
    ),
    Route(
        "GET",
        "/metrics",
        "metrics.handler",
        "Prometheus metrics (text exposition format)",
        {200: Response("Metrics", _STRING, "text/plain")},
    ),
    Route(
        "GET",
        "/openapi.json",
        "node.openapi",
        "This document",
        {200: Response("OpenAPI 3.1", {"type": "object"})},
    ),
    # The web console (raftkv.server.console; docs/console.md).
    Route(
        "GET",
        "/ui",
        "console.page",
        "The web console: the cluster at a glance, keys, watches, leases, actions",
        {200: Response("The page", _STRING, "text/html"), 500: error(500)},
    ),
    Route(
        "GET",
        "/ui/{asset:[A-Za-z0-9][A-Za-z0-9._-]*}",
        "console.asset",
        "A file of the web console's page (script, style sheet, icon)",
        {
            200: Response("The file", _STRING, "application/octet-stream"),
            **{status: error(status) for status in (404, 500)},
        },
        (
            Parameter(
                "asset",
                {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
                "The file's name (404 for a name that is not one of the page's files).",
                location="path",
            ),
        ),
    ),
    Route(
        "GET",
        "/v1/events",
        "console.list_events",
        "This node's recent cluster events: leader changes, elections, membership changes, "
        "snapshots, compactions, lease expiries (a bounded ring)",
        answers(EventsAnswer),
        (Parameter("after", _COUNT, "Only the events with a seq above this one."),),
    ),
    Route(
        "GET",
        "/v1/console/history",
        "console.list_history",
        "This node's metrics over the last minutes, one point per interval (writes/s, "
        "reads/s, latency, commit index, fsync latency, event-loop lag)",
        answers(HistoryAnswer),
        (
            Parameter(
                "after",
                {"type": "number", "minimum": 0},
                "Only the points later than this time (Unix seconds).",
            ),
        ),
    ),
    Route(
        "GET",
        "/v1/console/node",
        "console.node",
        "This node's status, health and version",
        answers(ConsoleNodeAnswer),
    ),
    Route(
        "GET",
        "/v1/console/members",
        "console.members",
        "Every member's status, health and version, each asked at its client URL by this "
        "node (a member that does not answer shows as unreachable)",
        answers(ConsoleMembersAnswer),
    ),
    Route(
        "POST",
        "/set",
        "kv.set",
        "The seed's put: {key, value}",
        answers(PutAnswer, 406, 408, 413, 504, 507),
        (ENCODING,),
        SetBody,
    ),
    Route(
        "GET",
        "/get/{key:[\\s\\S]*}",
        "kv.get",
        "The seed's get",
        answers(GetAnswer, 404, 406, 410, 413, 504),
        KEY_READ,
    ),
)
