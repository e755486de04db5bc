"""What every HTTP handler module shares: the error type and answer, the key/value codec
(UTF-8 or base64), query parameter parsing, key ranges, JSON answers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.http import HttpVersion
from aiohttp.web_protocol import RequestPayloadError

from raftkv.api.keys import KeyValueAnswer, prefix_end
from raftkv.kv.commands import MvccKeyValue
from raftkv.server.json_names import DuplicateNames

__all__ = [
    "BODY_TIMEOUT",
    "MAX_QUERY_INT",
    "REQUESTED_VERSION",
    "ApiError",
    "Codec",
    "bool_query",
    "decode_body",
    "error_response",
    "int_query",
    "json_answer",
    "key_range",
    "key_value_answer",
    "serializable_query",
]


class ApiError(Exception):
    """A refusal decided by the HTTP layer itself, answered as `{"error": {...}}`."""

    def __init__(self, status: int, code: str, message: str, **details: int) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        # Extra fields of the error object (ErrorDetail), e.g. compact_revision.
        self.details = details


def error_response(status: int, code: str, message: str, **details: int) -> web.Response:
    body = {"error": {"code": code, "message": message, **details}}
    return web.Response(
        status=status, body=msgspec.json.encode(body), content_type="application/json"
    )


# The HTTP version a request was sent with, when the client port served it as HTTP/1.1 to
# answer it 505 (raftkv.server.listener); otherwise the request's own `version`.
REQUESTED_VERSION = web.RequestKey("requested_version", HttpVersion)


# -- codec: str <-> bytes for keys and values ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    base64: bool

    @classmethod
    def of(cls, request: web.Request) -> Codec:
        encoding = request.query.get("encoding", "utf-8")
        if encoding not in ("utf-8", "utf8", "base64"):
            raise ApiError(
                400, "invalid_request", f"encoding must be utf-8 or base64, got {encoding!r}"
            )
        return cls(base64=encoding == "base64")

    def decode(self, text: str, what: str) -> bytes:
        if not self.base64:
            try:
                return text.encode()
            except UnicodeEncodeError as error:  # lone surrogates from \\ud800 escapes
                raise ApiError(400, "invalid_request", f"{what} is not valid Unicode") from error
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ApiError(400, "invalid_base64", f"{what} is not valid base64: {error}") from error

    def encode(self, data: bytes, what: str) -> str:
        if self.base64:
            return base64.b64encode(data).decode("ascii")
        try:
            return data.decode()
        except UnicodeDecodeError as error:
            raise ApiError(
                406, "not_utf8", f"{what} is not UTF-8 text; ask with encoding=base64"
            ) from error


# -- query parameters ------------------------------------------------------------------------


# The largest integer a query parameter takes: revisions, limits and sequences are int64s
# in the store (etcd's too).
MAX_QUERY_INT = 2**63 - 1


def int_query(request: web.Request, name: str) -> int:
    text = request.query.get(name, "0")
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_QUERY_INT:
        raise ApiError(
            400,
            "invalid_request",
            f"{name} must be an integer from 0 to {MAX_QUERY_INT}, got {text[:32]!r}",
        )
    return int(text)


def bool_query(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false").lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ApiError(400, "invalid_request", f"{name} must be true or false, got {text!r}")


def serializable_query(request: web.Request) -> bool:
    consistency = request.query.get("consistency", "linearizable")
    if consistency not in ("linearizable", "serializable"):
        raise ApiError(
            400,
            "invalid_request",
            f"consistency must be linearizable or serializable, got {consistency!r}",
        )
    return consistency == "serializable"


def key_range(key: bytes, range_end: bytes, prefix: bool) -> tuple[bytes, bytes]:
    if not prefix:
        return key, range_end
    if range_end:
        raise ApiError(400, "invalid_request", "give range_end or prefix, not both")
    if not key:  # every key
        return b"\0", b"\0"
    return key, prefix_end(key)


def json_answer(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )


StructT = TypeVar("StructT", bound=msgspec.Struct)
# Per body type: its decoder and its duplicate-name check.
_body_readers: dict[type[Any], tuple[msgspec.json.Decoder[Any], DuplicateNames]] = {}
# How long a body may take to arrive (HttpSettings.body_timeout_s), set on the app.
BODY_TIMEOUT = web.AppKey("body_timeout_s", float)
_DEFAULT_BODY_TIMEOUT_S = 10.0


async def decode_body(request: web.Request, kind: type[StructT], limit: int) -> StructT:
    """The request's JSON body as `kind`: 413 over `limit` bytes, 408 `body_timeout` if it
    does not arrive within the app's BODY_TIMEOUT, 400 `body_incomplete` or `invalid_body`
    if the connection closed before it did or it cannot be read (a broken chunked
    encoding), 400 `invalid_json` if it is not JSON, 400 `invalid_request` if it does not
    fit `kind` (unknown fields, wrong types)."""
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(
            413, "body_too_large", f"body is {length} bytes, beyond max_body_bytes={limit}"
        )
    timeout = request.app.get(BODY_TIMEOUT, _DEFAULT_BODY_TIMEOUT_S)
    try:
        if request.content.is_eof():  # the whole body is in: nothing to wait for
            data = await request.read()
        else:
            async with asyncio.timeout(timeout):
                data = await request.read()
    except TimeoutError as error:
        raise ApiError(
            408, "body_timeout", f"the body did not arrive within body_timeout_s={timeout:g}"
        ) from error
    except ConnectionResetError as error:
        # The client went away mid-body: nobody will read the answer, but nothing is
        # unexpected here (no 500, no traceback).
        raise ApiError(
            400, "body_incomplete", "the connection closed before the whole body arrived"
        ) from error
    except RequestPayloadError as error:
        # A body aiohttp cannot read: a broken chunked encoding, a length that lies.
        raise ApiError(400, "invalid_body", f"the body cannot be read: {error}") from error
    reader = _body_readers.get(kind)
    if reader is None:
        reader = _body_readers[kind] = (msgspec.json.Decoder(kind), DuplicateNames(kind))
    decoder, names = reader
    try:
        body: StructT = decoder.decode(data)
    except msgspec.ValidationError as error:
        raise ApiError(400, "invalid_request", str(error)) from error
    except msgspec.DecodeError as error:
        raise ApiError(400, "invalid_json", _json_error(data, error)) from error
    except UnicodeDecodeError as error:  # raw bytes inside a JSON string
        raise ApiError(
            400,
            "invalid_json",
            f"a JSON string in the body holds byte 0x{error.object[error.start]:02x}, which is "
            "not UTF-8: send binary keys and values base64-encoded, with encoding=base64",
        ) from error
    if names.surely_unique(data):
        duplicate = None
    elif len(data) <= _LARGE_BODY_BYTES:
        duplicate = names.find(data)
    else:  # checked off the loop, which also runs Raft
        duplicate = await asyncio.get_running_loop().run_in_executor(None, names.find, data)
    if duplicate is not None:
        raise ApiError(
            400,
            "invalid_json",
            f"the name {duplicate[:64]!r} appears twice in one JSON object: give each once",
        )
    return body


# A body longer than this is checked for duplicate names on a worker thread (up to
# max_body_bytes of small objects take tens of milliseconds).
_LARGE_BODY_BYTES = 64 << 10
# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, or the latter not
# preceded by the former: half a UTF-16 surrogate pair, which no Unicode text has.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _json_error(data: bytes, error: msgspec.DecodeError) -> str:
    """What is wrong with a body msgspec cannot parse. It reports half a surrogate pair
    as "truncated" input or an invalid pair: say which escape it is."""
    lone = _LONE_SURROGATE.search(data)
    if lone is None:
        return str(error)
    escape = lone.group().decode("ascii")
    return (
        f"JSON is malformed: {escape} at byte {lone.start()} is half a UTF-16 surrogate pair, "
        "which is not Unicode text; send binary keys and values with encoding=base64"
    )


def key_value_answer(kv: MvccKeyValue, codec: Codec) -> KeyValueAnswer:
    return KeyValueAnswer(
        key=codec.encode(kv.key, "key"),
        value=codec.encode(kv.value, "value"),
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )
