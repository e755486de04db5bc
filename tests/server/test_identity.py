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
    mark_raft_state,
    read_identity,
)
from raftkv.server.settings import ServerSettings, SettingsInvalid


def test_a_new_data_dir_has_no_raft_state_until_marked(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "node", id=1)
    identity = check_identity(settings)
    assert identity == Identity(
        1, cluster_id=1, has_raft_state=False, peer_address="127.0.0.1:7080"
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
