"""Does one big delete cost the cluster its leader? 3 × `raftkv serve`, `--keys` keys
written in txns of 128 puts, then one DeleteRange of all of them (as `etcdctl check perf`
ends its run): prints how long the delete took and every (term, leader) the members
reported in the seconds after it.

Every member applies the delete on its one event loop, so each loop stalls for as long as
the apply takes (`benchmarks/kv_apply.py` times it in-process). A stall every member
shares elects no one (raftkv.raft.driver.ticker); a leader that stalled alone would have
been replaced by its followers.

    .venv/bin/python benchmarks/big_delete.py [--keys 48000] [--reps 1] [--watch-seconds 6]

Linux only. Every process it starts is stopped by its PID when it ends or fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

# vs_etcd sits beside this script: on the path however it is run (python, runpy).
if "vs_etcd" not in sys.modules:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_etcd import BenchError, Raftkv, choose_ports

PREFIX = "big-delete/"
TXN_OPS = 128  # raftkv's default max_txn_ops
VALUE = "v" * 64
# How long a request that applies a big entry may take (the cluster's client has 5 s).
APPLY_TIMEOUT_S = 120.0


def load(http: httpx.Client, leader: str, keys: int) -> None:
    for first in range(0, keys, TXN_OPS):
        success = [
            {"op": "put", "key": f"{PREFIX}{key:08d}", "value": VALUE}
            for key in range(first, min(first + TXN_OPS, keys))
        ]
        answer = http.post(
            f"{leader}/v1/txn", json={"compares": [], "success": success}, timeout=APPLY_TIMEOUT_S
        )
        if answer.status_code != 200:
            raise BenchError(f"loading the keys: {answer.status_code} {answer.text[:200]}")


def terms_and_leaders(http: httpx.Client, cluster: Raftkv) -> set[tuple[int, int]]:
    """(term, leader) as each member reports it now; a member that does not answer is
    left out."""
    seen = set()
    for member in range(len(cluster.client_ports)):
        try:
            status = http.get(f"{cluster.url(member)}/v1/status").json()
        except (httpx.HTTPError, ValueError):
            continue
        seen.add((int(status["term"]), int(status["leader"])))
    return seen


def once(work_dir: Path, keys: int, watch_seconds: float) -> str:
    _, client_ports = choose_ports()
    cluster = Raftkv(work_dir, client_ports)
    http = cluster.http
    try:
        leader = cluster.start()
        load(http, leader, keys)
        before = terms_and_leaders(http, cluster)
        started = time.monotonic()
        answer = http.delete(
            f"{leader}/v1/kv/{PREFIX}", params={"prefix": "true"}, timeout=APPLY_TIMEOUT_S
        )
        took = time.monotonic() - started
        deleted = answer.json().get("deleted") if answer.status_code == 200 else answer.text
        after: set[tuple[int, int]] = set()
        end = time.monotonic() + watch_seconds
        while time.monotonic() < end:
            after |= terms_and_leaders(http, cluster)
            time.sleep(0.1)
        changed = "no" if after <= before else "YES"
        return (
            f"{keys} keys: deleted {deleted} in {took:.2f} s; (term, leader) before "
            f"{sorted(before)}, after {sorted(after)}; leader changed: {changed}"
        )
    finally:
        cluster.stop()
        http.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=48_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--watch-seconds", type=float, default=6.0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/raftkv-big-delete"))
    options = parser.parse_args()
    try:
        for _ in range(options.reps):
            print(once(options.work_dir, options.keys, options.watch_seconds), flush=True)
    except BenchError as error:
        print(f"big_delete: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
