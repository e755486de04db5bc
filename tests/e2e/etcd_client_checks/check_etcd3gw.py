"""put/get/txn, watch and lease through etcd3gw (etcd's JSON gateway: requests over HTTP),
run as `python check_etcd3gw.py {kv,watch,lease} PREFIX http://HOST:PORT`. Exits 0 after
printing "ok"; a failed check raises (traceback on stderr). A process of its own, as the
other client checks (etcd3gw is synchronous and starts threads for its watches).

The API path is given (`/v3/`): etcd3gw otherwise discovers it from etcd's `GET /version`,
which raftkv does not serve.
"""

from __future__ import annotations

import base64
import sys
from urllib.parse import urlsplit

import etcd3gw

TIMEOUT_S = 5


def kv(client: etcd3gw.Etcd3Client, prefix: str) -> None:
    assert client.put(f"{prefix}a", "1")
    assert client.put(f"{prefix}b", "2")
    assert client.get(f"{prefix}a") == [b"1"]
    ((value, meta),) = client.get(f"{prefix}a", metadata=True)
    assert value == b"1"
    assert int(meta["create_revision"]) == int(meta["mod_revision"]) > 0
    assert int(meta["version"]) == 1
    assert [value for value, _ in client.get_prefix(prefix)] == [b"1", b"2"]
    # A create is a txn comparing create_revision with 0.
    assert not client.create(f"{prefix}a", "again")
    assert client.create(f"{prefix}c", "3")
    assert client.replace(f"{prefix}a", "1", "10")
    assert not client.replace(f"{prefix}a", "1", "-1")
    answer = client.transaction(
        {
            "compare": [
                {
                    "key": _b64(f"{prefix}a"),
                    "result": "EQUAL",
                    "target": "VALUE",
                    "value": _b64("10"),
                }
            ],
            "success": [{"request_range": {"key": _b64(f"{prefix}c")}}],
            "failure": [],
        }
    )
    assert answer["succeeded"] is True, answer
    (response,) = answer["responses"]
    assert response["response_range"]["kvs"][0]["value"] == _b64("3"), answer
    assert client.delete(f"{prefix}b")
    assert not client.delete(f"{prefix}b")
    assert client.get(f"{prefix}b") == []


def watch(client: etcd3gw.Etcd3Client, prefix: str) -> None:
    client.put(f"{prefix}w", "1")
    ((_, meta),) = client.get(f"{prefix}w", metadata=True)
    client.put(f"{prefix}w", "2")
    # From a past revision: the history first.
    event = client.watch_once(
        f"{prefix}w", timeout=TIMEOUT_S, start_revision=int(meta["mod_revision"])
    )
    assert event["kv"]["value"] == b"1", event
    # Live: a put after the watch exists, then a delete (prev_kv asked).
    events, cancel = client.watch_prefix(f"{prefix}live/", prev_kv=True)
    try:
        client.put(f"{prefix}live/x", "now")
        client.delete(f"{prefix}live/x")
        put, deleted = next(events), next(events)
    finally:
        cancel()
    assert put["kv"]["key"] == f"{prefix}live/x".encode() and put["kv"]["value"] == b"now", put
    assert deleted["type"] == "DELETE", deleted
    assert deleted["prev_kv"]["value"] == _b64("now"), deleted


def lease(client: etcd3gw.Etcd3Client, prefix: str) -> None:
    granted = client.lease(60)
    assert granted.id > 0
    assert client.put(f"{prefix}leased", "v", lease=granted)
    assert 0 < granted.ttl() <= 60
    assert granted.keys() == [f"{prefix}leased".encode()]
    # LeaseKeepAlive: one request in the body, one `{"result": ...}` line back.
    assert granted.refresh() == 60
    assert granted.revoke()
    assert client.get(f"{prefix}leased") == []
    assert granted.ttl() == -1


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def main() -> None:
    check, prefix, url = sys.argv[1:]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    client = etcd3gw.Etcd3Client(host=parts.hostname, port=parts.port, timeout=TIMEOUT_S)
    {"kv": kv, "watch": watch, "lease": lease}[check](client, prefix)
    print("ok")


if __name__ == "__main__":
    main()
