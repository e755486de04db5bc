"""The KV routes: put, get, delete, range, txn, compact, and the seed's `POST /set` and
`GET /get/{key}` (their routes and documentation: `raftkv.server.routes`).

Keys and values are UTF-8 strings; with the query parameter `encoding=base64` every key,
range end, value and compare value in the request and the answer is base64 instead. A
stored value that is not UTF-8, read without `encoding=base64`, is refused with 406
`not_utf8` rather than altered. Every answer's `header` is `{"revision", "leader"}` (the
store's revision once the request took effect, and the leader this node knows, 0 if none).

Reads are linearizable unless `consistency=serializable` (local, possibly stale); a txn
without put or delete ops is a read too (KvService.txn): never in the log, and
`consistency` applies. No request may stall the event loop (which runs Raft too): scans
run on read threads (KvService), and large answers are built there (`_respond`). At most
`max_response_bytes` of key-values are answered (ReadLimits), `more` set if some were left
out, by it or by `limit`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, assert_never

import msgspec
from aiohttp import web

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
from raftkv.kv.service import KvService
from raftkv.server.fronts.remote_service import RemoteKvService
from raftkv.server.http_common import (
    ApiError,
    Codec,
    bool_query,
    decode_body,
    int_query,
    json_answer,
    key_range,
    key_value_answer,
    serializable_query,
)

__all__ = ["KvHandlers"]

PutAnswerT = TypeVar("PutAnswerT", bound=PutAnswer)
DeleteAnswerT = TypeVar("DeleteAnswerT", bound=DeleteAnswer)
RangeAnswerT = TypeVar("RangeAnswerT", bound=RangeAnswer)
BodyT = TypeVar("BodyT", PutBody, SetBody, CompactBody, TxnBody)


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


class KvHandlers:
    """The KV routes' handlers, over the node's `KvService` or, in a front process, the
    `RemoteKvService` that sends each call to it (raftkv.server.fronts)."""

    def __init__(
        self, service: KvService | RemoteKvService, timeout: float, max_body_bytes: int
    ) -> None:
        self.service = service
        # How long a write waits for its outcome, a read for its read point.
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes

    async def _body(self, request: web.Request, kind: type[BodyT]) -> BodyT:
        return await decode_body(request, kind, self.max_body_bytes)

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
        return await self._put(key, await self._body(request, PutBody), codec)

    async def set(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        body = await self._body(request, SetBody)
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
        body = await self._body(request, TxnBody)
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
        key, range_end = key_range(
            codec.decode(compare.key, "compare key"),
            codec.decode(compare.range_end, "compare range_end"),
            compare.prefix,
        )
        return TxnCompare(
            key=key, target=compare.target, op=compare.op, value=value, range_end=range_end
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
        body = await self._body(request, CompactBody)
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
