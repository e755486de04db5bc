"""etcd's KV service — Range, Put, DeleteRange, Txn, Compact — over `KvService`.

Reads are linearizable unless the request is `serializable`, as in etcd. Writes go through
the log like the HTTP API's. `Put` with `ignore_value` or `ignore_lease` keeps the key's
current value or lease: raftkv's log has no such command, so it is a compare-and-swap (read
the key, then a txn that puts only if the key's mod_revision is still the one read),
retried a few times if another write to the key comes in between; the key must exist
(etcd: "key not found").

A `Txn` that writes and reads at a given revision first reads the current revision, so
that a range beyond it is refused as etcd refuses it (`FutureRangeGuard`). A negative
`Compact` revision is below every compaction revision: compacted, as in etcd.

A `Txn` holding nested txns is run as one flat txn of the path etcd would take, guarded
against concurrent changes of the keys it compares and retried (`raftkv.etcd.nested_txn`).
"""

from __future__ import annotations

from typing import Final

import grpc

from raftkv.etcd import nested_txn
from raftkv.etcd.calls import Context, translated
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.errors import (
    COMPACTED,
    FUTURE_REVISION,
    KEY_NOT_FOUND,
    LEASE_PROVIDED,
    VALUE_PROVIDED,
    EtcdError,
)
from raftkv.etcd.kv_translation import (
    FutureRangeGuard,
    delete_answer,
    put_answer,
    put_of,
    range_answer,
    range_of,
    txn_answer,
    txn_of,
)
from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.kv.commands import Put, PutResponse, Txn, TxnCompare

# Compare-and-swap rounds of a Put that keeps the key's value or lease, before giving up.
_KEEP_ATTEMPTS: Final = 8
# A key read only for the revision its answer carries (any key does).
_ANY_KEY: Final = b"\x00"


class KvServicer(rpc_pb2_grpc.KVServicer):
    def __init__(self, context: EtcdContext) -> None:
        self.context = context
        self.service = context.service

    @translated
    async def Range(self, request: rpc_pb2.RangeRequest, call: Context) -> rpc_pb2.RangeResponse:
        found, shaping = range_of(request)
        response = await self.service.range(
            found, serializable=request.serializable, timeout=self.context.timeout(call)
        )
        shaped = shaping.shape(response)
        return range_answer(shaped, self.context.header(response.header.revision))

    @translated
    async def Put(self, request: rpc_pb2.PutRequest, call: Context) -> rpc_pb2.PutResponse:
        timeout = self.context.timeout(call)
        if request.ignore_value or request.ignore_lease:
            response = await self._put_keeping(request, timeout)
        else:
            put = put_of(request)
            response = await self.service.put(
                put.key, put.value, lease=put.lease, prev_kv=put.prev_kv, timeout=timeout
            )
        return put_answer(response, self.context.header(response.header.revision))

    async def _put_keeping(self, request: rpc_pb2.PutRequest, timeout: float) -> PutResponse:
        if request.ignore_value and request.value:
            raise EtcdError(VALUE_PROVIDED)
        if request.ignore_lease and request.lease:
            raise EtcdError(LEASE_PROVIDED)
        for _ in range(_KEEP_ATTEMPTS):
            current = await self.service.get(request.key, timeout=timeout)
            if not current.kvs:
                raise EtcdError(KEY_NOT_FOUND)
            kept = current.kvs[0]
            put = Put(
                key=request.key,
                value=kept.value if request.ignore_value else request.value,
                lease=kept.lease if request.ignore_lease else request.lease,
                prev_kv=request.prev_kv,
            )
            unchanged = TxnCompare(key=request.key, target="mod", op="=", value=kept.mod_revision)
            result = await self.service.txn(
                Txn(compares=[unchanged], success=[put]), timeout=timeout
            )
            if result.succeeded:
                (done,) = result.responses
                assert isinstance(done, PutResponse)
                return done
        raise EtcdError(
            (
                grpc.StatusCode.UNAVAILABLE,
                "raftkv: the key changed under every attempt to keep its value or lease; retry",
            )
        )

    @translated
    async def DeleteRange(
        self, request: rpc_pb2.DeleteRangeRequest, call: Context
    ) -> rpc_pb2.DeleteRangeResponse:
        response = await self.service.delete_range(
            request.key,
            request.range_end,
            prev_kv=request.prev_kv,
            timeout=self.context.timeout(call),
        )
        return delete_answer(response, self.context.header(response.header.revision))

    @translated
    async def Txn(self, request: rpc_pb2.TxnRequest, call: Context) -> rpc_pb2.TxnResponse:
        timeout = self.context.timeout(call)
        if nested_txn.has_nested(request):
            ran, plan = await nested_txn.run(self.service, request, timeout)
            return nested_txn.answer(ran, plan, self.context.header(ran.header.revision))
        translation = txn_of(request)
        txn, refused = translation.txn, None
        if FutureRangeGuard.pins_revisions(txn):
            # The revision before the txn, as etcd checks its ranges (FutureRangeGuard).
            current = (await self.service.get(_ANY_KEY, timeout=timeout)).header.revision
            guard = FutureRangeGuard.of(txn, current)
            txn, refused = guard.txn, guard.refused
        response = await self.service.txn(txn, timeout=timeout)
        if refused is not None and response.succeeded == refused:
            raise EtcdError(FUTURE_REVISION)
        return txn_answer(response, translation, self.context.header(response.header.revision))

    @translated
    async def Compact(
        self, request: rpc_pb2.CompactionRequest, call: Context
    ) -> rpc_pb2.CompactionResponse:
        # Applying the compaction removes the history from this member's storage, so
        # `physical` asks for nothing more than the answer already means.
        if request.revision < 0:
            # etcd: below its compaction revision, which is never under -1: compacted.
            raise EtcdError(COMPACTED)
        # etcd's client waits as long as its deadline says (etcdctl's check perf: 30 s for
        # the compaction of every key it wrote); a long compaction is many steps, each
        # bounded by request_timeout_s as any proposal is.
        remaining: float | None = call.time_remaining()  # None without a deadline
        response = await self.service.compact(
            request.revision, timeout=remaining, step_timeout=self.context.request_timeout_s
        )
        return rpc_pb2.CompactionResponse(header=self.context.header(response.header.revision))
