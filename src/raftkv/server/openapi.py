"""`/openapi.json`: the HTTP API described as OpenAPI 3.1, derived from `raftkv.api`.

Schemas come from the msgspec structs the server itself decodes requests and encodes answers
with, so they cannot drift apart; the routes, parameters and status codes are listed here
beside them, and a test runs schemathesis against a live node to check the server keeps to
the document (every answer's status, content type and body).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from raftkv.api.cluster import (
    AddMemberBody,
    ClusterAnswer,
    HealthAnswer,
    ReadyAnswer,
    StatusAnswer,
    TransferAnswer,
    TransferBody,
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

__all__ = ["openapi_document", "openapi_document_bytes"]

_REF = "#/components/schemas/{name}"
_STRUCTS: tuple[type[msgspec.Struct], ...] = (
    PutBody,
    SetBody,
    CompactBody,
    TxnBody,
    PutAnswer,
    GetAnswer,
    DeleteAnswer,
    RangeAnswer,
    TxnAnswer,
    CompactAnswer,
    StatusAnswer,
    ClusterAnswer,
    HealthAnswer,
    ReadyAnswer,
    ErrorAnswer,
    AddMemberBody,
    TransferBody,
    TransferAnswer,
    LeaseGrantBody,
    LeaseGrantAnswer,
    LeaseKeepAliveAnswer,
    LeaseRevokeAnswer,
    LeaseAnswer,
    LeasesAnswer,
    WatchCreated,
    WatchEvents,
    WatchProgress,
    WatchCanceled,
)

_ERROR_TEXT = {
    "400": "Bad request: invalid_json, invalid_request, invalid_base64, empty_key, "
    "duplicate_key, future_revision, body_incomplete, invalid_body",
    "404": "not_found: no such key; lease_not_found: no such lease (never granted, revoked "
    "or expired); unknown_route: no such path",
    "406": "not_utf8: the stored key or value is not UTF-8; ask with encoding=base64",
    "408": "body_timeout: the request body did not arrive whole within the server's "
    "http_body_timeout_s",
    "409": "stale_sequence: a late duplicate of an exactly-once write; session_expired: the "
    "store no longer holds the write's session (not applied; start a new one); "
    "not_caught_up: the learner lags too far to be promoted; lease_exists: a grant asked for "
    "the id of a live lease",
    "410": "compacted: the revision asked for is older than the compacted revision (the "
    "error carries compact_revision and oldest_revision)",
    "413": "body_too_large, limit_exceeded, command_too_large, or scan_too_large (the "
    "request's ranges would scan more entries than the server's max_scan_entries; for a "
    "txn that writes, max_txn_scan_entries): nothing applied",
    "415": "unsupported_content_encoding: the body is compressed (Content-Encoding); the "
    "server never inflates a body: send it uncompressed",
    "500": "internal: an unexpected error (logged by the server)",
    "503": "not_leader, proposal_dropped, overloaded, stopped, busy (another membership "
    "change is under way), unavailable, too_many_watches or removed (the member was removed "
    "from the cluster): nothing applied; retry (elsewhere); corrupt: a hash check found this "
    "member's state diverged (see /v1/status alarms): nothing applied; use another member",
    "504": "timeout or outcome_unknown: a write's outcome is unknown (retry with the same "
    "client_id and sequence); a read read nothing",
}


def _ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


def _json_content(kind: type[msgspec.Struct]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(kind)}}


def _responses(answer: type[msgspec.Struct], *errors: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": _json_content(answer)}}
    # Every route can meet a bad query value, a compressed body, a stopped node or an
    # unexpected error.
    for status in sorted({"400", "415", "500", "503", *errors}):
        responses[status] = {
            "description": _ERROR_TEXT[status],
            "content": _json_content(ErrorAnswer),
        }
    return responses


def _body(kind: type[msgspec.Struct]) -> dict[str, Any]:
    return {"required": True, "content": _json_content(kind)}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_ENCODING = _query(
    "encoding",
    {"type": "string", "enum": ["utf-8", "utf8", "base64"]},
    "How keys and values are written in the request and the answer (default utf-8).",
)
_CONSISTENCY = _query(
    "consistency",
    {"type": "string", "enum": ["linearizable", "serializable"]},
    "linearizable (default: ReadIndex through the leader) or serializable (local state).",
)
_REVISION = _query(
    "revision",
    {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1},
    "Read at this past revision (0: the current one).",
)
_BOOLEAN = {"type": "string", "enum": ["true", "false", "1", "0"]}
_MEMBER = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "description": "The member's node id.",
}
_LEASE = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": (1 << 63) - 1},
    "description": "The lease id.",
}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The key (UTF-8, or base64 with encoding=base64).",
}


def _paths() -> dict[str, Any]:
    key_read = [_KEY, _ENCODING, _CONSISTENCY, _REVISION]
    return {
        "/v1/kv/{key}": {
            "put": {
                "summary": "Put a key (any member; forwarded through Raft)",
                "parameters": [_KEY, _ENCODING],
                "requestBody": _body(PutBody),
                "responses": _responses(PutAnswer, "404", "406", "408", "409", "413", "504"),
            },
            "get": {
                "summary": "Get a key (linearizable unless consistency=serializable)",
                "parameters": key_read,
                "responses": _responses(GetAnswer, "404", "406", "410", "413", "504"),
            },
            "delete": {
                "summary": "Delete a key, or every key starting with it (prefix=true)",
                "parameters": [
                    _KEY,
                    _ENCODING,
                    _query("prefix", _BOOLEAN, "Delete every key starting with key."),
                    _query("prev_kv", _BOOLEAN, "Answer with the deleted key-values."),
                    _query(
                        "client_id",
                        {"type": "string", "maxLength": 128},
                        "Exactly-once: the client's id (with sequence).",
                    ),
                    _query(
                        "sequence",
                        {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1},
                        "Exactly-once: this write's number, increasing per client_id.",
                    ),
                ],
                "responses": _responses(DeleteAnswer, "406", "409", "413", "504"),
            },
        },
        "/v1/kv": {
            "get": {
                "summary": "Range over keys: [key, range_end), a prefix, or every key",
                "parameters": [
                    _query("key", {"type": "string"}, "First key of the range."),
                    _query(
                        "range_end",
                        {"type": "string"},
                        "End of the range, exclusive; empty: key alone; '\\0': to the end.",
                    ),
                    _query("prefix", _BOOLEAN, "Every key starting with key (all if empty)."),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1},
                        "At most this many key-values (0: no limit). The server answers "
                        "at most max_response_bytes of key-values whatever the limit, with "
                        "more: true when it leaves keys out.",
                    ),
                    _REVISION,
                    _query("keys_only", _BOOLEAN, "Leave values out."),
                    _query("count_only", _BOOLEAN, "Only count the keys."),
                    _ENCODING,
                    _CONSISTENCY,
                ],
                "responses": _responses(RangeAnswer, "406", "410", "413", "504"),
            }
        },
        "/v1/txn": {
            "post": {
                "summary": "A transaction: compares, then the success or failure ops. One "
                "without put or delete ops is a read (never in the log; consistency applies)",
                "parameters": [
                    _ENCODING,
                    _query(
                        "consistency",
                        {"type": "string", "enum": ["linearizable", "serializable"]},
                        "For a txn without writes: linearizable (default) or serializable. "
                        "A txn that writes goes through the log: serializable is a 400.",
                    ),
                ],
                "requestBody": _body(TxnBody),
                "responses": _responses(TxnAnswer, "404", "406", "408", "409", "410", "413", "504"),
            }
        },
        "/v1/compact": {
            "post": {
                "summary": "Discard history older than a revision",
                "requestBody": _body(CompactBody),
                "responses": _responses(CompactAnswer, "408", "410", "413", "504"),
            }
        },
        "/v1/status": {
            "get": {
                "summary": "This node's Raft and MVCC state",
                "parameters": [_query("hash", _BOOLEAN, "Include the state hash (full scan).")],
                "responses": _responses(StatusAnswer),
            }
        },
        "/v1/cluster": {
            "get": {
                "summary": "The members, the leader and the term, as this node knows them",
                "responses": _responses(ClusterAnswer),
            }
        },
        "/v1/members": {
            "post": {
                "summary": "Add a learner (it votes once promoted)",
                "requestBody": _body(AddMemberBody),
                "responses": _responses(ClusterAnswer, "408", "413", "504"),
            }
        },
        "/v1/members/{id}/promote": {
            "post": {
                "summary": "Promote a caught-up learner to voter (409 not_caught_up if it lags)",
                "parameters": [_MEMBER],
                "responses": _responses(ClusterAnswer, "409", "504"),
            }
        },
        "/v1/members/{id}": {
            "delete": {
                "summary": "Remove a member (the leader included: it hands over first)",
                "parameters": [_MEMBER],
                "responses": _responses(ClusterAnswer, "504"),
            }
        },
        "/v1/leader/transfer": {
            "post": {
                "summary": "Hand leadership to a voter (asked of the leader; 503 elsewhere)",
                "requestBody": _body(TransferBody),
                "responses": _responses(TransferAnswer, "408", "413", "504"),
            }
        },
        "/v1/lease": {
            "post": {
                "summary": "Grant a lease of ttl seconds (id chosen by the server if 0)",
                "requestBody": _body(LeaseGrantBody),
                "responses": _responses(LeaseGrantAnswer, "408", "409", "413", "504"),
            }
        },
        "/v1/lease/{id}/keepalive": {
            "post": {
                "summary": "Renew a lease to its full TTL (answered once applied)",
                "parameters": [_LEASE],
                "responses": _responses(LeaseKeepAliveAnswer, "404", "504"),
            }
        },
        "/v1/lease/{id}": {
            "get": {
                "summary": "A lease's remaining TTL (and its keys with keys=true)",
                "parameters": [
                    _LEASE,
                    _query("keys", _BOOLEAN, "List the keys attached to the lease."),
                    _ENCODING,
                    _CONSISTENCY,
                ],
                "responses": _responses(LeaseAnswer, "404", "406", "504"),
            },
            "delete": {
                "summary": "Revoke a lease: it and its keys are deleted in one revision",
                "parameters": [_LEASE],
                "responses": _responses(LeaseRevokeAnswer, "404", "504"),
            },
        },
        "/v1/leases": {
            "get": {
                "summary": "Every lease with its remaining TTL",
                "parameters": [_CONSISTENCY],
                "responses": _responses(LeasesAnswer, "504"),
            }
        },
        "/v1/watch": {
            "get": {
                "summary": "Watch a key, a prefix or a range: a stream of NDJSON messages, "
                "resumable with start_revision = last revision + 1",
                "parameters": [
                    _query("key", {"type": "string"}, "The key, or first key of the range."),
                    _query(
                        "range_end",
                        {"type": "string"},
                        "End of the range, exclusive; empty: key alone; '\\0': to the end.",
                    ),
                    _query("prefix", _BOOLEAN, "Every key starting with key (all if empty)."),
                    _query(
                        "start_revision",
                        {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1},
                        "First revision to deliver (0: the next one).",
                    ),
                    _query("prev_kv", _BOOLEAN, "Add each key's previous value."),
                    _query("no_put", _BOOLEAN, "Leave put events out."),
                    _query("no_delete", _BOOLEAN, "Leave delete events out."),
                    _query("progress_notify", _BOOLEAN, "Send progress messages when idle."),
                    _query(
                        "progress_interval_s",
                        {"type": "number", "minimum": 0.05, "maximum": 3600},
                        "Seconds between progress messages (default: the server's).",
                    ),
                    _ENCODING,
                ],
                "responses": {
                    "200": {
                        "description": "One JSON message per line: created, then events and "
                        "progress, and canceled last if the server ends the watch",
                        "content": {
                            "application/x-ndjson": {
                                "schema": {
                                    "oneOf": [
                                        _ref(WatchCreated),
                                        _ref(WatchEvents),
                                        _ref(WatchProgress),
                                        _ref(WatchCanceled),
                                    ]
                                }
                            }
                        },
                    },
                    **{
                        status: {
                            "description": _ERROR_TEXT[status],
                            "content": _json_content(ErrorAnswer),
                        }
                        for status in ("400", "406", "410", "413", "415", "500", "503")
                    },
                },
            }
        },
        "/health": {
            "get": {"summary": "Liveness", "responses": _responses(HealthAnswer)},
        },
        "/ready": {
            "get": {
                "summary": "Readiness (503 with the reason when not ready)",
                "responses": {
                    "200": {"description": "Ready", "content": _json_content(ReadyAnswer)},
                    "503": {"description": "Not ready", "content": _json_content(ReadyAnswer)},
                    "500": {
                        "description": _ERROR_TEXT["500"],
                        "content": _json_content(ErrorAnswer),
                    },
                },
            }
        },
        "/v1/snapshot": {
            "get": {
                "summary": "A backup of the whole state at a linearizable point (streamed)",
                "responses": {
                    "200": {
                        "description": "The backup file (raftkv.server.backup)",
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "500": {
                        "description": _ERROR_TEXT["500"],
                        "content": _json_content(ErrorAnswer),
                    },
                    "503": {
                        "description": _ERROR_TEXT["503"],
                        "content": _json_content(ErrorAnswer),
                    },
                    "504": {
                        "description": _ERROR_TEXT["504"],
                        "content": _json_content(ErrorAnswer),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/set": {
            "post": {
                "summary": "The seed's put: {key, value}",
                "parameters": [_ENCODING],
                "requestBody": _body(SetBody),
                "responses": _responses(PutAnswer, "406", "408", "413", "504"),
            }
        },
        "/get/{key}": {
            "get": {
                "summary": "The seed's get",
                "parameters": key_read,
                "responses": _responses(GetAnswer, "404", "406", "410", "413", "504"),
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API."""
    _, components = msgspec.json.schema_components(_STRUCTS, ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "raftkv",
            "version": "1",
            "description": "A Raft-replicated key-value store with etcd's data model. "
            'Errors are {"error": {"code", "message"}}.',
        },
        "paths": _paths(),
        "components": {"schemas": components},
    }


@functools.cache
def openapi_document_bytes() -> bytes:
    return msgspec.json.encode(openapi_document())
