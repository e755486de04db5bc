"""etcdctl 3.5's administrative commands against a cluster of 3 real `raftkv serve`
processes serving etcd's gRPC API, each compared with a real single-member etcd 3.5 where
the two can print the same thing (tests/e2e/etcd_differential.py; ids masked): leases
(grant, put --lease, keep-alive --once, timetolive --keys, list, revoke, expiry), members
(list, add --learner, promote refused while not caught up, remove), endpoint status and
health, move-leader, compaction, snapshot save restored by `raftkv snapshot restore`,
alarm list and defrag. A 3-member cluster and a 1-member etcd differ in what names and
counts members; those tests check raftkv's answers field by field and etcd's shape.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from etcd_differential import Differential, Each, Masks, Rev, masked
from kv_processes import KvProcessCluster, running_cluster

from raftkv.testing.etcd_tools import Etcdctl, running_etcd
from raftkv.testing.processes import free_port, wait_until

pytestmark = pytest.mark.slow

# A lease id as etcdctl prints it (%016x) or as JSON holds it.
LEASE_HEX = (r"\b[0-9a-f]{16}\b", "<lease>")
LEASE_JSON = (r'"(ID|id)":\d+', r'"\1":"<lease>"')
# What lease timetolive prints that depends on when it ran.
REMAINING = (r"remaining\(\d+s\)", "remaining(<s>)")
REMAINING_JSON = (r'"ttl":\d+', '"ttl":"<s>"')


@dataclass
class Stores:
    cluster: KvProcessCluster
    raftkv: Etcdctl
    etcd: Etcdctl
    diff: Differential
    root: Path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    root = tmp_path_factory.mktemp("etcdctl-admin")
    with (
        running_cluster(root / "raftkv", etcd_grpc=True) as cluster,
        running_etcd(root / "etcd") as etcd,
    ):
        raftkv, etcdctl = Etcdctl(cluster.grpc_endpoints()), Etcdctl([etcd.endpoint])
        yield Stores(cluster, raftkv, etcdctl, Differential(raftkv, etcdctl), root)


@pytest.fixture
def diff(stores: Stores) -> Differential:
    stores.diff.begin()
    return stores.diff


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def run(diff: Differential, *args: str | Each, masks: Masks) -> str:
    """`diff.run`, answering raftkv's stdout with `masks` applied."""
    return masked(diff.run(*args, masks=masks).stdout, masks)


def granted(diff: Differential, ttl: int) -> Each:
    """A lease of `ttl` seconds granted at both stores (both say so alike); each one's id
    in hex, as etcdctl takes it."""
    ids = {}
    for store, result in diff.run_each("lease", "grant", str(ttl)).items():
        printed = re.fullmatch(
            rf"lease ([0-9a-f]{{16}}) granted with TTL\({ttl}s\)\n", result.stdout
        )
        assert printed, f"{store}: {result}"
        ids[store] = printed[1]
    return Each(ids)


def with_lease(lease: Each) -> Each:
    return Each({store: f"--lease={value}" for store, value in lease.values.items()})


