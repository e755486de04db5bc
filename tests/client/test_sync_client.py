"""`SyncClient` against a 3-node in-process cluster: the client runs in a worker thread
(`run_blocking`) while the test's event loop serves the cluster."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from raftkv.client import ClientSettings, InvalidRequest, SyncClient, Unavailable, txn
from raftkv.testing.http_cluster import HttpCluster, closed_port_url, http_cluster
from raftkv.testing.local_cluster import run_scenario


def test_every_method_of_the_sync_client() -> None:
    def use(api: HttpCluster) -> None:
        with SyncClient([closed_port_url(), *api.endpoints()]) as client:
            put = client.put(b"\x00k", b"\xffv")
            assert client.put("\x00k", "w", prev_kv=True).prev_kv is not None
            kv = client.get(b"\x00k")
            assert kv is not None and (kv.value, kv.version) == (b"w", 2)
            assert client.get("\x00k", revision=put.revision, serializable=True) is not None
            assert client.get("missing") is None
            assert client.range(prefix=True).count == 1
            result = client.txn([txn.version("lock", "=", 0)], [txn.put("lock", "me")])
            assert result.succeeded
            assert client.delete("lock", prev_kv=True).prev_kvs[0].value == b"me"
            assert client.compact(put.revision).revision >= put.revision
            assert client.cluster().leader == client.status(api.endpoints()[0]).leader != 0
            assert client.health() is True
            with pytest.raises(InvalidRequest):
                client.put("", "v")

    async def scenario() -> None:
        async with http_cluster() as api:
            await api.run_blocking(use, api)

    run_scenario(scenario)


def test_concurrent_writes_from_many_threads_apply_once_each() -> None:
    def use(api: HttpCluster) -> list[int]:
        with (
            SyncClient(api.endpoints(), ClientSettings(max_concurrent_writes=4)) as client,
            ThreadPoolExecutor(max_workers=8) as pool,
        ):
            puts = [pool.submit(client.put, f"k{n % 5}", str(n)) for n in range(24)]
            revisions = sorted(future.result().revision for future in puts)
            versions = client.range("k", prefix=True)
            assert sum(kv.version for kv in versions.kvs) == 24
            return revisions

    async def scenario() -> None:
        async with http_cluster() as api:
            start = api.revision()
            revisions = await api.run_blocking(use, api)
            assert revisions == list(range(start + 1, start + 25))

    run_scenario(scenario)


def test_no_endpoint_reachable_is_unavailable_naming_each_endpoint() -> None:
    dead = [closed_port_url(), closed_port_url()]
    settings = ClientSettings(deadline_s=0.5, backoff_base_s=0.01, backoff_cap_s=0.05)
    with SyncClient(dead, settings) as client, pytest.raises(Unavailable) as raised:
        client.put("k", "v")
    assert raised.value.endpoints == tuple(dead)
    assert all(f"{url}: not reached (ConnectError" in str(raised.value) for url in dead)
