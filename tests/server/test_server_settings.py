"""`ServerSettings` loading (flags, RAFTKV_* environment, TOML file, defaults) and the data
dir identity check of `raftkv serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.kv import space_monitor
from raftkv.server.identity import IDENTITY_FILE, check_identity
from raftkv.server.setting_values import parse_cluster
from raftkv.server.settings import (
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_QUOTA_BYTES,
    ServerSettings,
    SettingsInvalid,
    environment_warnings,
    load_settings,
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
    assert settings.peer_transport == "tcp"
    assert settings.event_loop == "asyncio"


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
    assert environment_warnings(environ) == []


def test_other_raftkv_variables_are_ignored_and_near_misses_warned() -> None:
    environ = {
        "RAFTKV_LOCK_KEY": "jobs/0000000000000001",
        "RAFTKV_LOCK_TOKEN": "7",
        "RAFTKV_ENDPOINTS": "http://127.0.0.1:8080",
        "RAFTKV_SOMETHING_ELSE": "x",
        "RAFTKV_LISTEN_CLEINT": "127.0.0.1:1",
    }
    assert load_settings({}, environ=environ) == load_settings({}, environ={})
    assert environment_warnings(environ) == [
        "ignoring environment variable RAFTKV_LISTEN_CLEINT: not a setting; did you mean "
        "RAFTKV_LISTEN_CLIENT?"
    ]


def test_a_range_error_names_the_file_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("max_key_bytes = 9000\nmax_body_bytes = 5000\nelection_ticks = 3\n")
    with pytest.raises(SettingsInvalid, match=r"setting max_key_bytes \(from .*node\.toml\)"):
        load_settings({}, environ={}, config_file=config)
    # The flag outranks the file: the election timeout is blamed on the flag's setting.
    with pytest.raises(SettingsInvalid, match=r"setting tick_interval_ms \(from flag --tick"):
        load_settings({"tick_interval_ms": "10"}, environ={}, config_file=config)


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
        ({"id": "0"}, {}, "setting id (from flag --id): must be a positive integer"),
        ({"id": str(2**64)}, {}, "setting id (from flag --id): must be a positive integer below"),
        ({}, {"RAFTKV_CLUSTER_ID": str(2**64)}, "setting cluster_id (from environment variable"),
        ({"listen_client": "8080"}, {}, "setting listen_client (from flag --listen-client)"),
        ({"listen_client": "::1:8080"}, {}, "IPv6 host needs brackets"),
        ({}, {"RAFTKV_ELECTION_TICKS": "x"}, "environment variable RAFTKV_ELECTION_TICKS"),
        ({"initial_cluster": "1=h:1,1=h:2"}, {}, "node 1 is listed twice"),
        ({"initial_cluster": "2=h:1"}, {}, "must list this node (id 1)"),
        ({"initial_cluster": "x=h:1"}, {}, "node ids are positive integers"),
        ({"log_level": "loud"}, {}, "setting log_level"),
        ({"election_ticks": "1"}, {}, "election_ticks (from flag --election-ticks): must be gr"),
        ({"heartbeat_ticks": "20"}, {}, "heartbeat_ticks (from flag --heartbeat-ticks): must be l"),
        (
            {"heartbeat_ticks": "20"},
            {"RAFTKV_ELECTION_TICKS": "20"},
            "setting heartbeat_ticks (from flag --heartbeat-ticks)",
        ),
        (
            {"election_ticks": "20"},
            {"RAFTKV_HEARTBEAT_TICKS": "20"},
            "setting election_ticks (from flag --election-ticks)",
        ),
        ({"tick_interval_ms": str(2**63 - 1)}, {}, "tick_interval_ms (from flag --tick-interval"),
        (
            {"tick_interval_ms": "1", "election_ticks": "2"},
            {},
            "election_ticks (from flag --election-ticks): the election timeout tick_interval_ms x "
            "election_ticks (1 x 2 = 2 ms) must be in 100..60000 ms",
        ),
        ({}, {"RAFTKV_TICK_INTERVAL_MS": "5"}, "tick_interval_ms (from environment variable RAFT"),
        ({"max_key_bytes": "5000", "max_body_bytes": "4000"}, {}, "setting max_key_bytes (from"),
        ({"max_body_bytes": "4000"}, {}, "setting max_body_bytes (from flag --max-body-bytes): "),
        ({"max_body_bytes": str(10**29)}, {}, "max_body_bytes (from flag --max-body-bytes): must"),
        ({"peer_ca_file": "ca.pem"}, {}, "give all three or none"),
        (
            {"request_timeout_s": "-1"},
            {},
            "request_timeout_s (from flag --request-timeout-s): must be a positive number",
        ),
        (
            {},
            {"RAFTKV_SNAPSHOT_CACHE_BYTES": "-1"},
            "(from environment variable RAFTKV_SNAPSHOT_CACHE_BYTES): must be >= 0",
        ),
        (
            {"max_snapshot_chunks_in_flight": "0"},
            {},
            "max_snapshot_chunks_in_flight (from flag --max-snapshot-chunks-in-flight): must be",
        ),
        (
            {"max_snapshot_bytes": "0"},
            {},
            "max_snapshot_bytes (from flag --max-snapshot-bytes): must be >= 1",
        ),
        (
            {"snapshot_every_bytes": "-5"},
            {},
            "snapshot_every_bytes (from flag --snapshot-every-bytes): must be >= 0",
        ),
        (
            {"watch_no_leader_timeout_s": "-1"},
            {},
            "watch_no_leader_timeout_s (from flag --watch-no-leader-timeout-s): must be >= 0",
        ),
        (
            {"max_client_connections": "0"},
            {},
            "max_client_connections (from flag --max-client-connections): must be >= 1",
        ),
        (
            {},
            {"RAFTKV_MAX_RESPONSE_BYTES": "0"},
            "(from environment variable RAFTKV_MAX_RESPONSE_BYTES): must be >= 1",
        ),
        (
            {"max_scan_entries": "0"},
            {},
            "max_scan_entries (from flag --max-scan-entries): must be >= 1",
        ),
        ({"read_threads": "0"}, {}, "read_threads (from flag --read-threads): must be >= 1"),
        (
            {},
            {"RAFTKV_PEER_TRANSPORT": "http"},
            "(from environment variable RAFTKV_PEER_TRANSPORT): expected tcp or grpc, got 'http'",
        ),
        (
            {"event_loop": "trio"},
            {},
            "event_loop (from flag --event-loop): expected asyncio or uvloop, got 'trio'",
        ),
        (
            {"http_body_timeout_s": "0"},
            {},
            "http_body_timeout_s (from flag --http-body-timeout-s): must be a positive number",
        ),
        (
            {"http_keepalive_timeout_s": "-1"},
            {},
            "http_keepalive_timeout_s (from flag --http-keepalive-timeout-s): must be a positive",
        ),
        ({"http_workers": "-1"}, {}, "http_workers (from flag --http-workers): must be >= 0"),
        (
            {},
            {"RAFTKV_HTTP_WORKERS": "17"},
            "http_workers (from environment variable RAFTKV_HTTP_WORKERS): must be 0-16",
        ),
        (
            {"http_workers": "1", "cert_file": "c.pem", "key_file": "k.pem"},
            {},
            "http_workers (from flag --http-workers): must be 0-16, and 0 with cert_file (TLS)",
        ),
    ],
)
def test_a_bad_setting_is_refused_naming_it(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        load_settings(flags, environ=environ)
    assert message in str(caught.value)


def test_the_peer_transport_is_tcp_or_grpc_in_any_case() -> None:
    assert load_settings({"peer_transport": "GRPC"}, environ={}).peer_transport == "grpc"
    assert load_settings({}, environ={"RAFTKV_PEER_TRANSPORT": "tcp"}).peer_transport == "tcp"


def test_the_event_loop_is_asyncio_or_uvloop_and_each_makes_its_loop() -> None:
    import asyncio

    import uvloop

    from raftkv.server.event_loops import loop_factory

    assert load_settings({}, environ={"RAFTKV_EVENT_LOOP": "UVloop"}).event_loop == "uvloop"
    for kind, expected in (("uvloop", uvloop.Loop), ("asyncio", asyncio.AbstractEventLoop)):
        loop = loop_factory(load_settings({"event_loop": kind}, environ={}).event_loop)()
        try:
            assert isinstance(loop, expected)
            assert loop.run_until_complete(asyncio.sleep(0, result=kind)) == kind
        finally:
            loop.close()


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
    cluster = check_identity(settings).cluster_id  # a new data dir: written
    check_identity(settings)  # the same node: accepted
    with pytest.raises(
        SettingsInvalid, match=f"belongs to node 1 of cluster {cluster}, not node 2$"
    ):
        check_identity(ServerSettings(data_dir=tmp_path / "node", id=2, initial_cluster={2: "h:1"}))
    with pytest.raises(
        SettingsInvalid, match=f"cluster {cluster}, not 7: start it with --cluster-id {cluster}"
    ):
        check_identity(ServerSettings(data_dir=tmp_path / "node", cluster_id=7))
    (tmp_path / "node" / IDENTITY_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(SettingsInvalid, match="cannot read"):
        check_identity(settings)


def test_a_database_without_identity_is_refused(tmp_path: Path) -> None:
    (tmp_path / "node" / "db").mkdir(parents=True)
    with pytest.raises(SettingsInvalid, match=r"holds a database but no member\.json"):
        check_identity(ServerSettings(data_dir=tmp_path / "node"))


def test_the_metrics_port_is_a_port_of_its_own() -> None:
    assert ServerSettings(listen_metrics="127.0.0.1:9100").listen_metrics == "127.0.0.1:9100"
    with pytest.raises(
        SettingsInvalid, match=r"listen_metrics: 127\.0\.0\.1:8080 is also listen_client"
    ):
        ServerSettings(listen_metrics="127.0.0.1:8080")
    with pytest.raises(SettingsInvalid, match="setting listen_metrics"):
        load_settings({"listen_metrics": "nowhere"})


def test_the_space_defaults_are_the_space_monitors() -> None:
    """raftkv.server.settings keeps its own copy (importing raftkv.kv would load the store
    into every CLI run)."""
    assert DEFAULT_QUOTA_BYTES == space_monitor.DEFAULT_QUOTA_BYTES
    assert DEFAULT_MIN_FREE_BYTES == space_monitor.DEFAULT_MIN_FREE_BYTES
