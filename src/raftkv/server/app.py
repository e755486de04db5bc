"""The HTTP/JSON API over `KvService` (aiohttp for HTTP, msgspec for validation and JSON).

Routes (every body and answer is JSON):
- `PUT /v1/kv/{key}` `{"value", "lease"?, "prev_kv"?, "client_id"?, "sequence"?}`
  -> `{"header", "prev_kv"?}`; `POST /set {"key", "value"}` is the seed's spelling of it.
- `GET /v1/kv/{key}` (`revision`, `consistency`) -> `{"header", "kv"}`, or 404 `not_found`;
  `GET /get/{key}` is the seed's spelling of it.
- `DELETE /v1/kv/{key}` (`prefix=true` deletes every key starting with `key`; `prev_kv`;
  `client_id` and `sequence` for exactly-once) -> `{"header", "deleted", "prev_kvs"?}`.
- `GET /v1/kv` (`key`, `range_end` or `prefix`, `limit`, `revision`, `keys_only`,
  `count_only`, `consistency`) -> `{"header", "kvs", "count", "more"}`. At most
  `max_response_bytes` of key-values are answered (ReadLimits), `more` set if some were
  left out, by it or by `limit`.
- `POST /v1/txn` `{"compares", "success", "failure", "client_id"?, "sequence"?}`; an op is
  `{"op": "put"|"range"|"delete", "key", ...}` -> `{"header", "succeeded", "responses"}`.
  A txn without put or delete ops is a read (KvService.txn): never in the log, and
  `consistency` applies.
- `POST /v1/compact {"revision"}` -> `{"header"}`.
- Leases (`raftkv.server.lease_api`): `POST /v1/lease {"ttl", "id"?}`,
  `POST /v1/lease/{id}/keepalive`, `GET /v1/lease/{id}` (`keys=true`),
  `DELETE /v1/lease/{id}`, `GET /v1/leases`; `PUT /v1/kv/{key}` takes `"lease": id`.
- `GET /v1/watch` (`raftkv.server.watch_api`): a watch as a stream of NDJSON messages.
- `GET /metrics`: Prometheus metrics (`raftkv.server.metrics`).
- `GET /v1/snapshot`: a backup file (`raftkv.server.backup`) of the state at a
  linearizable point, streamed (`raftkv snapshot save`).
- `GET /health` -> `{"status": "ok"}`; `GET /ready`; `GET /v1/status` -> this node's Raft
  and MVCC state; `GET /v1/cluster` -> the members; `GET /openapi.json`.
- Membership (`raftkv.server.cluster_api`): `POST /v1/members {"id", "peer_url"}` adds a
  learner, `POST /v1/members/{id}/promote`, `DELETE /v1/members/{id}` -> the members;
  `POST /v1/leader/transfer {"to"?}` (on the leader) -> `{"leader"}`.

Every `header` is `{"revision", "leader"}` (the store's revision once the request took
effect, and the leader this node knows, 0 if none).

Keys and values are UTF-8 strings; with the query parameter `encoding=base64` every key,
range end, value and compare value in the request and the answer is base64 instead. A
stored value that is not UTF-8, read without `encoding=base64`, is refused with 406
`not_utf8` rather than altered.

Reads are linearizable unless `consistency=serializable` (local, possibly stale). No
request may stall the event loop (which runs Raft too): scans run on read threads, large
answers are built there, and the client port has its limits (raftkv.server.listener).

Errors: every refusal is `{"error": {"code", "message"}}`:
- 400: `invalid_json`, `invalid_request` (wrong types, unknown fields, bad query values),
  `invalid_base64`, `empty_key`, `duplicate_key`, `future_revision`, `body_incomplete`
  (the connection closed mid-body), `invalid_body` (a body that cannot be read);
- 404 `not_found` (no such key), `lease_not_found` (no such lease: never granted, revoked
  or expired) or `unknown_route` (no such path), 405 `method_not_allowed`;
- 406 `not_utf8`; 409 `stale_sequence` (a late duplicate of an exactly-once write),
  `session_expired` (an exactly-once write whose session the store no longer holds: not
  applied; start a new session),
  `not_caught_up` (a learner too far behind to promote), `lease_exists` (a grant naming a
  live lease's id);
- 408 `body_timeout`: the body did not arrive within `HttpSettings.body_timeout_s`;
- 410 `compacted`: the revision asked for is older than the compacted revision (the history
  is gone for good, which is what 410 Gone says; a future revision is a 400); the error
  also carries `compact_revision` and `oldest_revision`;
- 413 `body_too_large` (over `HttpSettings.max_body_bytes`), `limit_exceeded` (a key,
  value or txn over a `KvSettings` limit), `command_too_large` (over the node's
  `max_command_bytes`), `scan_too_large` (ranges scanning more than `ReadLimits`
  allows);
- 415 `unsupported_content_encoding`: a compressed body (never inflated);
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
- 500 `internal` for anything unexpected (logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, assert_never

import msgspec
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from raftkv.api.cluster import (
    AddMemberBody,
    AlarmAnswer,
    HealthAnswer,
    ReadyAnswer,
    StatusAnswer,
    TransferAnswer,
    TransferBody,
)
from raftkv.api.keys import Header
from raftkv.api.kv import (
    CompactAnswer,
    CompactBody,
    CompareBody,
    DeleteAnswer,
    DeleteOpAnswer,
    DeleteOpBody,
    GetAnswer,
    OpAnswer,
    OpBody,
    PutAnswer,
    PutBody,
    PutOpAnswer,
    PutOpBody,
    RangeAnswer,
    RangeOpAnswer,
    RangeOpBody,
    SetBody,
    TxnAnswer,
    TxnBody,
)
from raftkv.kv.commands import (
    DeleteRange,
    DeleteRangeResponse,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    RequestOp,
    ResponseOp,
    Txn,
    TxnCompare,
    TxnResponse,
)
from raftkv.kv.errors import (
    Compacted,
    FutureRevision,
    KvError,
    LeaseExists,
    LeaseNotFound,
    LimitExceeded,
    SessionExpired,
    StaleSequence,
)
from raftkv.kv.layout import CorruptAlarm
from raftkv.kv.service import KvService
from raftkv.raft.core.errors import ConfigInvalid, InvalidArgument, NotLeader, ProposalDropped
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.errors import (
    LearnerNotCaughtUp,
    MembershipError,
    OutcomeUnknown,
    Overloaded,
    ProposalTimeout,
    ReadTimeout,
    Stopped,
)
from raftkv.raft.storage.base import StorageClosed
from raftkv.server.backup import FORMAT_VERSION as BACKUP_FORMAT_VERSION
from raftkv.server.backup import BackupHeader, backup_chunks, encode_prefix
from raftkv.server.cluster_api import cluster_answer
from raftkv.server.http_common import (
    BODY_TIMEOUT,
    ApiError,
    Codec,
    bool_query,
    decode_body,
    error_response,
    int_query,
    json_answer,
    key_range,
    key_value_answer,
    serializable_query,
)
from raftkv.server.lease_api import LeaseHandlers
from raftkv.server.metrics import Metrics
from raftkv.server.openapi import openapi_document_bytes
from raftkv.server.removal import guard_removal
from raftkv.server.watch_api import WatchHandlers

__all__ = ["HttpSettings", "create_app"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    # The largest request body accepted (413 `body_too_large` beyond). etcd's default
    # request limit is 1.5 MiB; 2 MiB leaves room for a 1 MiB value base64-encoded (4/3)
    # plus JSON framing. Larger bodies cost memory per connection before validation.
    max_body_bytes: int = 2 << 20
    # How long a request body may take to arrive whole (408 `body_timeout` beyond): a
    # client trickling its body holds a connection and a handler that long at most.
    body_timeout_s: float = 10.0
    # How long a write waits for its outcome, or a linearizable read for its read point,
    # on the node's clock (504 `timeout` beyond). Short answers a client sooner during a
    # leader change, but makes more writes end with an unknown outcome.
    request_timeout_s: float = 10.0
    # /ready answers 503 while more committed entries than this wait to be applied (a
    # restarting node replaying its log, a follower catching up).
    ready_max_apply_lag: int = 1000
    # Backups (GET /v1/snapshot) made at once; more are refused with 503 `busy`. Each holds
    # the whole encoded state in memory while it is made.
    max_concurrent_backups: int = 1
    # A watch stream whose writes stay blocked this long (its client stopped reading) is
    # ended with `too_slow`.
    watch_send_timeout_s: float = 10.0
    # The progress notification interval of a watch that asks for them without its own.
    watch_progress_interval_s: float = 10.0
    # A watch served by a member that has had no leader this long (cut off from the rest,
    # so its state may be stale) is ended with `no_leader`, for the client to resume on
    # another member (etcd's require-leader watches). 0: never.
    watch_no_leader_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        size = self.max_body_bytes
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigInvalid(f"HttpSettings.max_body_bytes must be >= 1, got {size!r}")
        timeout = self.request_timeout_s
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0 < timeout < float("inf")
        ):
            raise ConfigInvalid(
                f"HttpSettings.request_timeout_s must be a positive number, got {timeout!r}"
            )
        backups = self.max_concurrent_backups
        if not isinstance(backups, int) or isinstance(backups, bool) or backups < 1:
            raise ConfigInvalid(
                f"HttpSettings.max_concurrent_backups must be >= 1, got {backups!r}"
            )
        for name in ("watch_send_timeout_s", "watch_progress_interval_s", "body_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigInvalid(f"HttpSettings.{name} must be a positive number, got {value!r}")
        no_leader = self.watch_no_leader_timeout_s
        if not isinstance(no_leader, (int, float)) or not 0 <= no_leader < float("inf"):
            raise ConfigInvalid(
                f"HttpSettings.watch_no_leader_timeout_s must be >= 0, got {no_leader!r}"
            )
        lag = self.ready_max_apply_lag
        if not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
            raise ConfigInvalid(f"HttpSettings.ready_max_apply_lag must be >= 0, got {lag!r}")


PutAnswerT = TypeVar("PutAnswerT", bound=PutAnswer)
DeleteAnswerT = TypeVar("DeleteAnswerT", bound=DeleteAnswer)
RangeAnswerT = TypeVar("RangeAnswerT", bound=RangeAnswer)
BodyT = TypeVar("BodyT", PutBody, SetBody, CompactBody, TxnBody, AddMemberBody, TransferBody)


# -- errors ----------------------------------------------------------------------------------


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
        case FutureRevision():
            return 400
        case _:
            return 400


def _service_error(error: Exception) -> web.Response | None:
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
                oldest_revision=error.compact_revision + 1,
            )
        case KvError():
            return error_response(_kv_error_status(error), error.code, str(error))
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
        case InvalidArgument():
            # The only one a request can cause: an encoded command over max_command_bytes.
            return error_response(413, "command_too_large", str(error))
        case _:
            return None


@web.middleware
async def _encoding_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse a compressed request body (415) before anything reads it: the API never
    needs one, and inflating one is where a small "gzip bomb" costs seconds of CPU. (The
    server does not inflate bodies itself: raftkv.server.listener.)"""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip()
    if encoding.lower() != "identity":
        response = error_response(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {encoding[:64]!r} is not accepted: send the body uncompressed",
        )
        response.force_close()
        return response
    return await handler(request)


