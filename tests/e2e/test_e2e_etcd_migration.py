"""Moving from etcd to raftkv with etcd's own tool: `etcdctl make-mirror` copies a real
etcd 3.5's keys into a 3-process raftkv cluster through raftkv's etcd API, then follows
etcd's changes (puts and deletes) as they happen, until the clients are switched over
(docs/etcd.md, "Moving from etcd")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kv_processes import running_cluster

from raftkv.testing.etcd_tools import Etcdctl, etcd_binary, running_etcd
from raftkv.testing.processes import wait_until


def listing(etcdctl: Etcdctl) -> list[str]:
    """Every key=value under app/, in key order."""
    lines = etcdctl.run("get", "app/", "--prefix").check().stdout.splitlines()
    return [f"{key}={value}" for key, value in zip(lines[::2], lines[1::2], strict=True)]


@pytest.mark.slow
def test_make_mirror_copies_etcd_into_raftkv_and_follows_its_changes(tmp_path: Path) -> None:
    with (
        running_etcd(tmp_path / "etcd") as etcd,
        running_cluster(tmp_path / "raftkv", etcd_grpc=True) as cluster,
    ):
        source, destination = Etcdctl([etcd.endpoint]), Etcdctl(cluster.grpc_endpoints())
        for index in range(20):
            source.run("put", f"app/k{index:02d}", f"v{index}").check()
        mirror = subprocess.Popen(
            [
                str(etcd_binary("etcdctl")),
                f"--endpoints={etcd.endpoint}",
                "make-mirror",
                "--no-dest-prefix",
                # One endpoint: make-mirror takes a single destination; any member serves
                # writes (a follower forwards them).
                cluster.grpc_endpoint(2),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: listing(destination) == listing(source), 30, "the first copy")
            # Changes made at etcd meanwhile follow.
            source.run("put", "app/k05", "changed").check()
            source.run("del", "app/k06").check()
            source.run("put", "app/new", "added").check()
            wait_until(lambda: listing(destination) == listing(source), 30, "the changes")
            assert "app/k05=changed" in listing(destination)
            assert mirror.poll() is None  # still following
        finally:
            mirror.terminate()
            mirror.wait(timeout=10)
