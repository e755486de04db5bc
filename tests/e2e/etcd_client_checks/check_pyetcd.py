"""put/get/txn, watch and lease through etcd-sdk-python (`pyetcd`, synchronous, grpcio),
run as `python check_pyetcd.py {kv,watch,lease} PREFIX HOST:PORT`. Exits 0 after printing
"ok"; a failed check raises (traceback on stderr). A separate process: the library
registers its own etcdserverpb protos, which clash with raftkv's in one descriptor pool.
"""

from __future__ import annotations

import queue
import sys

import pyetcd

TIMEOUT_S = 5


def kv(client: pyetcd.Etcd3Client, prefix: str) -> None:
    client.put(f"{prefix}a", "1")
    client.put(f"{prefix}b", "2")
    value, meta = client.get(f"{prefix}a")
    assert value == b"1", value
    assert meta.create_revision == meta.mod_revision > 0 and meta.version == 1
    assert [value for value, _ in client.get_prefix(prefix)] == [b"1", b"2"]
    value_is_1 = client.transactions.value(f"{prefix}a") == "1"
    succeeded, _ = client.transaction(
        compare=[value_is_1],
        success=[client.transactions.put(f"{prefix}a", "10")],
        failure=[client.transactions.put(f"{prefix}a", "-1")],
    )
    assert succeeded
    succeeded, responses = client.transaction(
        compare=[value_is_1],
        success=[client.transactions.put(f"{prefix}a", "-1")],
        failure=[client.transactions.put(f"{prefix}c", "3"), client.transactions.get(f"{prefix}a")],
    )
    assert not succeeded
    assert [value for value, _ in responses[1]] == [b"10"], responses
    assert client.delete(f"{prefix}b")
    assert client.get(f"{prefix}b") == (None, None)


def watch(client: pyetcd.Etcd3Client, prefix: str) -> None:
    client.put(f"{prefix}w", "1")
    _, meta = client.get(f"{prefix}w")
    client.put(f"{prefix}w", "2")
    # From a past revision: the history first.
    event = client.watch_once(f"{prefix}w", timeout=TIMEOUT_S, start_revision=meta.mod_revision)
    assert isinstance(event, pyetcd.events.PutEvent) and event.value == b"1", event
    # Live: a put after the watch exists.
    events: queue.Queue[object] = queue.Queue()
    watch_id = client.add_watch_callback(f"{prefix}live", events.put)
    client.put(f"{prefix}live", "now")
    response = events.get(timeout=TIMEOUT_S)
    assert not isinstance(response, Exception), response
    assert [event.value for event in response.events] == [b"now"], response
    client.cancel_watch(watch_id)


def lease(client: pyetcd.Etcd3Client, prefix: str) -> None:
    granted = client.lease(60)
    assert granted.id > 0
    client.put(f"{prefix}leased", "v", lease=granted)
    assert 0 < granted.remaining_ttl <= 60
    assert granted.keys == [f"{prefix}leased".encode()]
    (answer,) = granted.refresh()
    assert granted.id == answer.ID and answer.TTL == 60, answer
    granted.revoke()
    assert client.get(f"{prefix}leased") == (None, None)


def main() -> None:
    check, prefix, endpoint = sys.argv[1:]
    host, port = endpoint.rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port), timeout=TIMEOUT_S)
    try:
        {"kv": kv, "watch": watch, "lease": lease}[check](client, prefix)
    finally:
        client.close()
    print("ok")


if __name__ == "__main__":
    main()
