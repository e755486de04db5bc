"""Watches on a real 3-process cluster, through the Python client's iterator: while a writer
puts and deletes, the leader is `kill -9`ed and restarted and the follower serving one
watcher is stopped (SIGTERM) and restarted. A history checker then compares what every
watcher saw with the store's history:

1. every watcher saw exactly the same sequence of events (same revisions, keys, values,
   types): no gap, no duplicate, no reordering across its reconnections;
2. that sequence is the history a fresh watcher reads afterwards from the same start;
3. every acknowledged write is in it, at the revision its answer named;
4. replaying it from an empty store gives the final state a linearizable range reads.

Also on real processes: whole revisions per message, progress notifications, a 410
`compacted` with the oldest revision, and a watcher whose client stops reading ended
`too_slow` (counted in /metrics) while the node goes on serving.
"""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from kv_processes import KvProcessCluster, running_cluster

from raftkv.client import ClientError, ClientSettings, Compacted, SyncClient, WatchEvent, txn
from raftkv.testing.processes import wait_until

WRITES = 240
END_KEY = b"h/end"
# Bounds for a hang, not timings the test relies on.
JOIN_TIMEOUT_S = 180.0

Seen = tuple[str, bytes, bytes, int]


def seen(event: WatchEvent) -> Seen:
    return (event.type, event.kv.key, event.kv.value, event.revision)


class Watching(threading.Thread):
    """A SyncClient watch of prefix h/ from `start`, until it sees END_KEY."""

    def __init__(self, name: str, endpoints: list[str], start: int) -> None:
        super().__init__(name=name, daemon=True)
        self.endpoints = endpoints
        self.start_revision = start
        self.events: list[Seen] = []
        self.error: BaseException | None = None
        self.reconnections = 0

    def run(self) -> None:
        settings = ClientSettings(deadline_s=60.0)
        try:
            with SyncClient(self.endpoints, settings) as client:
                watcher = client.watch(
                    "h/", prefix=True, start_revision=self.start_revision, progress_interval_s=1
                )
                with watcher:
                    for event in watcher:
                        self.events.append(seen(event))
                        self.reconnections = watcher.reconnections
                        if event.kv.key == END_KEY:
                            return
        except BaseException as error:  # reported by the test
            self.error = error


