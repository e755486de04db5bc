"""`listen_metrics` (etcd's --listen-metrics-urls): a node serves GET /metrics on a port of
its own, so the client port (which no longer serves it) and the metrics can be exposed to
different networks; the client port's /metrics says where they went."""

from __future__ import annotations

from pathlib import Path

import httpx
from kv_processes import KvProcessCluster

from raftkv.testing.processes import free_port


def test_metrics_on_their_own_port(tmp_path: Path) -> None:
    metrics_ports = {1: free_port()}
    cluster = KvProcessCluster(
        tmp_path,
        nodes=1,
        node_arguments=lambda node: ["--listen-metrics", f"127.0.0.1:{metrics_ports[node]}"],
    )
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        answer = httpx.get(f"http://127.0.0.1:{metrics_ports[1]}/metrics", timeout=10)
        assert answer.status_code == 200
        assert "raftkv_term" in answer.text and "raftkv_storage_bytes" in answer.text
        status, body = cluster.request(1, "GET", "/metrics")
        assert status == 404
        assert body["error"]["code"] == "unknown_route"
        assert f"listen_metrics 127.0.0.1:{metrics_ports[1]}" in body["error"]["message"]
        # The metrics port serves nothing else.
        assert httpx.get(f"http://127.0.0.1:{metrics_ports[1]}/v1/status").status_code == 404
        assert "Traceback" not in cluster.log(1)
    finally:
        cluster.stop()