def test_a_lease_keeps_keys_alive_until_revoked_as_at_etcd(
    stores: Stores, diff: Differential
) -> None:
    lease = granted(diff, 600)
    assert diff.run("put", with_lease(lease), "l/a", "1").stdout == "OK\n"
    diff.run("put", with_lease(lease), "l/b", "2")
    diff.run("put", "l/free", "3")
    masks = [LEASE_HEX, REMAINING]
    lived = run(diff, "lease", "timetolive", lease, masks=masks)
    assert lived == "lease <lease> granted with TTL(600s), remaining(<s>)\n"
    # etcd lists a lease's keys in an order of its own (a Go map's); raftkv sorts them.
    for store, result in diff.run_each("lease", "timetolive", "--keys", lease).items():
        printed = masked(result.check().stdout, masks)
        head, keys = printed.removesuffix("])\n").split(", attached keys([")
        assert head == "lease <lease> granted with TTL(600s), remaining(<s>)", store
        assert sorted(keys.split()) == ["l/a", "l/b"], store
    for store, result in diff.run_each("lease", "timetolive", "--keys", "-w=json", lease).items():
        answer = result.check().json()
        assert answer["granted-ttl"] == 600 and 0 < answer["ttl"] <= 600, store
        assert sorted(answer["keys"]) == [b64("l/a"), b64("l/b")], store
        assert answer["id"] == int(lease.values[store], 16), store
    kept = run(diff, "lease", "keep-alive", "--once", lease, masks=masks)
    assert kept == "lease <lease> keepalived with TTL(600)\n"
    diff.run("lease", "keep-alive", "--once", "-w=json", lease, masks=[LEASE_JSON])
    # Other tests' leases are listed too: raftkv's list holds this one.
    listed = stores.raftkv.run("lease", "list").check().stdout.splitlines()
    assert listed[0] == f"found {len(listed) - 1} leases"
    assert lease.values["raftkv"] in listed[1:]
    assert run(diff, "lease", "revoke", lease, masks=masks) == "lease <lease> revoked\n"
    # Revoking deletes its keys, not the others.
    assert diff.run("get", "--prefix", "l/").stdout == "l/free\n3\n"
    assert run(diff, "lease", "timetolive", lease, masks=masks) == (
        "lease <lease> already expired\n"
    )
    again = diff.run("lease", "revoke", lease, masks=masks)
    assert again.errors == ["Error: failed to revoke lease (etcdserver: requested lease not found)"]
    gone = diff.run("lease", "keep-alive", "--once", lease, masks=masks)
    assert gone.errors == ["Error: etcdserver: requested lease not found"]
    unknown = diff.run("put", "--lease=1234abcd", "l/x", "1")
    assert unknown.errors == ["Error: etcdserver: requested lease not found"]


def test_a_lease_that_expires_takes_its_keys_with_it(stores: Stores) -> None:
    etcdctl = stores.raftkv
    lease = etcdctl.run("lease", "grant", "2", "-w=json").check().json()["ID"]
    etcdctl.run("put", f"--lease={lease:x}", "x/short", "v").check()
    assert etcdctl.run("get", "x/short", "--print-value-only").check().stdout == "v\n"

    def expired() -> bool:
        return etcdctl.run("get", "x/short").check().stdout == ""

    wait_until(expired, 15, "the lease to expire and its key to go")
    assert etcdctl.run("lease", "timetolive", f"{lease:x}").check().stdout == (
        f"lease {lease:016x} already expired\n"
    )


def test_member_list_names_every_member_and_its_etcd_url(stores: Stores) -> None:
    cluster = stores.cluster
    answer = stores.raftkv.run("member", "list", "-w=json").check().json()
    members = {member["ID"]: member for member in answer["members"]}
    assert sorted(members) == cluster.ids
    for node, member in members.items():
        assert member == {
            "ID": node,
            "name": f"node-{node}",
            "peerURLs": [f"http://127.0.0.1:{cluster.peer_ports[node]}"],
            "clientURLs": [f"http://{cluster.grpc_endpoint(node)}"],
        }
    assert answer["header"]["cluster_id"] != 0 and answer["header"]["member_id"] in members
    # The same fields as etcd's.
    at_etcd = stores.etcd.run("member", "list", "-w=json").check().json()
    assert set(at_etcd) == set(answer)
    assert set(at_etcd["members"][0]) == set(answer["members"][0])
    lines = stores.raftkv.run("member", "list").check().stdout.splitlines()
    assert lines == [
        f"{node}, started, node-{node}, http://127.0.0.1:{cluster.peer_ports[node]}, "
        f"http://{cluster.grpc_endpoint(node)}, false"
        for node in cluster.ids
    ]


# What `member add` prints that names the store: ids, and the other members.
MEMBER_ADD = [
    (
        r"^Member +[0-9a-f]+ (added to|removed from) cluster +[0-9a-f]+$",
        r"Member <id> \1 cluster <c>",
    ),
    # Every member, in an order of etcdctl's own (a Go map's).
    (r'^ETCD_INITIAL_CLUSTER=".*"$', "ETCD_INITIAL_CLUSTER=<members>"),
]


