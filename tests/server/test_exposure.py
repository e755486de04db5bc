"""What a node exposes unprotected (`raftkv.server.exposure`): a plaintext peer port off
loopback is refused before start unless allow_insecure_peers; a client port off loopback
without TLS or client certificates is said at start and listed by /v1/status."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from server_helpers import started

from raftkv.api.cluster import StatusAnswer
from raftkv.server.app import HttpSettings
from raftkv.server.browser_policy import is_loopback_host
from raftkv.server.exposure import ClientWarning, client_warnings, peer_refusal
from raftkv.server.preflight import check_before_start
from raftkv.server.settings import ServerSettings, SettingsInvalid
from raftkv.testing.http_cluster import TEST_AUTH
from raftkv.testing.local_cluster import run_scenario
from raftkv.testing.processes import free_port

TLS = {"cert_file": Path("node.pem"), "key_file": Path("node-key.pem")}


def test_only_loopback_hosts_are_this_machines_alone() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "localhost"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.1", "kv.internal", "192.168.1.2"):
        assert not is_loopback_host(host), host


def test_a_plaintext_peer_port_off_loopback_is_refused_unless_chosen() -> None:
    assert peer_refusal(ServerSettings()) is None  # 127.0.0.1
    exposed = ServerSettings(listen_peer="0.0.0.0:7080")
    refusal = peer_refusal(exposed)
    assert refusal is not None and refusal.startswith("setting listen_peer: 0.0.0.0:7080 is")
    with pytest.raises(SettingsInvalid, match="raftkv certs create makes them"):
        check_before_start(exposed)
    assert (
        peer_refusal(ServerSettings(listen_peer="10.0.0.1:7080", allow_insecure_peers=True)) is None
    )
    with_tls = ServerSettings(
        listen_peer="10.0.0.1:7080",
        peer_ca_file=Path("ca.pem"),
        peer_cert_file=Path("node.pem"),
        peer_key_file=Path("node-key.pem"),
    )
    assert peer_refusal(with_tls) is None


def test_a_client_port_off_loopback_is_warned_about_for_what_it_lacks() -> None:
    assert client_warnings(ServerSettings()) == []
    plain = client_warnings(ServerSettings(listen_client=f"0.0.0.0:{free_port()}"))
    assert len(plain) == 2
    assert "reachable from the network without TLS: keys, values" in plain[0].text
    assert not plain[0].while_auth_disabled
    assert "without client certificates and with auth disabled: anyone" in plain[1].text
    assert plain[1].while_auth_disabled
    tls_only = client_warnings(
        ServerSettings(listen_client="10.0.0.1:8443", listen_client_grpc="10.0.0.1:2379", **TLS)
    )
    assert len(tls_only) == 2 and all("without client certificates" in w.text for w in tls_only)
    assert {w.text.split(" ")[0] for w in tls_only} == {"listen_client", "listen_client_grpc"}
    mutual = ServerSettings(listen_client="10.0.0.1:8443", client_ca_file=Path("ca.pem"), **TLS)
    assert client_warnings(mutual) == []


def test_status_lists_the_warnings_and_leaves_them_out_when_there_is_none() -> None:
    warning = "listen_client 0.0.0.0:8080 is reachable from the network without TLS"
    open_door = "listen_client 0.0.0.0:8080 is reachable ... with auth disabled"
    warnings = (ClientWarning(warning), ClientWarning(open_door, while_auth_disabled=True))

    async def scenario() -> None:
        async with started(HttpSettings(security_warnings=warnings, auth=TEST_AUTH)) as api:
            status, body = await api.call(1, "GET", "/v1/status")
            assert status == 200
            assert msgspec.convert(body, StatusAnswer).warnings == [warning, open_door]
            for method, path, json in (
                ("POST", "/v1/auth/users", {"name": "root", "password": "pw"}),
                ("POST", "/v1/auth/users/root/roles", {"role": "root"}),
                ("POST", "/v1/auth/enable", None),
            ):
                assert (await api.call(1, method, path, json=json))[0] == 200
            # With auth enabled the open door is closed; the clear text is not.
            status, body = await api.call(1, "GET", "/v1/status")
            assert msgspec.convert(body, StatusAnswer).warnings == [warning]
        async with started() as api:
            status, body = await api.call(1, "GET", "/v1/status")
            assert status == 200 and "warnings" not in body

    run_scenario(scenario)
