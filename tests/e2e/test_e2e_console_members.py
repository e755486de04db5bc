"""The console's view of the cluster (`GET /v1/console/members`) on a 3-process cluster
serving TLS with client certificates: each member asks the others at their https:// client
URLs, trusting the cluster's CA and showing its own certificate (as a joining node does)."""

from __future__ import annotations

from pathlib import Path

from kv_processes import KvProcessCluster

from raftkv.testing.certificates import CertificateAuthority
from raftkv.testing.processes import wait_until


def test_every_member_reaches_the_others_over_tls(tmp_path: Path) -> None:
    node_files = CertificateAuthority(tmp_path, "cluster").issue("node")
    cluster = KvProcessCluster(tmp_path / "cluster", tls=node_files)
    try:
        cluster.start_all()

        def everyone_reached() -> bool:
            for node in cluster.ids:
                status, answer = cluster.request(node, "GET", "/v1/console/members")
                assert status == 200, answer
                members = answer["members"]
                if [member["id"] for member in members] != cluster.ids or not all(
                    member["reachable"] and member["client_url"].startswith("https://")
                    for member in members
                ):
                    return False
            return True

        wait_until(everyone_reached, 15, "every member reaching the others over https")
        _, answer = cluster.request(1, "GET", "/v1/console/members")
        assert {member["node"]["status"]["id"] for member in answer["members"]} == {1, 2, 3}
    finally:
        cluster.stop()
