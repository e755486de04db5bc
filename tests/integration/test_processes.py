"""Three real processes on loopback (gRPC + RocksDB): elect, replicate, kill -9, restart."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from dict_cluster import DictCluster, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DictCluster]:
    cluster = DictCluster(tmp_path)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_elect_replicate_and_read_from_any_node(cluster: DictCluster) -> None:
    leader = cluster.leader()
    assert leader.call("set greeting hello")["result"] == "hello"
    for node in cluster.nodes.values():
        answer = node.call("get greeting")
        assert answer["ok"] and answer["result"] == "hello", answer
    follower = next(node for node in cluster.nodes.values() if node is not leader)
    # A follower accepts writes (forwarded to the leader).
    assert follower.call("incr visits 3")["result"] == "3"


def test_leader_kill9_rest_elect_and_it_catches_up_after_restart(cluster: DictCluster) -> None:
    leader = cluster.leader()
    assert leader.call("set before-crash 1")["ok"]
    leader.kill9()
    survivors = [node_id for node_id in cluster.nodes if node_id != leader.node_id]
    new_leader = cluster.leader(among=survivors)
    assert new_leader is not leader
    for number in range(10):
        answer = cluster.nodes[survivors[number % 2]].call(f"set after-crash-{number} {number}")
        assert answer["ok"], answer
    leader.start()

    def caught_up() -> bool:
        answer = leader.call("items")
        return bool(answer["ok"]) and len(answer["result"]) == 11

    wait_until(caught_up, 30, "the restarted leader to catch up")


def test_kill9_all_mid_load_loses_no_acknowledged_write(cluster: DictCluster) -> None:
    cluster.leader()
    rng = random.Random(5)
    sent: list[tuple[int, str]] = []
    for _ in range(300):
        node_id = rng.choice(list(cluster.nodes))
        sent.append((node_id, cluster.nodes[node_id].send("incr counter")))
    # Some of the increments are acknowledged, then everyone dies at once.
    wait_until(
        lambda: sum(1 for n, t in sent if cluster.nodes[n].answer(t)) >= 50,
        30,
        "some increments to be acknowledged",
    )
    for node in cluster.nodes.values():
        node.kill9()
    acknowledged = sum(
        1
        for node_id, tag in sent
        if (answer := cluster.nodes[node_id].answer(tag)) is not None and answer["ok"]
    )
    for node in cluster.nodes.values():
        node.start()
    leader = cluster.leader()
    answer = leader.call("get counter")
    assert answer["ok"], answer
    value = int(answer["result"])
    # Durable: every acknowledged increment survived. Exactly once: incr is not
    # idempotent, so an entry applied twice would push the count above what was sent.
    assert acknowledged <= value <= len(sent), (acknowledged, value, len(sent))
    for node in cluster.nodes.values():
        wait_until(
            lambda node=node: node.call("get counter")["result"] == str(value),
            30,
            f"{node} to converge",
        )


def test_a_fourth_process_joins_through_a_follower(cluster: DictCluster, tmp_path: Path) -> None:
    from dict_cluster import DictProcess, free_port

    leader = cluster.leader()
    for number in range(20):
        assert leader.call(f"set k{number} {number}")["ok"]
    follower = next(node for node in cluster.nodes.values() if node is not leader)
    address = f"127.0.0.1:{free_port()}"
    joiner = DictProcess(
        4, {4: address}, tmp_path / "data-4", join=follower.cluster[follower.node_id]
    )
    cluster.nodes[4] = joiner
    joiner.start()  # returns once joined: a learner, caught up, promoted
    status = joiner.status()
    assert 4 in status["voters"], status
    answer = joiner.call("items")
    assert answer["ok"] and len(answer["result"]) == 20, answer
    assert 4 in leader.status()["voters"]
