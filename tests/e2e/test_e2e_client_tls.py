"""TLS on the client port of a 3-process cluster with client certificates required
(`cert_file`, `key_file`, `client_ca_file`): the HTTP API and etcd's gRPC API serve only
TLS; raftkv's CLI and etcdctl work with the cluster's CA and a client certificate, and are
refused without one or with a stranger's; with auth enabled, a certificate's common name
stands for the user of that name; members publish https URLs; a node joins through an https
member; renewed certificates are served after SIGHUP, without a restart."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from kv_processes import KvProcessCluster, cli, wait_until

from raftkv.testing.certificates import CertificateAuthority
from raftkv.testing.etcd_tools import Etcdctl


def test_a_cluster_serving_tls_with_client_certificates(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path, "cluster")
    node_files = authority.issue("node")
    client_files = authority.issue("client")
    stranger_files = CertificateAuthority(tmp_path, "stranger").issue("client")
    cluster = KvProcessCluster(tmp_path / "cluster", etcd_grpc=True, tls=node_files)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        wait_until(
            lambda: all(
                member["client_url"].startswith("https://")
                for member in cluster.request(leader, "GET", "/v1/cluster")[1]["members"]
            ),
            10,
            "https client URLs",
        )

        # raftkv's CLI with the cluster's CA and a client certificate.
        tls_flags = ["--cacert", str(client_files.ca_file), "--cert", str(client_files.cert_file)]
        tls_flags += ["--key", str(client_files.key_file)]
        put = cli(cluster, "put", "greeting", "hello", *tls_flags, cluster_tls=False)
        assert put.returncode == 0, put.stderr
        got = cli(cluster, "get", "greeting", "--output", "json", *tls_flags, cluster_tls=False)
        assert got.returncode == 0 and "hello" in got.stdout, got.stderr

        # Without a client certificate, or with a stranger's, or without the CA: refused,
        # one line, no traceback.
        for name, flags in (
            ("no client certificate", ["--cacert", str(client_files.ca_file)]),
            (
                "a stranger's certificate",
                [
                    "--cacert",
                    str(client_files.ca_file),
                    "--cert",
                    str(stranger_files.cert_file),
                    "--key",
                    str(stranger_files.key_file),
                ],
            ),
            ("no CA", ["--cert", str(client_files.cert_file), "--key", str(client_files.key_file)]),
        ):
            refused = cli(cluster, "get", "greeting", "--timeout", "3", *flags, cluster_tls=False)
            assert refused.returncode == 4, (name, refused.stdout, refused.stderr)
            assert len(refused.stderr.strip().splitlines()) == 1, (name, refused.stderr)
            assert "Traceback" not in refused.stderr
        unknown = cli(
            cluster, "get", "greeting", "--cacert", str(tmp_path / "no"), cluster_tls=False
        )
        assert unknown.returncode == 2 and "cannot read" in unknown.stderr, unknown.stderr

        # etcdctl, over TLS, with the same files.
        etcdctl = Etcdctl(cluster.grpc_endpoints())
        secure = [
            f"--cacert={client_files.ca_file}",
            f"--cert={client_files.cert_file}",
            f"--key={client_files.key_file}",
        ]
        etcdctl.run(*secure, "put", "etcd-key", "etcd-value").check()
        read = etcdctl.run(*secure, "get", "etcd-key", "--print-value-only").check()
        assert read.stdout.strip() == "etcd-value"
        assert etcdctl.run(*secure[:1], "get", "etcd-key").returncode != 0

        # With auth enabled, a client certificate's common name stands for the user of that
        # name (as in etcd): "client" is a user without a password; the node's certificate
        # (CN "node", the CLI's default here) names no user.
        for method, path, body in (
            ("POST", "/v1/auth/users", {"name": "root", "password": "root-password"}),
            ("POST", "/v1/auth/users/root/roles", {"role": "root"}),
            ("POST", "/v1/auth/users", {"name": "client", "no_password": True}),
            ("POST", "/v1/auth/roles", {"name": "greeter"}),
            ("POST", "/v1/auth/roles/greeter/permissions", {"kind": "read", "key": "greeting"}),
            ("POST", "/v1/auth/users/client/roles", {"role": "greeter"}),
            ("POST", "/v1/auth/enable", None),
        ):
            assert cluster.request(leader, method, path, json=body)[0] == 200, path
        as_client = cli(cluster, "get", "greeting", *tls_flags, cluster_tls=False)
        assert as_client.returncode == 0 and "hello" in as_client.stdout, as_client.stderr
        denied = cli(cluster, "put", "greeting", "bye", *tls_flags, cluster_tls=False)
        assert denied.returncode == 3 and "permission_denied" in denied.stderr, denied.stderr
        anonymous = cli(cluster, "get", "greeting")
        assert anonymous.returncode == 3 and "auth_required" in anonymous.stderr
        # A password login wins over the certificate's name.
        as_root = cli(cluster, "put", "greeting", "hello", "--user", "root:root-password")
        assert as_root.returncode == 0, as_root.stderr
        disabled = cli(cluster, "auth", "disable", "--user", "root:root-password")
        assert disabled.returncode == 0, disabled.stderr

        # A node joins through an https member (it trusts client_ca_file).
        joining = cluster.add_node()
        cluster.start(
            joining, command=cluster.join_command(joining, cluster.url(leader), auto_promote=True)
        )
        wait_until(
            lambda: len(cluster.request(leader, "GET", "/v1/cluster")[1]["members"]) == 4,
            30,
            "the fourth member",
        )

        # Renewed certificates: another CA signs the node's new certificate; after SIGHUP
        # node 1 serves it (a client trusting only the new CA gets through).
        renewed_authority = CertificateAuthority(tmp_path, "renewed")
        renewed = renewed_authority.issue("node")
        node_files.cert_file.write_bytes(renewed.cert_file.read_bytes())
        node_files.key_file.write_bytes(renewed.key_file.read_bytes())
        cluster.processes[1].send_signal(signal.SIGHUP)
        trusting_renewed = httpx.Client(
            verify=client_files.client_context(trusting=renewed.ca_file), timeout=5.0
        )
        with trusting_renewed:

            def serves_renewed() -> bool:
                try:
                    return trusting_renewed.get(f"{cluster.url(1)}/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(serves_renewed, 15, "node 1 to serve the renewed certificate")
        assert "client TLS reloaded" in cluster.log(1)
        for node in cluster.ids:
            assert "Traceback" not in cluster.log(node)
    finally:
        cluster.stop()
