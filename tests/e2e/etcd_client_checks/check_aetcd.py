"""put/get/txn, watch and lease through aetcd (asyncio, grpc.aio), run as
`python check_aetcd.py {kv,watch,lease} PREFIX HOST:PORT`. Exits 0 after printing "ok"; a
failed check raises (traceback on stderr). A separate process: the library registers its
own etcdserverpb protos, which clash with raftkv's in one descriptor pool.
"""

from __future__ import annotations

import asyncio
import sys

import aetcd

TIMEOUT_S = 5


async def kv(client: aetcd.Client, prefix: bytes) -> None:
    put = await client.put(prefix + b"a", b"1")
    await client.put(prefix + b"b", b"2")
    got = await client.get(prefix + b"a")
    assert got is not None and got.value == b"1", got
    assert got.create_revision == got.mod_revision == put.header.revision and got.version == 1
    assert got.header.revision == put.header.revision + 1
    assert [kv.value for kv in await client.get_prefix(prefix)] == [b"1", b"2"]
    value_is_1 = client.transactions.value(prefix + b"a") == b"1"
    succeeded, _ = await client.transaction(
        compare=[value_is_1],
        success=[client.transactions.put(prefix + b"a", b"10")],
        failure=[client.transactions.put(prefix + b"a", b"-1")],
    )
    assert succeeded
    succeeded, responses = await client.transaction(
        compare=[value_is_1],
        success=[client.transactions.put(prefix + b"a", b"-1")],
        failure=[
            client.transactions.put(prefix + b"c", b"3"),
            client.transactions.get(prefix + b"a"),
        ],
    )
    assert not succeeded
    # A get's response is its (value, metadata) pairs.
    assert [value for value, _ in responses[1]] == [b"10"], responses
    deleted = await client.delete(prefix + b"b", prev_kv=True)
    assert deleted is not None and deleted.deleted == 1 and deleted.prev_kv.value == b"2"
    assert await client.get(prefix + b"b") is None


async def first_event(watch: aetcd.rtypes.Watch) -> aetcd.rtypes.Event:
    async for event in watch:
        return event
    raise AssertionError("the watch ended without an event")


async def watch(client: aetcd.Client, prefix: bytes) -> None:
    first = await client.put(prefix + b"w", b"1")
    await client.put(prefix + b"w", b"2")
    # From a past revision: the history first, in order.
    history = await client.watch(prefix + b"w", start_revision=first.header.revision)
    seen = [await asyncio.wait_for(first_event(history), TIMEOUT_S) for _ in range(2)]
    assert [(event.kind, event.kv.value) for event in seen] == [
        (aetcd.rtypes.EventKind.PUT, b"1"),
        (aetcd.rtypes.EventKind.PUT, b"2"),
    ], seen
    await history.cancel()
    # Live, with the previous value: a delete after the watch exists.
    live = await client.watch(prefix + b"w", prev_kv=True)
    await client.delete(prefix + b"w")
    event = await asyncio.wait_for(first_event(live), TIMEOUT_S)
    assert event.kind == aetcd.rtypes.EventKind.DELETE and event.prev_kv.value == b"2", event
    await live.cancel()


async def lease(client: aetcd.Client, prefix: bytes) -> None:
    granted = await client.lease(60)
    assert granted.id > 0
    await client.put(prefix + b"leased", b"v", lease=granted)
    info = await client.get_lease_info(granted.id)
    assert 0 < info.TTL <= 60 and info.grantedTTL == 60, info
    assert list(info.keys) == [prefix + b"leased"], info
    refreshed = await granted.refresh()
    assert granted.id == refreshed.ID and refreshed.TTL == 60, refreshed
    await granted.revoke()
    assert await client.get(prefix + b"leased") is None


async def main() -> None:
    check, prefix, endpoint = sys.argv[1:]
    host, port = endpoint.rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=TIMEOUT_S) as client:
        await {"kv": kv, "watch": watch, "lease": lease}[check](client, prefix.encode())
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
