"""How etcd's JSON gateway says no: grpc-gateway's HTTP status for each gRPC status, and
its two error shapes (etcd 3.5 runs grpc-gateway v1).

- A unary call: the body `{"error": message, "code": <gRPC status number>, "message":
  message}` with the HTTP status of the code.
- A stream: one line `{"error": {"grpc_code", "http_code", "message", "http_status"}}`
  (grpc-gateway's StreamError, fields with the .proto's names), the stream's last; the
  response's HTTP status is the error's only if nothing was written before it (then the
  status line has gone out as 200 already).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

import grpc
import grpc.aio
from aiohttp import web

# grpc-gateway's HTTP status for each gRPC status.
HTTP_STATUS: Final = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class Aborted(grpc.aio.AbortError):
    """A servicer ended a gateway call (the `abort` of the gateway's stand-in for its gRPC
    context): an AbortError, as gRPC's own, so that what wraps a servicer's method
    (raftkv.etcd.calls.translated) lets it through as one. The route answers it with one
    of the shapes above."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(code: grpc.StatusCode, message: str) -> web.Response:
    """A unary call's refusal (see the module docstring)."""
    number = code.value[0]
    return web.json_response(
        {"error": message, "code": number, "message": message}, status=HTTP_STATUS[code]
    )


def error_line(code: grpc.StatusCode, message: str) -> bytes:
    """A stream's last line when it ends with an error (see the module docstring)."""
    http_code = HTTP_STATUS[code]
    try:
        http_status = HTTPStatus(http_code).phrase
    except ValueError:
        http_status = ""  # 499: Go's http.StatusText knows no phrase for it
    # Fields at their default value are left out, as grpc-gateway's marshaler does.
    error: dict[str, object] = {"grpc_code": code.value[0], "http_code": http_code}
    if message:
        error["message"] = message
    if http_status:
        error["http_status"] = http_status
    return json.dumps({"error": error}, separators=(",", ":")).encode() + b"\n"