# MembershipError.code -> (HTTP status, error code).
_MEMBERSHIP_ERRORS = {
    "invalid": (400, "invalid_member_change"),
    "busy": (503, "busy"),
    # The request never reached the leader this node knew: nothing changed; retry.
    "not_sent": (503, "unavailable"),
    # The leader did not answer: the change may have been made.
    "unreachable": (504, "timeout"),
}

_HTTP_CODES = {
    404: "unknown_route",
    405: "method_not_allowed",
    413: "body_too_large",
}


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "http_error")
        return error_response(error.status, code, error.reason)
    except Exception as error:
        response = _service_error(error)
        if response is not None:
            return response
        logger.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, "internal", f"internal error: {type(error).__name__}")


# Routes a CORRUPT member still serves (by route template): its own state and the
# cluster's, membership changes (an operator removes it through any member), metrics and
# the API document. Every other route reads or writes the data, which may be wrong here.
_SERVED_WHEN_CORRUPT = frozenset(
    {
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/v1/status",
        "/v1/cluster",
        "/v1/members",
        "/v1/members/{id}",
        "/v1/members/{id}/promote",
        "/v1/leader/transfer",
    }
)


def _corrupt_guard(service: KvService) -> Middleware:
    """Refuse (503 `corrupt`) every data route while a CORRUPT alarm names this member."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical not in _SERVED_WHEN_CORRUPT:
            alarm = service.corrupt_alarm()
            if alarm is not None:
                return error_response(503, "corrupt", _corrupt_reason(service.member_id, alarm))
        return await handler(request)

    return guard


def _corrupt_reason(me: NodeId, alarm: CorruptAlarm) -> str:
    """Why member `me`, named by `alarm`, refuses client requests."""
    return (
        f"member {me} is CORRUPT: the hash check at log index {alarm.check_index} "
        f"found its state different ({alarm.reason}); it serves no client "
        "requests: use another member"
    )


# -- codec: str <-> bytes for keys and values ------------------------------------------------


# -- query parameters ------------------------------------------------------------------------


_MAX_PEER_URL = 255


def _member_id(text: str) -> NodeId:
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) < 1:
        raise ApiError(400, "invalid_request", f"a member id is a positive integer, got {text!r}")
    return NodeId(int(text))


# -- the application -------------------------------------------------------------------------


async def _body(request: web.Request, kind: type[BodyT]) -> BodyT:
    return await decode_body(request, kind, request.app[_SETTINGS].max_body_bytes)


_SETTINGS = web.AppKey("settings", HttpSettings)
_SERVICE = web.AppKey("service", KvService)
# The app's Prometheus metrics (its own registry).
METRICS = web.AppKey("metrics", Metrics)
# The watch handlers (their counters feed the metrics).
WATCHES = web.AppKey("watches", WatchHandlers)


@dataclass(frozen=True, slots=True)
class _Answers:
    """Builds the answers of KV results, with the leader this node knew when the request
    was served: read once, on the loop, so that a large answer can be built on a worker
    thread (`_respond`) without reading the node. Each method builds the plain answer, or
    (given the txn's tagged subclass) a txn response."""

    leader: int
    codec: Codec

    def header(self, revision: int) -> Header:
        return Header(revision=revision, leader=self.leader)

    def put(self, result: PutResponse, kind: type[PutAnswerT]) -> PutAnswerT:
        codec = self.codec
        prev_kv = None if result.prev_kv is None else key_value_answer(result.prev_kv, codec)
        return kind(header=self.header(result.header.revision), prev_kv=prev_kv)

    def delete(self, result: DeleteRangeResponse, kind: type[DeleteAnswerT]) -> DeleteAnswerT:
        return kind(
            header=self.header(result.header.revision),
            deleted=result.deleted,
            prev_kvs=[key_value_answer(kv, self.codec) for kv in result.prev_kvs],
        )

    def range(self, result: RangeResponse, kind: type[RangeAnswerT]) -> RangeAnswerT:
        return kind(
            header=self.header(result.header.revision),
            kvs=[key_value_answer(kv, self.codec) for kv in result.kvs],
            count=result.count,
            more=result.more,
        )

    def txn(self, result: TxnResponse) -> TxnAnswer:
        return TxnAnswer(
            header=self.header(result.header.revision),
            succeeded=result.succeeded,
            responses=[self._op(item) for item in result.responses],
        )

    def _op(self, result: ResponseOp) -> OpAnswer:
        match result:
            case RangeResponse():
                return self.range(result, RangeOpAnswer)
            case PutResponse():
                return self.put(result, PutOpAnswer)
            case DeleteRangeResponse():
                return self.delete(result, DeleteOpAnswer)
            case _:
                assert_never(result)


# Answers with more key-values than this are built and encoded on a worker thread: up to
# max_response_bytes of small key-values take tens of milliseconds to convert and encode.
_LARGE_ANSWER_KVS = 1000


async def _respond(build: Callable[[], object], kvs: int) -> web.Response:
    """The JSON answer `build()` makes, built and encoded on a worker thread if it holds
    more than _LARGE_ANSWER_KVS key-values."""
    if kvs <= _LARGE_ANSWER_KVS:
        return json_answer(build())
    body = await asyncio.get_running_loop().run_in_executor(
        None, lambda: msgspec.json.encode(build())
    )
    return web.Response(body=body, content_type="application/json")


class _Handlers:
    def __init__(self, service: KvService, settings: HttpSettings) -> None:
        self.service = service
        self.settings = settings
        self.timeout = settings.request_timeout_s
        # Backups being made now (each holds a whole encoded state in memory).
        self.backups_in_progress = 0

    def _header(self, revision: int) -> Header:
        return Header(revision=revision, leader=int(self.service.leader_id))

    def _answers(self, codec: Codec) -> _Answers:
        return _Answers(int(self.service.leader_id), codec)

    # -- writes

    async def _put(self, key: bytes, body: PutBody, codec: Codec) -> web.Response:
        result = await self.service.put(
            key,
            codec.decode(body.value, "value"),
            lease=body.lease,
            prev_kv=body.prev_kv,
            client_id=body.client_id,
            sequence=body.sequence,
            timeout=self.timeout,
        )
        return json_answer(self._answers(codec).put(result, PutAnswer))

    async def put(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        key = codec.decode(request.match_info["key"], "key")
        return await self._put(key, await _body(request, PutBody), codec)

    async def set(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        body = await _body(request, SetBody)
        key = codec.decode(body.key, "key")
        return await self._put(key, PutBody(value=body.value), codec)

    async def delete(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        key = codec.decode(request.match_info["key"], "key")
        if not key:  # refuse before widening an empty prefix to every key
            raise ApiError(400, "empty_key", "delete: key is empty")
        key, range_end = key_range(key, b"", bool_query(request, "prefix"))
        result = await self.service.delete_range(
            key,
            range_end,
            prev_kv=bool_query(request, "prev_kv"),
            client_id=request.query.get("client_id", ""),
            sequence=int_query(request, "sequence"),
            timeout=self.timeout,
        )
        return json_answer(self._answers(codec).delete(result, DeleteAnswer))

    async def txn(self, request: web.Request) -> web.Response:
        """A txn without writes is a read: `consistency` applies (see KvService.txn)."""
        codec = Codec.of(request)
        serializable = serializable_query(request)
        body = await _body(request, TxnBody)
        txn = Txn(
            compares=[self._compare(compare, codec) for compare in body.compares],
            success=[self._op(op, codec) for op in body.success],
            failure=[self._op(op, codec) for op in body.failure],
        )
        result: TxnResponse = await self.service.txn(
            txn,
            serializable=serializable,
            client_id=body.client_id,
            sequence=body.sequence,
            timeout=self.timeout,
        )
        answers = self._answers(codec)
        kvs = sum(len(item.kvs) for item in result.responses if isinstance(item, RangeResponse))
        return await _respond(lambda: answers.txn(result), kvs)

    @staticmethod
    def _compare(compare: CompareBody, codec: Codec) -> TxnCompare:
        value: bytes | int = (
            compare.value
            if isinstance(compare.value, int)
            else (codec.decode(compare.value, "compare value"))
        )
        return TxnCompare(
            key=codec.decode(compare.key, "compare key"),
            target=compare.target,
            op=compare.op,
            value=value,
        )

    @staticmethod
    def _op(op: OpBody, codec: Codec) -> RequestOp:
        key = codec.decode(op.key, "key")
        match op:
            case RangeOpBody():
                key, range_end = key_range(key, codec.decode(op.range_end, "range_end"), op.prefix)
                return Range(
                    key=key,
                    range_end=range_end,
                    limit=op.limit,
                    revision=op.revision,
                    keys_only=op.keys_only,
                    count_only=op.count_only,
                )
            case PutOpBody():
                return Put(
                    key=key,
                    value=codec.decode(op.value, "value"),
                    lease=op.lease,
                    prev_kv=op.prev_kv,
                )
            case DeleteOpBody():
                if not key:
                    raise ApiError(400, "empty_key", "txn delete: key is empty")
                key, range_end = key_range(key, codec.decode(op.range_end, "range_end"), op.prefix)
                return DeleteRange(key=key, range_end=range_end, prev_kv=op.prev_kv)
            case _:
                assert_never(op)

    async def compact(self, request: web.Request) -> web.Response:
        body = await _body(request, CompactBody)
        result = await self.service.compact(body.revision, timeout=self.timeout)
        return json_answer(CompactAnswer(header=self._header(result.header.revision)))

    # -- reads

    async def get(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        key = codec.decode(request.match_info["key"], "key")
        query = Range(key=key, revision=int_query(request, "revision"))
        result = await self.service.range(
            query, serializable=serializable_query(request), timeout=self.timeout
        )
        if not result.kvs:
            raise ApiError(404, "not_found", f"key {request.match_info['key']!r} not found")
        return json_answer(
            GetAnswer(
                header=self._header(result.header.revision),
                kv=key_value_answer(result.kvs[0], codec),
            )
        )

    async def range(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        key = codec.decode(request.query.get("key", ""), "key")
        range_end = codec.decode(request.query.get("range_end", ""), "range_end")
        key, range_end = key_range(key, range_end, bool_query(request, "prefix"))
        query = Range(
            key=key,
            range_end=range_end,
            limit=int_query(request, "limit"),
            revision=int_query(request, "revision"),
            keys_only=bool_query(request, "keys_only"),
            count_only=bool_query(request, "count_only"),
        )
        result = await self.service.range(
            query, serializable=serializable_query(request), timeout=self.timeout
        )
        answers = self._answers(codec)
        return await _respond(lambda: answers.range(result, RangeAnswer), len(result.kvs))

    # -- the node

    async def health(self, request: web.Request) -> web.Response:
        """Liveness: the process answers, and its node has not failed. A node that hit an
        error it cannot continue from answers 503 `failed` for the moment until the
        process exits (non-zero, so a supervisor restarts it)."""
        failure = self.service.failure
        if failure is not None:
            return json_answer(
                HealthAnswer(status="failed", reason=f"the node failed: {failure}"), status=503
            )
        return json_answer(HealthAnswer(status="ok"))

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: see ReadyAnswer."""
        reason = self._not_ready_reason()
        return json_answer(
            ReadyAnswer(ready=not reason, reason=reason), status=503 if reason else 200
        )

    def _not_ready_reason(self) -> str:
        status = self.service.status()
        if status.stopped:
            return "the node is stopped"
        if status.removed:
            return "the node was removed from the cluster"
        alarm = self.service.corrupt_alarm()
        if alarm is not None:
            return _corrupt_reason(status.id, alarm)
        if status.id not in status.voters and status.id not in status.learners:
            return "the node is not a member yet"
        if status.leader_id == 0:
            return "no leader is known"
        lag = status.commit_index - status.applied_index
        if lag > self.settings.ready_max_apply_lag:
            return f"applying: {lag} committed entries not applied yet"
        return ""

    async def status(self, request: web.Request) -> web.Response:
        # The hash first: it is read off the loop, and the rest must be as of the answer.
        digest = await self.service.state_hash() if bool_query(request, "hash") else ""
        service = self.service
        status = service.status()
        return json_answer(
            StatusAnswer(
                id=int(status.id),
                leader=int(status.leader_id),
                term=status.term,
                role=status.role.name.lower(),
                commit_index=status.commit_index,
                applied_index=status.applied_index,
                revision=service.current_revision(),
                compacted_revision=service.compacted_revision(),
                first_index=status.first_index,
                last_index=status.last_index,
                snapshot_index=status.snapshot_index,
                pending_proposals=status.pending_proposals,
                pending_reads=status.pending_reads,
                hash=digest,
                alarms=[
                    AlarmAnswer("CORRUPT", alarm.member_id, alarm.check_index, alarm.reason)
                    for alarm in service.corrupt_alarms()
                ],
                removed=status.removed,
            )
        )

    async def cluster(self, request: web.Request) -> web.Response:
        return json_answer(cluster_answer(self.service))

    # -- membership

    async def add_member(self, request: web.Request) -> web.Response:
        body = await _body(request, AddMemberBody)
        member = _member_id(str(body.id))
        # The transport decides what an address looks like (host:port for gRPC); here only
        # that there is one, of a sane size.
        if not 0 < len(body.peer_url) <= _MAX_PEER_URL:
            raise ApiError(
                400, "invalid_request", f"peer_url must have 1..{_MAX_PEER_URL} characters"
            )
        await self.service.add_learner(member, body.peer_url, timeout=self.timeout)
        return json_answer(cluster_answer(self.service))

    async def promote_member(self, request: web.Request) -> web.Response:
        member = _member_id(request.match_info["id"])
        await self.service.promote(member, timeout=self.timeout)
        return json_answer(cluster_answer(self.service))

    async def remove_member(self, request: web.Request) -> web.Response:
        member = _member_id(request.match_info["id"])
        await self.service.remove_member(member, timeout=self.timeout)
        return json_answer(cluster_answer(self.service))

    async def transfer_leadership(self, request: web.Request) -> web.Response:
        body = await _body(request, TransferBody)
        target = None if body.to == 0 else _member_id(str(body.to))
        leader = await self.service.transfer_leadership(target, timeout=self.timeout)
        return json_answer(TransferAnswer(leader=int(leader)))

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        """A backup (raftkv.server.backup) of the state at a linearizable point: it holds
        every write acknowledged before the request. Frozen on the loop (a checkpoint),
        encoded on a worker thread, streamed in chunks."""
        if self.backups_in_progress >= self.settings.max_concurrent_backups:
            raise ApiError(
                503,
                "busy",
                f"{self.backups_in_progress} backup(s) in progress on this node "
                f"(max_concurrent_backups={self.settings.max_concurrent_backups}); retry later",
            )
        self.backups_in_progress += 1
        try:
            return await self._stream_backup(request)
        finally:
            self.backups_in_progress -= 1

    async def _stream_backup(self, request: web.Request) -> web.StreamResponse:
        frozen = await self.service.backup_snapshot(timeout=self.timeout)
        payload = await asyncio.get_running_loop().run_in_executor(None, frozen.produce)
        header = BackupHeader(
            format_version=BACKUP_FORMAT_VERSION,
            index=frozen.index,
            term=frozen.term,
            revision=frozen.revision,
            node_id=int(self.service.member_id),
            payload_bytes=len(payload),
        )
        total = len(encode_prefix(header)) + len(payload) + 32
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(total),
                "X-Raftkv-Index": str(frozen.index),
                "X-Raftkv-Revision": str(frozen.revision),
            }
        )
        await response.prepare(request)
        for chunk in backup_chunks(header, payload, 1 << 20):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=openapi_document_bytes(), content_type="application/json")


def create_app(service: KvService, settings: HttpSettings | None = None) -> web.Application:
    """The aiohttp application serving `service`'s node (see the module docstring)."""
    settings = settings if settings is not None else HttpSettings()
    # client_max_size makes request.read() itself refuse a body over the limit (a chunked
    # body has no Content-Length to check up front).
    # The metrics middleware is outermost, so it sees the status the errors middleware
    # answers with. The metrics read the node's and the state machine's counters
    # themselves (read-only): the one way around the service, which serves requests.
    metrics = Metrics(service.node, service.machine)
    app = web.Application(
        middlewares=[
            metrics.middleware,
            _errors_middleware,
            _encoding_middleware,
            _corrupt_guard(service),
        ],
        client_max_size=settings.max_body_bytes,
    )
    app.cleanup_ctx.append(metrics.loop_lag)
    app[METRICS] = metrics
    app[BODY_TIMEOUT] = settings.body_timeout_s
    app[_SETTINGS] = settings
    app[_SERVICE] = service
    handlers = _Handlers(service, settings)
    leases = LeaseHandlers(service, settings.request_timeout_s, settings.max_body_bytes)
    watches = WatchHandlers(
        service,
        settings.watch_send_timeout_s,
        settings.watch_progress_interval_s,
        no_leader_timeout_s=settings.watch_no_leader_timeout_s,
    )
    app[WATCHES] = watches
    metrics.watches = watches
    app.router.add_routes(leases.routes() + watches.routes())
    guard_removal(app, service)
    app.router.add_routes(
        [
            web.put("/v1/kv/{key:[\\s\\S]*}", handlers.put),
            web.get("/v1/kv/{key:[\\s\\S]*}", handlers.get, allow_head=False),
            web.delete("/v1/kv/{key:[\\s\\S]*}", handlers.delete),
            web.get("/v1/kv", handlers.range, allow_head=False),
            web.post("/v1/txn", handlers.txn),
            web.post("/v1/compact", handlers.compact),
            web.get("/v1/status", handlers.status, allow_head=False),
            web.get("/v1/cluster", handlers.cluster, allow_head=False),
            web.post("/v1/members", handlers.add_member),
            web.post("/v1/members/{id}/promote", handlers.promote_member),
            web.delete("/v1/members/{id}", handlers.remove_member),
            web.post("/v1/leader/transfer", handlers.transfer_leadership),
            web.get("/health", handlers.health, allow_head=False),
            web.get("/ready", handlers.ready, allow_head=False),
            web.get("/openapi.json", handlers.openapi, allow_head=False),
            web.get("/metrics", metrics.handler, allow_head=False),
            web.get("/v1/snapshot", handlers.snapshot, allow_head=False),
            web.post("/set", handlers.set),
            web.get("/get/{key:[\\s\\S]*}", handlers.get, allow_head=False),
        ]
    )
    return app
