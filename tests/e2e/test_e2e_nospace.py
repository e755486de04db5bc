"""The storage quota on a 3-process cluster, followed as an operator would: writes fill the
members' storage past `--quota-backend-bytes`, a NOSPACE alarm makes the whole cluster
refuse writes that add data (507 on the HTTP API, etcd's error on its gRPC port) while
reads and deletes go on; a disarm while still over does not stick; restarting each member
with a larger quota and disarming makes the cluster writable again, with nothing lost."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from kv_processes import KvProcessCluster, cli, wait_until

from raftkv.testing.etcd_tools import Etcdctl

QUOTA_BYTES = 1 << 20
VALUE = "v" * (64 * 1024)
# Enough writes to pass the quota several times over (each is a log entry and a record).
MAX_WRITES = 200


def nospace_alarms(cluster: KvProcessCluster, node: int) -> list[dict[str, object]]:
    status, answer = cluster.request(node, "GET", "/v1/alarms")
    assert status == 200, answer
    return [alarm for alarm in answer["alarms"] if alarm["alarm"] == "NOSPACE"]


def test_a_cluster_over_its_quota_goes_read_only_until_space_is_given_and_disarmed(
    tmp_path: Path,
) -> None:
    cluster = KvProcessCluster(
        tmp_path, etcd_grpc=True, arguments=["--quota-backend-bytes", str(QUOTA_BYTES)]
    )
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        written: list[str] = []
        refused = None
        for sequence in range(MAX_WRITES):
            key = f"fill-{sequence:03}"
            status, answer = cluster.request(leader, "PUT", f"/v1/kv/{key}", json={"value": VALUE})
            if status == 507:
                refused = answer
                break
            assert status == 200, answer
            written.append(key)
        assert refused is not None, f"no write was refused after {MAX_WRITES} writes"
        assert refused["error"]["code"] == "no_space"
        assert "out of space (NOSPACE alarm of member" in refused["error"]["message"]
        # The alarm is replicated: every member lists it and refuses alike.
        for node in cluster.ids:
            wait_until(lambda node=node: nospace_alarms(cluster, node), 10, "the alarm")
            status, answer = cluster.request(node, "PUT", "/v1/kv/more", json={"value": "x"})
            assert (status, answer["error"]["code"]) == (507, "no_space")
        [alarm] = nospace_alarms(cluster, leader)[:1]
        assert alarm["reason"] == "quota"

        # Reads and deletes go on; nothing written before the alarm was lost.
        status, answer = cluster.request(
            leader, "GET", "/v1/kv?prefix=true&key=fill-&count_only=true"
        )
        assert (status, answer["count"]) == (200, len(written))
        status, _ = cluster.request(leader, "DELETE", f"/v1/kv/{written[0]}")
        assert status == 200

        # etcd's tools see etcd's alarm and error.
        etcdctl = Etcdctl(cluster.grpc_endpoints())
        listed = etcdctl.run("alarm", "list").check()
        assert "alarm:NOSPACE" in listed.stdout
        put = etcdctl.run("put", "etcd-key", "value")
        assert put.returncode != 0
        assert put.errors == ["Error: etcdserver: mvcc: database space exceeded"]

        # raftkv's CLI says what it is and what to do.
        listing = cli(cluster, "alarm", "list")
        assert listing.returncode == 0, listing.stderr
        assert "ALARM NOSPACE: member" in listing.stdout
        assert "raftkv alarm disarm" in listing.stdout

        # Disarmed while every member is still over its quota: raised again at once.
        disarmed = cli(cluster, "alarm", "disarm")
        assert disarmed.returncode == 0, disarmed.stderr
        wait_until(lambda: nospace_alarms(cluster, leader), 10, "the alarm to be raised again")

        # The fix: a larger quota on every member (a rolling restart), then disarm.
        cluster.arguments = ["--quota-backend-bytes", str(256 << 20)]
        for node in cluster.ids:
            assert cluster.kill(node, signal.SIGTERM) == 0
            cluster.start(node)
            cluster.wait_for_leader()
        etcdctl.run("alarm", "disarm").check()
        wait_until(lambda: not nospace_alarms(cluster, cluster.wait_for_leader()), 10, "disarm")
        leader = cluster.wait_for_leader()
        status, answer = cluster.request(leader, "PUT", "/v1/kv/after", json={"value": "ok"})
        assert status == 200, answer
        etcdctl.run("put", "etcd-key", "value").check()
        status, answer = cluster.request(
            leader, "GET", "/v1/kv?prefix=true&key=fill-&count_only=true"
        )
        assert (status, answer["count"]) == (200, len(written) - 1)

        # Freeing space for good: delete, compact, defragment every member.
        etcdctl.run("del", "--prefix", "fill-").check()
        revision = cluster.request(leader, "GET", "/v1/status")[1]["revision"]
        assert cli(cluster, "compact", str(revision)).returncode == 0
        defrag = cli(cluster, "defrag", "--output", "json")
        assert defrag.returncode == 0, defrag.stderr
        rows = json.loads(defrag.stdout)
        assert len(rows) == len(cluster.ids)
        for row in rows:
            assert row["storage_bytes_after"] < row["storage_bytes_before"], row
        assert etcdctl.run("defrag").check().stdout.count("Finished defragmenting") == len(
            cluster.ids
        )
        for node in cluster.ids:
            assert "Traceback" not in cluster.log(node)
    finally:
        cluster.stop()
