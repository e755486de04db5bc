"""A follower that was down long enough to need a snapshot catches up through a delta
transfer: the leader sends only the snapshot chunks the follower does not already hold in
its own state. Three real processes; the numbers come from /metrics.

The follower misses a few writes (new keys and a few overwrites) while the leader takes
snapshots and purges its log (`snapshot_every_entries`, `snapshot_keep_entries`), so when it
comes back the log it needs is gone and only a snapshot can catch it up. Its own state
still holds every other key, byte for byte: the chunks holding them are not sent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from random import Random

from kv_processes import KvProcessCluster, wait_until

SETTINGS = {
    "RAFTKV_SNAPSHOT_EVERY_ENTRIES": "20",
    "RAFTKV_SNAPSHOT_KEEP_ENTRIES": "5",
}
KEYS = 4000
KEYS_PER_TXN = 100
# The sender's counters, summed over every member (whoever leads when it comes back).
SENT = (
    "raftkv_snapshot_full_bytes_total",
    "raftkv_snapshot_bytes_sent_total",
    "raftkv_snapshot_delta_bytes_saved_total",
    "raftkv_snapshot_chunks_sent_total",
    "raftkv_snapshot_chunks_reused_total",
)


def sender_totals(cluster: KvProcessCluster) -> dict[str, float]:
    totals = dict.fromkeys(SENT, 0.0)
    for node in cluster.running():
        scraped = cluster.metrics(node)
        for name in SENT:
            totals[name] += scraped[(name, frozenset())]
    return totals


def test_a_follower_that_needs_a_snapshot_gets_only_what_changed(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path)
    rng = Random(11)
    try:
        for node in cluster.ids:
            cluster.start(node, environ=SETTINGS)
        leader = cluster.wait_for_leader()
        # About 4 MB of state (1 KiB values), in transactions of 100 puts.
        for start in range(0, KEYS, KEYS_PER_TXN):
            puts = [
                {"op": "put", "key": f"data/{index:06d}", "value": rng.randbytes(512).hex()}
                for index in range(start, start + KEYS_PER_TXN)
            ]
            status, body = cluster.request(
                leader, "POST", "/v1/txn", json={"compares": [], "success": puts, "failure": []}
            )
            assert status == 200, body

        def revisions_agree() -> bool:
            statuses = [cluster.status(node) for node in cluster.ids]
            return all(status is not None for status in statuses) and (
                len({status["revision"] for status in statuses if status is not None}) == 1
            )

        wait_until(revisions_agree, 60, "every member to apply the load")
        lagging = next(node for node in cluster.ids if node != leader)
        cluster.kill(lagging)
        # A little more while it is down: new keys, and a few existing ones rewritten. Each
        # is an entry: the leader snapshots every 20 and keeps 5 behind, so the entries the
        # follower misses are purged.
        for index in (7, 1999, 3500):
            status, _ = cluster.request(
                leader, "PUT", f"/v1/kv/data/{index:06d}", json={"value": "rewritten"}
            )
            assert status == 200
        for index in range(60):
            status, _ = cluster.request(
                leader, "PUT", f"/v1/kv/zz/{index:04d}", json={"value": f"late {index}"}
            )
            assert status == 200
        before = sender_totals(cluster)

        cluster.start(lagging, environ=SETTINGS)

        def caught_up() -> bool:
            status = cluster.status(lagging)
            current = cluster.status(leader)
            return (
                status is not None
                and current is not None
                and status["revision"] == current["revision"]
                and cluster.metrics(lagging)[
                    ("raftkv_snapshots_total", frozenset({("operation", "install")}))
                ]
                >= 1
            )

        wait_until(caught_up, 60, "the follower to catch up from a snapshot")
        after = sender_totals(cluster)
        full, sent, saved, chunks_sent, chunks_reused = (
            after[name] - before[name] for name in SENT
        )
        ratio = sent / full
        print(
            f"\ndelta snapshot transfer: {sent:.0f} of {full:.0f} bytes sent ({ratio:.1%}); "
            f"{chunks_sent:.0f} chunks sent, {chunks_reused:.0f} reused, {saved:.0f} bytes saved",
            file=sys.stderr,
        )
        assert full > 1_000_000
        assert chunks_reused > 0 and saved > 0
        assert sent < full, (sent, full)
        assert ratio < 0.5, ratio
        on_follower = cluster.metrics(lagging)
        local = ("raftkv_snapshot_incoming_chunks_total", frozenset({("source", "local")}))
        assert on_follower[local] == chunks_reused

        # The follower holds exactly the leader's state.
        def hashes_agree() -> bool:
            answers = [
                cluster.request(node, "GET", "/v1/status?hash=true")[1]
                for node in (leader, lagging)
            ]
            return len({(answer["revision"], answer["hash"]) for answer in answers}) == 1

        wait_until(hashes_agree, 30, "the follower's state hash to match the leader's")
        status, body = cluster.request(lagging, "GET", "/v1/kv/zz/0059?consistency=serializable")
        assert status == 200 and body["kv"]["value"] == "late 59"
    finally:
        cluster.stop()