def test_watchers_see_the_exact_history_across_a_leader_kill_and_a_follower_restart(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        leader = cluster.wait_for_leader()
        follower = next(node for node in cluster.ids if node != leader)
        others = [node for node in cluster.ids if node != follower]
        with SyncClient(cluster.endpoints(), ClientSettings(deadline_s=60.0)) as client:
            start = client.put("h/first", "0").revision
            # One watcher served by `follower` first, one by the leader first.
            watchers = [
                Watching("on-follower", [cluster.url(n) for n in [follower, *others]], start),
                Watching("on-leader", [cluster.url(n) for n in [leader, *others]], start),
            ]
            for watching in watchers:
                watching.start()
            acknowledged = write_with_faults(cluster, client, leader, follower)
            for watching in watchers:
                watching.join(JOIN_TIMEOUT_S)
                assert not watching.is_alive(), f"{watching.name} did not see the end"
                assert watching.error is None, repr(watching.error)

            # The reference: a fresh watcher from the same start, after the faults.
            reference = Watching("reference", cluster.endpoints(), start)
            reference.run()
            assert reference.error is None, repr(reference.error)
            history = reference.events
            final = client.range("h/", prefix=True)

        # 1, 2: every watcher saw the reference history exactly.
        for watching in watchers:
            assert watching.events == history, watching.name
            # Its node went away under it at least once (stopped, or killed).
            assert watching.reconnections >= 1, watching.name
        revisions = [revision for _, _, _, revision in history]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
        # 3: every acknowledged write, at its revision.
        by_revision = {revision: item for item, revision in zip(history, revisions, strict=True)}
        for write in acknowledged:
            assert by_revision.get(write[3]) == write, write
        # 4: replaying the history gives the final state.
        state: dict[bytes, tuple[bytes, int]] = {}
        for kind, key, value, revision in history:
            if kind == "put":
                state[key] = (value, revision)
            else:
                state.pop(key, None)
        assert state == {kv.key: (kv.value, kv.mod_revision) for kv in final.kvs}
        print(
            f"\nwatch e2e: {len(history)} events, {len(acknowledged)} acknowledged writes, "
            f"{len(watchers)} watchers identical to the reference through "
            f"{[watching.reconnections for watching in watchers]} reconnections"
        )


def write_with_faults(
    cluster: KvProcessCluster, client: SyncClient, leader: int, follower: int
) -> list[Seen]:
    """Puts and deletes under h/, with the faults at fixed points; the acknowledged ones."""
    acknowledged: list[Seen] = []
    faults = {
        60: lambda: cluster.kill(leader),
        100: lambda: cluster.start(leader),
        140: lambda: cluster.kill(follower, signal.SIGTERM),
        180: lambda: cluster.start(follower),
    }
    for number in range(WRITES):
        if number in faults:
            faults[number]()
        key = f"h/{number % 17}".encode()
        try:
            if number % 5 == 4:
                deleted = client.delete(key)
                if deleted.deleted:
                    acknowledged.append(("delete", key, b"", deleted.revision))
            else:
                value = str(number).encode()
                acknowledged.append(("put", key, value, client.put(key, value).revision))
        except ClientError:
            continue  # an unknown outcome: the checker does not count on it
    end = client.put(END_KEY, b"end")
    acknowledged.append(("put", END_KEY, b"end", end.revision))
    return acknowledged


def test_whole_revisions_progress_and_compacted_on_real_processes(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster, SyncClient(cluster.endpoints()) as client:
        first = client.txn([], [txn.put("t/a", "1"), txn.put("t/b", "2"), txn.put("t/c", "3")])
        second = client.put("t/a", "again")
        follower = next(node for node in cluster.ids if node != cluster.wait_for_leader())
        with SyncClient([cluster.url(follower)]) as on_follower:
            watcher = on_follower.watch(
                "t/", prefix=True, start_revision=first.revision, progress_notify=True,
                progress_interval_s=0.2,
            )  # fmt: skip
            with watcher:
                batches = []
                for batch in watcher.batches():
                    batches.append(batch)
                    if not batch.events:  # a progress notification: caught up
                        break
        events = [event for batch in batches for event in batch.events]
        assert [(event.kv.key, event.revision) for event in events] == [
            (b"t/a", first.revision), (b"t/b", first.revision), (b"t/c", first.revision),
            (b"t/a", second.revision),
        ]  # fmt: skip
        # A revision's events are never split between messages.
        for batch in batches:
            revisions = {event.revision for event in batch.events}
            for other in batches:
                if other is not batch:
                    assert not revisions & {event.revision for event in other.events}
        assert batches[-1].revision >= second.revision
        # A watch is served from its member's applied state (fresh only on the member that
        # answered the compaction, docs/client.md), so both go to the leader: a lagging
        # follower may still deliver the history the leader has just discarded.
        leader = cluster.wait_for_leader()
        with SyncClient([cluster.url(leader)]) as on_leader:
            on_leader.compact(second.revision)
            try:
                for _ in on_leader.watch("t/", prefix=True, start_revision=first.revision):
                    raise AssertionError("a watch from a compacted revision delivered an event")
            except Compacted as error:
                assert (error.compact_revision, error.oldest_revision) == (
                    second.revision,
                    second.revision + 1,
                )


def too_slow_count(cluster: KvProcessCluster, node: int) -> float:
    too_slow = ("raftkv_watch_canceled_total", frozenset({("reason", "too_slow")}))
    return cluster.metrics(node).get(too_slow, 0.0)


def test_a_watcher_that_stops_reading_is_canceled_too_slow(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path)
    try:
        for node in cluster.ids:
            cluster.start(node, environ={"RAFTKV_WATCH_SEND_TIMEOUT_S": "1"})
        leader = cluster.wait_for_leader()
        with socket.create_connection(("127.0.0.1", cluster.client_ports[leader])) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b"GET /v1/watch?key=big/&prefix=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            value = "x" * 50_000
            with SyncClient(cluster.endpoints()) as client:
                for number in range(2000):
                    client.put(f"big/{number % 50}", value)
                    if number % 25 == 0 and too_slow_count(cluster, leader) >= 1:
                        break
                wait_until(lambda: too_slow_count(cluster, leader) >= 1, 30, "too_slow")
                # The node goes on serving everyone else.
                assert client.put("after", "ok").revision > 0
    finally:
        cluster.stop()