def test_a_learner_is_added_refused_promotion_until_caught_up_and_removed(
    stores: Stores, diff: Differential
) -> None:
    peer_url = f"http://127.0.0.1:{free_port()}"  # nothing listens: it never catches up
    added = diff.run(
        "member", "add", "--learner", "learner", f"--peer-urls={peer_url}", masks=MEMBER_ADD
    )
    assert masked(added.stdout, MEMBER_ADD) == (
        "Member <id> added to cluster <c>\n\n"
        'ETCD_NAME="learner"\n'
        "ETCD_INITIAL_CLUSTER=<members>\n"
        f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{peer_url}"\n'
        'ETCD_INITIAL_CLUSTER_STATE="existing"\n'
    )
    (initial,) = [line for line in added.stdout.splitlines() if "INITIAL_CLUSTER=" in line]
    peers = stores.cluster.peer_ports
    assert sorted(initial.removeprefix("ETCD_INITIAL_CLUSTER=").strip('"').split(",")) == [
        f"learner={peer_url}",
        *(f"node-{node}=http://127.0.0.1:{peers[node]}" for node in stores.cluster.ids),
    ]
    ids = {}
    for store, etcdctl in diff.stores.items():
        members = etcdctl.run("member", "list", "-w=json").check().json()["members"]
        (learner,) = [member for member in members if member.get("isLearner")]
        assert learner["peerURLs"] == [peer_url] and "name" not in learner
        ids[store] = format(learner["ID"], "x")
    learner_id = Each(ids)
    assert int(ids["raftkv"], 16) == max(stores.cluster.ids) + 1
    raftkv_line = stores.raftkv.run("member", "list").check().stdout.splitlines()[-1]
    assert raftkv_line == f"{ids['raftkv']}, unstarted, , {peer_url}, , true"
    refused = diff.run("member", "promote", learner_id)
    assert refused.errors == [
        "Error: etcdserver: can only promote a learner member which is in sync with leader"
    ]
    voter = diff.run("member", "promote", Each({"raftkv": "1", "etcd": etcd_member_hex(stores)}))
    assert voter.errors == ["Error: etcdserver: can only promote a learner member"]
    removed = run(diff, "member", "remove", learner_id, masks=MEMBER_ADD)
    assert removed == "Member <id> removed from cluster <c>\n"
    again = diff.run("member", "remove", learner_id)
    assert again.errors == ["Error: etcdserver: member not found"]
    assert [
        line.split(", ")[0]
        for line in stores.raftkv.run("member", "list").check().stdout.splitlines()
    ] == [str(node) for node in stores.cluster.ids]


def etcd_member_hex(stores: Stores) -> str:
    members = stores.etcd.run("member", "list", "-w=json").check().json()["members"]
    (member,) = [member["ID"] for member in members if member.get("name") == "solo"]
    return format(member, "x")


def test_endpoint_status_and_health_of_every_member(stores: Stores) -> None:
    cluster = stores.cluster
    leader = cluster.wait_for_leader()
    statuses = stores.raftkv.run("endpoint", "status", "-w=json").check().json()
    assert [status["Endpoint"] for status in statuses] == cluster.grpc_endpoints()
    terms = set()
    for node, entry in zip(cluster.ids, statuses, strict=True):
        status = entry["Status"]
        assert status["header"]["member_id"] == node
        assert status["version"].startswith("3.5.0+raftkv.")
        assert status["leader"] == leader
        assert status["raftIndex"] >= status["raftAppliedIndex"] > 0
        assert status["dbSize"] > 0 and status["dbSizeInUse"] > 0
        assert "errors" not in status and "isLearner" not in status
        terms.add(status["raftTerm"])
    assert len(terms) == 1
    # etcd's Status has the same fields.
    (at_etcd,) = stores.etcd.run("endpoint", "status", "-w=json").check().json()
    assert set(at_etcd) == set(statuses[0])
    assert set(at_etcd["Status"]) == set(statuses[0]["Status"])
    table = stores.raftkv.run("endpoint", "status").check().stdout.splitlines()
    for node, line in zip(cluster.ids, table, strict=True):
        fields = line.split(", ")
        assert fields[:2] == [cluster.grpc_endpoint(node), f"{node:x}"]
        assert fields[4:6] == [str(node == leader).lower(), "false"]
    healthy = re.compile(r"^(\S+) is healthy: successfully committed proposal: took = \S+$")
    for etcdctl, endpoints in (
        (stores.raftkv, cluster.grpc_endpoints()),
        (stores.etcd, stores.etcd.endpoints),
    ):
        lines = etcdctl.run("endpoint", "health").check().stdout.splitlines()
        matched = [healthy.match(line) for line in lines]
        assert all(matched), lines
        assert sorted(match[1] for match in matched if match) == sorted(endpoints)


