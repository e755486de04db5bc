"""`raftkv dev --tls` gives each child the peer TLS flags naming the files it made in
DATA_DIR/certs, reuses them on the next run, and says in one line why when it cannot make
them."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.server.dev import DevCluster, prepare_certificates


def test_each_node_is_given_its_own_certificate_and_the_ca(tmp_path: Path) -> None:
    cluster = DevCluster(nodes=2, data_dir=tmp_path, tls=True)
    assert prepare_certificates(cluster)
    command = cluster.command(2)
    flags = command[command.index("--peer-ca-file") :]
    assert flags == [
        *("--peer-ca-file", f"{tmp_path}/certs/ca.pem"),
        *("--peer-cert-file", f"{tmp_path}/certs/node-2.pem"),
        *("--peer-key-file", f"{tmp_path}/certs/node-2-key.pem"),
        *("--cert-file", f"{tmp_path}/certs/node-2.pem"),
        *("--key-file", f"{tmp_path}/certs/node-2-key.pem"),
    ]
    assert all(Path(flag).exists() for flag in flags[1::2])
    assert cluster.endpoints()[0].startswith("https://")
    assert cluster.ca_file() == tmp_path / "certs" / "ca.pem"
    plain = DevCluster(nodes=2, data_dir=tmp_path)
    assert "--peer-ca-file" not in plain.command(2) and "--cert-file" not in plain.command(2)
    assert plain.endpoints()[0].startswith("http://") and plain.ca_file() is None


def test_a_second_run_reuses_the_certificates(tmp_path: Path) -> None:
    cluster = DevCluster(nodes=3, data_dir=tmp_path, tls=True)
    assert prepare_certificates(cluster)
    first = {path.name: path.read_bytes() for path in (tmp_path / "certs").iterdir()}
    assert prepare_certificates(cluster)
    assert {path.name: path.read_bytes() for path in (tmp_path / "certs").iterdir()} == first


def test_certificates_that_cannot_be_made_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs").write_text("a file where the directory goes")
    assert not prepare_certificates(DevCluster(data_dir=tmp_path, tls=True))
    err = capsys.readouterr().err
    assert err.startswith("raftkv dev: cannot write ") and err.count("\n") == 1, err
