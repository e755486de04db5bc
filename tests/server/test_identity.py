"""The identity file remembers that a data dir held Raft state, so a lost database is
refused instead of silently bootstrapped again under the same id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftkv.server.identity import (
    IDENTITY_FILE,
    Identity,
    StateLost,
    check_identity,
    derived_cluster_id,
    mark_raft_state,
    read_identity,
)
from raftkv.server.settings import ServerSettings, SettingsInvalid


def test_a_new_data_dir_has_no_raft_state_until_marked(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "node", id=1)
    identity = check_identity(settings)
    assert identity == Identity(
        1,
        cluster_id=derived_cluster_id("raftkv-cluster", {1: "127.0.0.1:7080"}),
        has_raft_state=False,
        peer_address="127.0.0.1:7080",
    )
    marked = mark_raft_state(settings.data_dir, identity)
    assert marked.has_raft_state
    assert read_identity(settings.data_dir) == marked
    assert mark_raft_state(settings.data_dir, marked) is marked  # idempotent


def test_a_data_dir_that_held_state_and_lost_its_database_is_refused(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "node", id=3)
    mark_raft_state(settings.data_dir, check_identity(settings))
    with pytest.raises(StateLost) as caught:
        check_identity(settings)  # no db/ at all
    message = str(caught.value)
    assert "node 3 lost its Raft state" in message
    assert "raftkv member remove 3" in message
    assert "new id" in message
    assert "\n" not in message


def test_an_identity_file_of_an_older_version_reads_as_without_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / IDENTITY_FILE).write_text(json.dumps({"node_id": 1, "cluster_id": 1}))
    assert check_identity(ServerSettings(data_dir=data_dir, id=1)).has_raft_state is False


def test_a_start_whose_listen_peer_is_not_the_recorded_peer_address_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    founders = {"initial_cluster": {1: "127.0.0.1:7090", 2: "127.0.0.1:7091"}}
    made = ServerSettings(data_dir=tmp_path / "node", id=1, listen_peer="0.0.0.0:7090", **founders)
    assert check_identity(made).peer_address == "127.0.0.1:7090"
    for listen_peer in ("127.0.0.1:7090", "0.0.0.0:7090", "localhost:7090"):
        check_identity(ServerSettings(data_dir=tmp_path / "node", id=1, listen_peer=listen_peer))
    assert caplog.records == []
    check_identity(ServerSettings(data_dir=tmp_path / "node", id=1))  # default 127.0.0.1:7080
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    message = record.getMessage()
    assert "reach it at 127.0.0.1:7090" in message and "--listen-peer 127.0.0.1:7090" in message


def test_another_cluster_id_says_which_to_start_with(tmp_path: Path) -> None:
    check_identity(ServerSettings(data_dir=tmp_path / "node", id=1, cluster_id=77))
    with pytest.raises(SettingsInvalid, match="start it with --cluster-id 77, or with no"):
        check_identity(ServerSettings(data_dir=tmp_path / "node", id=1, cluster_id=78))


def test_no_cluster_id_given_keeps_the_data_dirs_own(tmp_path: Path) -> None:
    """A restored cluster's members have a new id in member.json: started without
    --cluster-id, as a new cluster's are, they keep it."""
    check_identity(ServerSettings(data_dir=tmp_path / "node", id=1, cluster_id=77))
    assert check_identity(ServerSettings(data_dir=tmp_path / "node", id=1)).cluster_id == 77


def test_a_new_clusters_id_is_derived_from_its_token_and_founders(tmp_path: Path) -> None:
    """Every founder of a cluster derives the same id; another set of founders or another
    token gives another, so members of different clusters refuse each other."""
    founders = {1: "10.0.0.1:7080", 2: "10.0.0.2:7080", 3: "10.0.0.3:7080"}
    ids = {
        check_identity(
            ServerSettings(
                data_dir=tmp_path / str(node),
                id=node,
                initial_cluster=founders,
                listen_peer=founders[node].replace("10.0.0." + str(node), "0.0.0.0"),
            )
        ).cluster_id
        for node in founders
    }
    assert ids == {derived_cluster_id("raftkv-cluster", founders)}
    assert 1 <= ids.pop() < 2**63
    others = {
        derived_cluster_id("raftkv-cluster", {**founders, 3: "10.0.0.4:7080"}),
        derived_cluster_id("another-token", founders),
        derived_cluster_id("raftkv-cluster", {1: "10.0.0.1:7080"}),
    }
    assert derived_cluster_id("raftkv-cluster", founders) not in others and len(others) == 3
    # Given explicitly, the id is the one given.
    given = ServerSettings(data_dir=tmp_path / "given", cluster_id=42)
    assert check_identity(given).cluster_id == 42


def test_a_joining_node_without_the_clusters_id_is_refused_before_writing(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "node", id=4, join="http://127.0.0.1:8080")
    with pytest.raises(SettingsInvalid, match="a joining node needs the cluster's id"):
        check_identity(settings)
    assert not (tmp_path / "node" / IDENTITY_FILE).exists()