def test_move_leader_moves_it_and_needs_the_leaders_endpoint(
    stores: Stores, diff: Differential
) -> None:
    cluster, etcdctl = stores.cluster, stores.raftkv
    leader = cluster.wait_for_leader()
    target = next(node for node in cluster.ids if node != leader)
    moved = etcdctl.run("move-leader", f"{target:x}").check()
    assert moved.stdout == f"Leadership transferred from {leader:x} to {target:x}\n"
    assert cluster.wait_for_leader() == target
    statuses = etcdctl.run("endpoint", "status", "-w=json").check().json()
    assert {entry["Status"]["leader"] for entry in statuses} == {target}
    # Given followers only, etcdctl finds no leader to ask, at raftkv as at etcd.
    followers = [cluster.grpc_endpoint(node) for node in cluster.ids if node != target]
    refused = etcdctl.run("move-leader", f"{leader:x}", endpoints=followers)
    assert refused.returncode != 0
    assert refused.errors == [f"Error: no leader endpoint given at [{' '.join(followers)}]"]
    # A follower and the leader: etcdctl asks the leader.
    back = etcdctl.run(
        "move-leader", f"{leader:x}", endpoints=[followers[0], cluster.grpc_endpoint(target)]
    )
    assert back.check().stdout == f"Leadership transferred from {target:x} to {leader:x}\n"
    assert cluster.wait_for_leader() == leader
    # To the leader itself, and to no member: as etcd answers.
    itself = Each({"raftkv": f"{leader:x}", "etcd": etcd_member_hex(stores)})
    diff.run("move-leader", itself, masks=[(r"from \S+ to \S+", "from <leader> to <leader>")])
    nobody = diff.run("move-leader", "abcdef")
    assert nobody.errors == ["Error: etcdserver: bad leader transferee"]


def test_compaction_physical_and_what_it_keeps(diff: Differential) -> None:
    for value in ("1", "2", "3"):
        diff.run("put", "cp/k", value)
    assert diff.run("compaction", "--physical", Rev(2)).stdout.startswith("compacted revision ")
    assert diff.run("get", "cp/k", Rev(2, "--rev=")).stdout == "cp/k\n2\n"
    old = diff.run("get", "cp/k", Rev(1, "--rev="))
    assert old.errors == ["Error: etcdserver: mvcc: required revision has been compacted"]


