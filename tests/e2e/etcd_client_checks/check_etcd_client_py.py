"""put/get/txn, watch and lease through etcd-client-py (`etcd_client`: Python bindings of
Rust's etcd-client, its own gRPC stack, tonic), run as
`python check_etcd_client_py.py {kv,watch,lease} PREFIX HOST:PORT`. Exits 0 after printing
"ok"; a failed check raises (traceback on stderr). Run in a process of its own like the
other libraries. Its API has no start revision for watches and no lease on put: those are
checked through the other libraries; nor does it return anything from lease calls.
"""

from __future__ import annotations

import asyncio
import sys

from etcd_client import (
    Client,
    Communicator,
    Compare,
    CompareOp,
    CondVar,
    ConnectOptions,
    GRPCStatusError,
    Txn,
    TxnOp,
    Watch,
    WatchEvent,
    WatchEventType,
)

TIMEOUT_S = 5
UNKNOWN_LEASE = 0x7EDC_BA98_7654_3210
NOT_FOUND = 5  # gRPC's status code


async def kv(client: Communicator, prefix: bytes) -> None:
    await client.put(prefix + b"a", b"1")
    await client.put(prefix + b"b", b"2")
    assert await client.get(prefix + b"a") == b"1"
    assert await client.get_prefix(prefix) == [(prefix + b"a", b"1"), (prefix + b"b", b"2")]
    value_is_1 = Compare.value(prefix + b"a", CompareOp.EQUAL, b"1")
    succeeded = await client.txn(
        Txn()
        .when([value_is_1])
        .and_then([TxnOp.put(prefix + b"a", b"10")])
        .or_else([TxnOp.put(prefix + b"a", b"-1")])
    )
    assert succeeded.succeeded()
    failed = await client.txn(
        Txn()
        .when([value_is_1])
        .and_then([TxnOp.put(prefix + b"a", b"-1")])
        .or_else([TxnOp.put(prefix + b"c", b"3")])
    )
    assert not failed.succeeded()
    assert await client.get(prefix + b"a") == b"10"
    await client.delete(prefix + b"b")
    assert await client.get(prefix + b"b") is None
    assert await client.keys_prefix(prefix) == [prefix + b"a", prefix + b"c"]


async def first_event(watch: Watch) -> WatchEvent:
    async for event in watch:
        return event
    raise AssertionError("the watch ended without an event")


async def watch(client: Communicator, prefix: bytes) -> None:
    ready = CondVar()
    watching = asyncio.ensure_future(first_event(client.watch(prefix + b"w", ready_event=ready)))
    await asyncio.wait_for(ready.wait(), TIMEOUT_S)
    await client.put(prefix + b"w", b"live")
    event = await asyncio.wait_for(watching, TIMEOUT_S)
    assert event.event == WatchEventType.PUT and event.value == b"live", event


async def lease(client: Communicator, prefix: bytes) -> None:
    # This binding returns nothing from its lease calls (not even the granted id): what
    # can be checked is that a grant succeeds and that an unknown lease gets etcd's error.
    await client.lease_grant(60)
    try:
        await client.lease_revoke(UNKNOWN_LEASE)
    except GRPCStatusError as error:
        (status,) = error.args
        assert status["code"] == NOT_FOUND, status
        assert status["message"] == "etcdserver: requested lease not found", status
    else:
        raise AssertionError("revoking an unknown lease succeeded")


async def main() -> None:
    check, prefix, endpoint = sys.argv[1:]
    options = ConnectOptions().with_connect_timeout(TIMEOUT_S).with_timeout(TIMEOUT_S)
    async with Client([endpoint]).connect(options) as client:
        await {"kv": kv, "watch": watch, "lease": lease}[check](client, prefix.encode())
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
