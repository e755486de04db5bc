"""`RocksStorage.reset_to_snapshot` and `raftkv.raft.recovery.force_new_cluster` on a
stopped node's storage (the e2e test runs the whole `raftkv recover` on processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from storage_helpers import make_entries

from raftkv.raft.core.errors import InvalidArgument
from raftkv.raft.core.types import (
    MAX_TERM,
    ConfState,
    Entry,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.driver.envelope import (
    RequestId,
    decode_snapshot,
    encode_proposal,
    encode_snapshot,
)
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.recovery import force_new_cluster
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.raft.transport.inprocess import InProcessNetwork
from raftkv.testing.state_machines import DurableDictStateMachine, encode_set


def test_reset_replaces_log_snapshot_and_hard_state_atomically(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    storage.persist(
        HardState(term=2, vote=NodeId(1), commit=5), make_entries(1, *[2] * 8), None, sync=True
    )
    snapshot = Snapshot(SnapshotMetadata(5, 2, ConfState(voters=frozenset({NodeId(1)}))), b"app")
    with pytest.raises(InvalidArgument, match="commit exactly"):
        storage.reset_to_snapshot(snapshot, HardState(term=2, commit=4))
    storage.reset_to_snapshot(snapshot, HardState(term=2, commit=5))
    storage.close()
    reopened = RocksStorage(tmp_path / "db", create=False)
    hard_state, conf_state = reopened.initial_state()
    assert hard_state == HardState(term=2, commit=5)
    assert conf_state.voters == frozenset({NodeId(1)})
    assert (reopened.first_index(), reopened.last_index()) == (6, 5)
    assert reopened.snapshot() == snapshot
    reopened.close()


def test_force_new_cluster_applies_what_was_committed_and_drops_the_rest(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = RocksStorage(tmp_path / "db")
        machine = DurableDictStateMachine(storage.app_data())
        peers = {NodeId(1): "a:1", NodeId(2): "b:2", NodeId(3): "c:3"}
        voters = ConfState(voters=frozenset(peers))
        bootstrap = Snapshot(
            SnapshotMetadata(1, 1, voters), encode_snapshot(peers, machine.snapshot())
        )
        storage.persist(HardState(term=1, commit=1), (), bootstrap, sync=True)
        # Entries 2..4 committed (not applied yet), 5..6 appended but never known committed.

        def entry(index: int, key: str) -> Entry:
            request = RequestId(NodeId(1), 1, index)
            return Entry(index=index, term=2, data=encode_proposal(request, encode_set(key, "v")))

        entries = [entry(index, f"k{index}") for index in range(2, 7)]
        storage.persist(HardState(term=2, vote=NodeId(1), commit=4), entries, None, sync=True)
        report = await force_new_cluster(storage, NodeId(2), machine)
        assert (report.index, report.dropped_entries) == (4, 2)
        assert report.previous_voters == (1, 2, 3)
        assert [machine.get(f"k{index}") for index in range(2, 7)] == ["v", "v", "v", None, None]
        hard_state, conf_state = storage.initial_state()
        assert conf_state.voters == frozenset({NodeId(2)}) and hard_state.commit == 4
        assert decode_snapshot(storage.snapshot().data)[0] == {NodeId(2): "b:2"}
        storage.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("stored_term", [2**64 - 1, MAX_TERM])
def test_force_new_cluster_resets_a_term_no_election_could_move_past(
    tmp_path: Path, stored_term: int
) -> None:
    """Issue 12 A3: a cluster pushed to term 2**64-1 could never elect again, and recovery
    died too (a node refuses to start with a term past MAX_TERM, and one at MAX_TERM can
    never campaign). Recovery now starts the new cluster at the kept entry's term and says
    so; the recovered node elects itself and serves."""

    async def scenario() -> None:
        storage = RocksStorage(tmp_path / "db")
        machine = DurableDictStateMachine(storage.app_data())
        peers = {NodeId(1): "a:1", NodeId(2): "b:2", NodeId(3): "c:3"}
        bootstrap = Snapshot(
            SnapshotMetadata(1, 1, ConfState(voters=frozenset(peers))),
            encode_snapshot(peers, machine.snapshot()),
        )
        storage.persist(HardState(term=1, commit=1), (), bootstrap, sync=True)
        entries = [
            Entry(
                index=index,
                term=2,
                data=encode_proposal(RequestId(NodeId(1), 1, index), encode_set(f"k{index}", "v")),
            )
            for index in range(2, 5)
        ]
        storage.persist(HardState(term=stored_term, commit=3), entries, None, sync=True)
        report = await force_new_cluster(storage, NodeId(1), machine)
        assert (report.index, report.term, report.term_reset_from) == (3, 2, stored_term)
        assert storage.initial_state()[0] == HardState(term=2, commit=3)

        node = Node(
            node_id=NodeId(1),
            storage=storage,
            transport=InProcessNetwork().transport("a:1"),
            state_machine=machine,
            settings=NodeSettings(persist_in_thread=False, tick_interval_s=0.01),
        )
        await node.start()
        try:
            await node.wait_for_leader(timeout=5.0)
            await node.propose(encode_set("after", "v"), timeout=5.0)
            assert node.status().term == 3
            assert machine.get("after") == "v"
        finally:
            await node.stop()
        storage.close()

    asyncio.run(scenario())
