"""`raftkv certs create`'s files, given to `raftkv serve` as its printed flags say, make a
working cluster whose peers speak mutual TLS, on either peer transport."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from kv_processes import KvProcessCluster


@pytest.mark.parametrize("transport", ["tcp", "grpc"])
def test_a_cluster_runs_on_the_certificates_raftkv_certs_creates(
    tmp_path: Path, transport: str
) -> None:
    certificates = tmp_path / "certs"
    command = ["certs", "create", "--dir", str(certificates), "--nodes", "1,2,3"]
    created = subprocess.run(
        [sys.executable, "-m", "raftkv", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr

    def peer_tls(node: int) -> Sequence[str]:
        # The flags the output names for node N, with N this node's id.
        [line] = [line for line in created.stdout.splitlines() if "--peer-ca-file" in line]
        flags = line.split(":", 1)[1].replace("node-N", f"node-{node}").split()
        assert flags == [
            *("--peer-ca-file", f"{certificates}/ca.pem"),
            *("--peer-cert-file", f"{certificates}/node-{node}.pem"),
            *("--peer-key-file", f"{certificates}/node-{node}-key.pem"),
        ]
        return flags

    cluster = KvProcessCluster(
        tmp_path / "cluster", 3, arguments=["--peer-transport", transport], node_arguments=peer_tls
    )
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        assert cluster.request(leader, "PUT", "/v1/kv/tls", json={"value": "on"})[0] == 200
        for node in cluster.ids:
            status, answer = cluster.request(node, "GET", "/v1/kv/tls")
            assert (status, answer["kv"]["value"]) == (200, "on")
        # The peer port speaks TLS with the node's certificate, and only to a client that
        # shows one of the cluster's: here node 1 dials node 2.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(certificates / "ca.pem")
        context.load_cert_chain(certificates / "node-1.pem", certificates / "node-1-key.pem")
        if transport == "grpc":
            context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(("127.0.0.1", cluster.peer_ports[2]), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
            assert subject["commonName"] == "node-2"
    finally:
        cluster.stop()