def raftkv_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_snapshot_save_is_restored_by_raftkv_with_the_same_keys(
    stores: Stores, diff: Differential
) -> None:
    cluster, etcdctl = stores.cluster, stores.raftkv
    for index in range(20):
        etcdctl.run("put", f"snap/{index:02}", f"value {index}").check()
    etcdctl.run("del", "snap/07").check()
    source = etcdctl.run("get", "--prefix", "snap/", "-w=json").check().json()
    # etcdctl saves from one endpoint only.
    many = etcdctl.run("snapshot", "save", str(stores.root / "many.db"))
    assert many.errors == [
        "Error: snapshot must be requested to one selected node, not multiple "
        f"[{' '.join(cluster.grpc_endpoints())}]"
    ]
    follower = next(node for node in cluster.ids if node != cluster.wait_for_leader())
    saved_to = stores.root / "saved.db"
    saved = etcdctl.run(
        "snapshot", "save", str(saved_to), endpoints=[cluster.grpc_endpoint(follower)]
    )
    assert saved.check().stdout == f"Snapshot saved at {saved_to}\n"
    at_etcd = stores.etcd.run("snapshot", "save", str(stores.root / "etcd.db")).check()
    assert at_etcd.stdout == f"Snapshot saved at {stores.root / 'etcd.db'}\n"
    # etcd's bbolt tools cannot read raftkv's backup (docs/etcd.md); raftkv's restore can.
    restored = KvProcessCluster(stores.root / "restored", nodes=1, etcd_grpc=True)
    initial = f"1=127.0.0.1:{restored.peer_ports[1]}"
    answer = raftkv_cli(
        "snapshot", "restore", str(saved_to), "--id", "1",
        "--data-dir", str(restored.root / "data-1"), "--initial-cluster", initial,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["cluster_id"] != source["header"]["cluster_id"]
    try:
        restored.start(1)
        restored.wait_for_leader()
        alone = Etcdctl([restored.grpc_endpoint(1)])
        wait_until(
            lambda: alone.run("endpoint", "health").returncode == 0, 30, "the restore to serve"
        )
        copy = alone.run("get", "--prefix", "snap/", "-w=json").check().json()
        assert copy["kvs"] == source["kvs"] and copy["count"] == 19
        assert copy["header"]["revision"] >= source["header"]["revision"]
    finally:
        restored.stop()


def test_alarm_list_and_defrag_answer_as_etcd(stores: Stores, diff: Differential) -> None:
    assert diff.run("alarm", "list").stdout == ""
    assert diff.run("alarm", "disarm").stdout == ""
    lines = stores.raftkv.run("defrag").check().stdout.splitlines()
    assert lines == [
        f"Finished defragmenting etcd member[{endpoint}]"
        for endpoint in stores.cluster.grpc_endpoints()
    ]
    at_etcd = stores.etcd.run("defrag").check().stdout
    assert at_etcd == f"Finished defragmenting etcd member[{stores.etcd.endpoints[0]}]\n"


def test_endpoint_hashkv_at_a_revision_is_the_same_on_every_member(stores: Stores) -> None:
    """`etcdctl endpoint hashkv --rev=N`: every member prints the same hash, and the same
    again after later writes; a revision past the current one is refused as at etcd."""
    cluster, etcdctl = stores.cluster, stores.raftkv
    revision = etcdctl.run("put", "hk/k", "1", "-w=json").check().json()["header"]["revision"]
    etcdctl.run("put", "hk/k", "2").check()

    def hashes() -> list[dict[str, int]]:
        # A linearizable read on each member first: it has applied `revision` by then.
        for endpoint in cluster.grpc_endpoints():
            etcdctl.run("get", "hk/k", endpoints=[endpoint]).check()
        answers = etcdctl.run("endpoint", "hashkv", f"--rev={revision}", "-w=json").check()
        entries = answers.json()
        assert [entry["Endpoint"] for entry in entries] == cluster.grpc_endpoints()
        return [entry["HashKV"] for entry in entries]

    first = hashes()
    assert len({answer["hash"] for answer in first}) == 1
    assert {answer["header"]["member_id"] for answer in first} == set(cluster.ids)
    etcdctl.run("put", "hk/k", "3").check()
    assert {answer["hash"] for answer in hashes()} == {first[0]["hash"]}
    # etcd's HashKV answers the same fields.
    (at_etcd,) = stores.etcd.run("endpoint", "hashkv", "-w=json").check().json()
    assert set(at_etcd["HashKV"]) == set(first[0])
    # Never compacted (the module's compaction test may have run first): -1, as etcd says.
    compacted = {answer.get("compact_revision", 0) for answer in first}
    assert len(compacted) == 1 and compacted.pop() != 0
    future = etcdctl.run("endpoint", "hashkv", "--rev=100000000")
    assert future.returncode != 0
    assert "etcdserver: mvcc: required revision is a future revision" in future.stderr
