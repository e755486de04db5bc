"""etcdctl 3.5's coordination commands and watch against a cluster of 3 real `raftkv serve`
processes serving etcd's gRPC API, each scenario also played at a real single-member etcd
3.5 where one can be, and what the two printed compared (keys and ids masked):

- `lock NAME`: a second contender gets the lock only once the first lets go (SIGTERM:
  etcdctl unlocks) or dies (kill -9: its session's lease expires after --ttl);
- `elect NAME PROPOSAL` / `elect -l NAME`: the observer sees each leader in turn; the next
  proposal wins when the leader resigns (SIGTERM) or is killed and its session's lease
  ends (etcdctl's elect has no --ttl: its lease lives 60 s, so the test revokes it, which
  is what its expiry does);
- `watch` with --prefix, --prev-kv and --rev, compared line by line; and a watch kept
  through a `kill -9` of the leader that serves its stream: clientv3 resumes it on
  another member from the next revision, every event once and in order.

Background etcdctl processes are `EtcdctlProcess`es: stopped by PID, waits bounded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from etcd_differential import Differential, Rev, masked, normalize_json_lines
from kv_processes import KvProcessCluster, running_cluster

from raftkv.testing.etcd_tools import Etcdctl, EtcdctlProcess, running_etcd
from raftkv.testing.processes import wait_until

pytestmark = pytest.mark.slow

# A lock's or an election's key: the name, then the session's lease id in hex.
OWN_KEY = (r"^(\w+)/[0-9a-f]+$", r"\1/<lease>")


@dataclass
class Stores:
    cluster: KvProcessCluster
    raftkv: Etcdctl
    etcd: Etcdctl
    diff: Differential

    def both(self) -> dict[str, Etcdctl]:
        return {"raftkv": self.raftkv, "etcd": self.etcd}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    root = tmp_path_factory.mktemp("etcdctl-coordination")
    with (
        running_cluster(root / "raftkv", etcd_grpc=True) as cluster,
        running_etcd(root / "etcd") as etcd,
    ):
        raftkv, etcdctl = Etcdctl(cluster.grpc_endpoints()), Etcdctl([etcd.endpoint])
        yield Stores(cluster, raftkv, etcdctl, Differential(raftkv, etcdctl))


@pytest.fixture
def diff(stores: Stores) -> Differential:
    stores.diff.begin()
    return stores.diff


def keys_under(etcdctl: Etcdctl, prefix: str) -> list[str]:
    return etcdctl.run("get", "--prefix", f"{prefix}/", "--keys-only").check().stdout.split()


def wait_for_keys(etcdctl: Etcdctl, prefix: str, count: int, what: str) -> None:
    wait_until(lambda: len(keys_under(etcdctl, prefix)) == count, 15, what)


def lock_handover(etcdctl: Etcdctl, name: str, *, crash: bool) -> tuple[str, str]:
    """The first contender's and then the second's output. The first holds `name` (until a
    signal), the second queues behind it with a command to run once it holds the lock;
    the first then lets go: SIGTERM (unlock) or, with `crash`, kill -9 (its --ttl=2
    session lease expires)."""
    command = ["sh", "-c", "echo got $ETCD_LOCK_KEY"]
    with etcdctl.spawn("lock", "--ttl=2", name) as first:
        first.wait_for_lines(1, 15, "the first contender to hold the lock")
        with etcdctl.spawn("lock", "--ttl=2", name, "--", *command) as second:
            # The second's key is in the queue after the first's: it waits.
            wait_for_keys(etcdctl, name, 2, "the second contender to queue")
            assert second.running() and second.stdout == "", second.describe()
            if crash:
                assert first.kill() == -9
            else:
                assert first.stop() == 0
            assert second.wait(30) == 0, second.describe()
    wait_for_keys(etcdctl, name, 0, "both lock keys to go")
    return first.stdout, second.stdout


@pytest.mark.parametrize("crash", [False, True], ids=["unlocked", "killed"])
def test_a_lock_goes_to_the_next_contender_once_the_holder_lets_go(
    stores: Stores, crash: bool
) -> None:
    seen = {}
    for store, etcdctl in stores.both().items():
        name = f"lock{int(crash)}"
        first, second = lock_handover(etcdctl, name, crash=crash)
        # The key it holds, then its (empty) value.
        held, value = first.splitlines()
        assert value == ""
        assert second.startswith(f"got {name}/") and held != second.split()[1]
        seen[store] = (masked(first, [OWN_KEY]), masked(second, [(r"/[0-9a-f]+$", "/<lease>")]))
    assert seen["raftkv"] == seen["etcd"] == (f"{name}/<lease>\n\n", f"got {name}/<lease>\n")


def elections(etcdctl: Etcdctl, name: str) -> tuple[list[str], list[str]]:
    """An observer and three proposals: a wins; b waits; a resigns (SIGTERM) and b wins;
    c waits; b is killed (-9) and its session's lease revoked, as its expiry would; c
    wins. What the observer printed, and what each proposal printed, masked."""
    with etcdctl.spawn("elect", "-l", name) as observer:
        with etcdctl.spawn("elect", name, "a") as a:
            assert a.wait_for_lines(2, 15, "a to be elected")[1] == "a"
            observer.wait_for_lines(2, 15, "the observer to see a")
            b = etcdctl.spawn("elect", name, "b")
            wait_for_keys(etcdctl, name, 2, "b to campaign")
            assert b.running() and b.stdout == "", b.describe()
        with b, etcdctl.spawn("elect", name, "c") as c:
            assert b.wait_for_lines(2, 15, "b to be elected after a resigned")[1] == "b"
            observer.wait_for_lines(4, 15, "the observer to see b")
            wait_for_keys(etcdctl, name, 2, "c to campaign")
            kvs = etcdctl.run("get", "--prefix", f"{name}/", "-w=json").check().json()["kvs"]
            lease = min(kvs, key=lambda kv: kv["create_revision"])["lease"]
            b.kill()
            assert c.running() and c.stdout == "", c.describe()
            etcdctl.run("lease", "revoke", f"{lease:x}").check()
            assert c.wait_for_lines(2, 15, "c to be elected after b's lease ended")[1] == "c"
            seen = observer.wait_for_lines(6, 15, "the observer to see c")
    printed = [masked(process.stdout, [OWN_KEY]) for process in (a, b, c)]
    return [masked(line, [OWN_KEY]) for line in seen], printed


def test_elect_and_its_observer_as_at_etcd(stores: Stores) -> None:
    seen = {store: elections(etcdctl, "vote") for store, etcdctl in stores.both().items()}
    assert seen["raftkv"] == seen["etcd"]
    observed, printed = seen["raftkv"]
    assert observed == ["vote/<lease>", "a", "vote/<lease>", "b", "vote/<lease>", "c"]
    assert printed == ["vote/<lease>\na\n", "vote/<lease>\nb\n", "vote/<lease>\nc\n"]


# The JSON watch's last event from the past: the put of w/skip.
CAUGHT_UP = '"key":"dy9za2lw"'
# The JSON watch's last event: the prefix delete's of w/b/2.
LAST_EVENT = '"type":1,"kv":{"key":"dy9iLzI="'


def test_watch_with_prefix_prev_kv_and_rev_prints_what_etcd_prints(diff: Differential) -> None:
    diff.run("put", "w/a", "1")
    diff.run("put", "w/skip", "x")
    watches: dict[str, list[EtcdctlProcess]] = {}
    for store, etcdctl in diff.stores.items():
        # From the past (the first put on): one key as a prefix with --prev-kv, and every
        # response as JSON.
        commands = [
            ["watch", "--prefix", "--prev-kv", Rev(1, "--rev="), "w/a"],
            ["watch", "--prefix", "--prev-kv", Rev(1, "--rev="), "w/", "-w=json"],
        ]
        watches[store] = [etcdctl.spawn(*diff.concrete(store, command)) for command in commands]
    try:
        for store, (past, as_json) in watches.items():
            past.wait_for(lambda out: out.startswith("PUT\nw/a\n1\n"), 15, f"{store}'s watch")
            as_json.wait_for(lambda out: CAUGHT_UP in out, 15, f"{store}'s JSON watch")
        for command in (
            ["put", "w/a", "2"], ["put", "w/b/1", "3"], ["put", "w/b/2", "4"], ["del", "w/a"],
            ["put", "v/a", "5"], ["del", "--prefix", "w/b/"],
        ):  # fmt: skip
            diff.run(*command)
        for store, (past, as_json) in watches.items():
            # One response a write; the prefix delete's two events in one.
            as_json.wait_for(lambda out: LAST_EVENT in out, 15, f"{store}'s JSON watch")
            past.wait_for(lambda out: out.endswith("DELETE\nw/a\n2\nw/a\n\n"), 15, store)
    finally:
        for processes in watches.values():
            for process in processes:
                process.stop()
    past = {store: processes[0].stdout for store, processes in watches.items()}
    assert past["raftkv"] == past["etcd"] == (
        "PUT\nw/a\n1\n" "PUT\nw/a\n1\nw/a\n2\n" "DELETE\nw/a\n2\nw/a\n\n"
    )  # fmt: skip
    as_json = {
        store: normalize_json_lines(processes[1].stdout, diff.base[store])
        for store, processes in watches.items()
    }
    # Events from the past may come several to a response, as the catch-up finds them
    # (at both): the events are compared, and the responses after the catch-up, one a
    # revision.
    events = {
        store: [event for response in responses for event in response["Events"]]
        for store, responses in as_json.items()
    }
    assert events["raftkv"] == events["etcd"] and len(events["raftkv"]) == 8
    assert as_json["raftkv"][-5:] == as_json["etcd"][-5:]
    last = as_json["raftkv"][-1]
    assert [event["type"] for event in last["Events"]] == [1, 1]
    assert [event["prev_kv"]["value"] for event in last["Events"]] == ["Mw==", "NA=="]


def serving_members(watch: EtcdctlProcess) -> list[int]:
    """The member that sent each response `watch -w=json` printed (its header's
    member_id: raftkv's member ids are etcd's)."""
    return [json.loads(line)["Header"]["member_id"] for line in watch.stdout.splitlines()]


def test_a_watch_goes_on_through_a_kill_of_the_leader_serving_it(stores: Stores) -> None:
    """clientv3 (etcdctl's client) resumes a watch whose stream broke on another endpoint,
    from the revision after the last it received: every event once, in order. etcd does
    the same (it is the client's doing); with a one-member etcd there is no second member
    to compare, so this runs at raftkv only."""
    cluster, etcdctl = stores.cluster, stores.raftkv
    with etcdctl.spawn("watch", "--prefix", "--prev-kv", "k/", "-w=json") as watch:

        def started() -> bool:
            etcdctl.run("put", "k/probe", "p").check()
            return "azEvcHJvYmU=" in watch.stdout or "ay9wcm9iZQ==" in watch.stdout

        wait_until(started, 15, "the watch to start")
        node = serving_members(watch)[-1]
        # Make the member serving the watch the leader, then kill it.
        if cluster.wait_for_leader() != node:
            etcdctl.run("move-leader", f"{node:x}").check()
            assert cluster.wait_for_leader() == node
        first = etcdctl.run("put", "k/0", "before").check()
        assert first.stdout == "OK\n"
        cluster.kill(node)
        try:
            new_leader = cluster.wait_for_leader()
            assert new_leader != node
            for index in range(1, 6):
                etcdctl.run("put", f"k/{index}", f"after {index}").check()
            last = base64.b64encode(b"after 5").decode()
            watch.wait_for(lambda out: last in out, 30, "the writes after the kill")
            moved_to = serving_members(watch)[-1]
            assert moved_to != node and moved_to in cluster.running() and watch.running()
        finally:
            cluster.start(node)
            cluster.wait_for_leader()
    events = [
        (base64.b64decode(event["kv"]["key"]).decode(), event["kv"]["mod_revision"])
        for line in watch.stdout.splitlines()
        for event in json.loads(line)["Events"]
    ]
    after_probes = [key for key, _ in events if key != "k/probe"]
    assert after_probes == [f"k/{index}" for index in range(6)]
    revisions = [revision for _, revision in events]
    assert revisions == sorted(set(revisions))  # each once, in order


def test_a_watch_from_the_compaction_revision_as_at_etcd(stores: Stores) -> None:
    """etcd serves a watch from its compaction revision C with the puts at C (not the
    deletes at C, whose tombstones compaction drops), and cancels one from below C with
    compact_revision C; so does raftkv."""
    seen = {}
    for store, etcdctl in stores.both().items():
        etcdctl.run("put", "cw/gone", "x").check()
        printed = etcdctl.run("txn", "-i", "-w=json", stdin="\nput cw/k v\ndel cw/gone\n\n\n")
        revision = printed.check().json()["header"]["revision"]
        # --physical: etcd answers once the compacted data is gone from its backend;
        # without it, a watch made at once may still see the tombstone of the delete at C.
        etcdctl.run("compaction", "--physical", str(revision)).check()
        with etcdctl.spawn("watch", f"--rev={revision}", "--prefix", "cw/") as watch:
            watch.wait_for(lambda out: out == "PUT\ncw/k\nv\n", 15, f"{store}'s watch")
            etcdctl.run("put", "cw/k", "w").check()
            seen[store] = watch.wait_for_lines(6, 15, f"{store}'s watch to go on")
        below = etcdctl.run("watch", f"--rev={revision - 1}", "-w=json", "cw/k")
        assert below.returncode != 0
        (canceled,) = [json.loads(line) for line in below.stdout.splitlines()]
        assert (canceled["Canceled"], canceled["CompactRevision"]) == (True, revision)
    assert seen["raftkv"] == seen["etcd"] == ["PUT", "cw/k", "v", "PUT", "cw/k", "w"]


def watchers(stores: Stores, store: str) -> float:
    """The watches the store serves now (its members' gauges, summed)."""
    if store == "etcd":
        (endpoint,) = stores.etcd.endpoints
        urls, metric = [f"http://{endpoint}"], "etcd_debugging_mvcc_watcher_total"
    else:
        cluster = stores.cluster
        urls, metric = [cluster.url(node) for node in cluster.running()], "raftkv_watches"
    total = 0.0
    for url in urls:
        text = stores.cluster.http.get(f"{url}/metrics", timeout=5.0).text
        total += sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{metric} ")
        )
    return total


def observe_election_from_the_compaction(stores: Stores, store: str) -> list[str]:
    """Compact `store` at its current revision, start an observer of an empty election
    (it reads that revision and watches from it), wait for its watch, then let a
    candidate win: what the observer printed, masked."""
    etcdctl = stores.both()[store]
    etcdctl.run("put", "cv/k", "v").check()
    revision = etcdctl.run("get", "cv/k", "-w=json").check().json()["header"]["revision"]
    etcdctl.run("compaction", str(revision)).check()
    before = watchers(stores, store)
    with etcdctl.spawn("elect", "-l", "cvote") as observer:
        wait_until(lambda: watchers(stores, store) > before, 15, "the observer's watch")
        with etcdctl.spawn("elect", "cvote", "a") as a:
            assert a.wait_for_lines(2, 15, "a to be elected")[1] == "a"
            lines = observer.wait_for_lines(2, 15, "the observer to see a")
        assert observer.running(), observer.describe()
    return [masked(line, [OWN_KEY]) for line in lines]


def test_an_election_observer_on_a_store_compacted_at_its_revision_as_at_etcd(
    stores: Stores,
) -> None:
    """clientv3's observer of an empty election (`elect -l`) watches from the revision it
    read; on a store compacted at that revision etcd serves it, and so does raftkv (it
    once ended with "elect: observer lost")."""
    seen = {store: observe_election_from_the_compaction(stores, store) for store in stores.both()}
    assert seen["raftkv"] == seen["etcd"] == ["cvote/<lease>", "a"]
