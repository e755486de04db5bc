"""`ServerSettings` loading (flags, RAFTKV_* environment, TOML file, defaults) and the data
dir identity check of `raftkv serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.server.identity import IDENTITY_FILE, check_identity
from raftkv.server.settings import (
    ServerSettings,
    SettingsInvalid,
    load_settings,
    parse_cluster,
    render_settings,
)


def test_defaults_run_one_node_on_8080_with_data_in_data() -> None:
    settings = load_settings({}, environ={})
    assert settings.id == 1
    assert settings.listen_client == "127.0.0.1:8080"
    assert settings.listen_peer == "127.0.0.1:7080"
    assert settings.data_dir == Path("data")
    assert settings.founders == {1: "127.0.0.1:7080"}
    assert settings.client_url == "http://127.0.0.1:8080"


def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path: Path) -> None:
    config = tmp_path / "raftkv.toml"
    config.write_text(
        'listen_client = "127.0.0.1:1001"\nlog_level = "debug"\nid = 3\n'
        'initial_cluster = "3=127.0.0.1:7003"\n'
    )
    environ = {"RAFTKV_LISTEN_CLIENT": "127.0.0.1:1002", "RAFTKV_CONFIG": str(config)}
    settings = load_settings({}, environ=environ)
    assert settings.listen_client == "127.0.0.1:1002"  # env over file
    assert settings.log_level == "debug"  # file over default
    assert settings.id == 3
    settings = load_settings({"listen_client": "127.0.0.1:1003"}, environ=environ)
    assert settings.listen_client == "127.0.0.1:1003"  # flag over env


def test_the_test_suites_variables_are_not_settings() -> None:
    environ = {"RAFTKV_TEST_SIM_SEEDS": "0:10", "RAFTKV_TEST_FUZZ_SCALE": "3"}
    assert load_settings({}, environ=environ) == load_settings({}, environ={})


def test_the_initial_cluster_reads_as_text_or_a_toml_table(tmp_path: Path) -> None:
    assert parse_cluster("1=127.0.0.1:7001, 2=[::1]:7002") == {
        1: "127.0.0.1:7001",
        2: "[::1]:7002",
    }
    config = tmp_path / "c.toml"
    config.write_text('[initial_cluster]\n1 = "h1:7001"\n2 = "h2:7002"\n')
    assert load_settings({}, environ={}, config_file=config).initial_cluster == {
        1: "h1:7001",
        2: "h2:7002",
    }


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"id": "zero"}, {}, "setting id (from flag --id): expected an integer"),
        ({"id": "0"}, {}, "setting id: must be a positive integer"),
        ({"listen_client": "8080"}, {}, "setting listen_client (from flag --listen-client)"),
        ({"listen_client": "::1:8080"}, {}, "IPv6 host needs brackets"),
        ({}, {"RAFTKV_ELECTION_TICKS": "x"}, "environment variable RAFTKV_ELECTION_TICKS"),
        ({}, {"RAFTKV_LISTEN_CLEINT": "h:1"}, "unknown setting RAFTKV_LISTEN_CLEINT"),
        ({"initial_cluster": "1=h:1,1=h:2"}, {}, "node 1 is listed twice"),
        ({"initial_cluster": "2=h:1"}, {}, "must list this node (id 1)"),
        ({"initial_cluster": "x=h:1"}, {}, "node ids are positive integers"),
        ({"log_level": "loud"}, {}, "setting log_level"),
        ({"election_ticks": "1"}, {}, "election_ticks: must be greater than heartbeat_ticks"),
        ({"peer_ca_file": "ca.pem"}, {}, "give all three or none"),
        ({"request_timeout_s": "-1"}, {}, "request_timeout_s: must be a positive number"),
        ({}, {"RAFTKV_SNAPSHOT_CACHE_BYTES": "-1"}, "snapshot_cache_bytes: must be >= 0"),
        ({"max_snapshot_chunks_in_flight": "0"}, {}, "max_snapshot_chunks_in_flight: must be"),
        ({"max_snapshot_bytes": "0"}, {}, "max_snapshot_bytes: must be >= 1"),
        ({"snapshot_every_bytes": "-5"}, {}, "snapshot_every_bytes: must be >= 0"),
        ({"watch_no_leader_timeout_s": "-1"}, {}, "watch_no_leader_timeout_s: must be >= 0"),
        ({"max_client_connections": "0"}, {}, "max_client_connections: must be >= 1"),
        ({}, {"RAFTKV_MAX_RESPONSE_BYTES": "0"}, "max_response_bytes: must be >= 1"),
        ({"max_scan_entries": "0"}, {}, "max_scan_entries: must be >= 1"),
        ({"read_threads": "0"}, {}, "read_threads: must be >= 1"),
        ({"http_body_timeout_s": "0"}, {}, "http_body_timeout_s: must be a positive number"),
        ({"http_keepalive_timeout_s": "-1"}, {}, "http_keepalive_timeout_s: must be a positive"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        load_settings(flags, environ=environ)
    assert message in str(caught.value)


def test_bad_config_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsInvalid, match="cannot read the config file"):
        load_settings({}, environ={}, config_file=tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("id = = 1\n")
    with pytest.raises(SettingsInvalid, match="not valid TOML"):
        load_settings({}, environ={}, config_file=broken)
    typo = tmp_path / "typo.toml"
    typo.write_text("listen_clinet = 'h:1'\n")
    with pytest.raises(SettingsInvalid, match=r"unknown setting.*listen_clinet"):
        load_settings({}, environ={}, config_file=typo)
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text("id = true\n")
    with pytest.raises(SettingsInvalid, match=r"setting id .*wrong\.toml.*boolean"):
        load_settings({}, environ={}, config_file=wrong_type)


def test_rendered_settings_read_back_to_the_same_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "id": "2",
            "initial_cluster": "1=h:1,2=h:2",
            "data_dir": "d\\x",
            "request_timeout_s": "2.5",
        },
        environ={},
    )
    path = tmp_path / "shown.toml"
    path.write_text(render_settings(settings))
    assert load_settings({}, environ={}, config_file=path) == settings


def test_the_advertised_url_replaces_a_wildcard_listen_host() -> None:
    assert ServerSettings(listen_client="0.0.0.0:9000").client_url == "http://127.0.0.1:9000"
    assert ServerSettings(advertise_client_url="http://kv1:80").client_url == "http://kv1:80"


def test_a_data_dir_keeps_its_identity(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "node", id=1)
    check_identity(settings)  # a new data dir: written
    check_identity(settings)  # the same node: accepted
    with pytest.raises(SettingsInvalid, match="belongs to node 1 of cluster 1, not node 2"):
        check_identity(ServerSettings(data_dir=tmp_path / "node", id=2, initial_cluster={2: "h:1"}))
    with pytest.raises(SettingsInvalid, match="cluster 1, not 7: start it with --cluster-id 1"):
        check_identity(ServerSettings(data_dir=tmp_path / "node", cluster_id=7))
    (tmp_path / "node" / IDENTITY_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(SettingsInvalid, match="cannot read"):
        check_identity(settings)


def test_a_database_without_identity_is_refused(tmp_path: Path) -> None:
    (tmp_path / "node" / "db").mkdir(parents=True)
    with pytest.raises(SettingsInvalid, match=r"holds a database but no member\.json"):
        check_identity(ServerSettings(data_dir=tmp_path / "node"))
