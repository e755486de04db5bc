"""`raftkv certs create|add-node`: the files, the settings printed for each node, and bad
input refused with one line and exit 2 (nothing written)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cli_helpers import run_cli
from cryptography import x509

from raftkv.cli import EXIT_OK, EXIT_USAGE


def test_create_writes_the_files_and_prints_each_nodes_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "certs"
    ran = run_cli(
        capsys,
        monkeypatch,
        *("certs", "create", "--dir", str(directory), "--nodes", "1,2,3"),
        *("--host", "kv.example", "--client", "alice", "--days", "30"),
    )
    assert (ran.code, ran.err) == (EXIT_OK, "")
    assert sorted(path.name for path in directory.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "client-alice-key.pem",
        "client-alice.pem",
        *(f"node-{node}{suffix}.pem" for node in (1, 2, 3) for suffix in ("-key", "")),
    ]
    assert stat.S_IMODE((directory / "ca-key.pem").stat().st_mode) == 0o600
    ca = f"{directory}/ca.pem"
    node = f"{directory}/node-N"
    assert f"--peer-ca-file {ca} --peer-cert-file {node}.pem --peer-key-file {node}-key.pem" in (
        ran.out
    )
    assert f"--cert-file {node}.pem --key-file {node}-key.pem" in ran.out
    assert f"--client-ca-file {ca}" in ran.out
    assert f"raftkv --cacert {ca}" in ran.out
    assert f"--cert {directory}/client-alice.pem --key {directory}/client-alice-key.pem" in ran.out
    assert f"curl --cacert {ca} https://" in ran.out
    assert len(ran.out.splitlines()) <= 8


def test_add_node_issues_one_more_from_the_same_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    create = ("certs", "create", "--dir", str(tmp_path), "--nodes", "1")
    assert run_cli(capsys, monkeypatch, *create).code == EXIT_OK
    ran = run_cli(capsys, monkeypatch, "certs", "add-node", "--dir", str(tmp_path), "--node", "4")
    assert (ran.code, ran.err) == (EXIT_OK, "")
    assert f"--peer-cert-file {tmp_path}/node-4.pem --peer-key-file {tmp_path}/node-4-key.pem" in (
        ran.out
    )
    authority = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    certificate = x509.load_pem_x509_certificate((tmp_path / "node-4.pem").read_bytes())
    certificate.verify_directly_issued_by(authority)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["create", "--nodes", "1,x"], "raftkv certs: --nodes '1,x': give ids as 1,2,3"),
        (["create", "--nodes", "0"], "raftkv certs: node id 0 is not in 1..18446744073709551615"),
        (["create", "--nodes", ",".join(["1"] * 20_000)], "longer than 25000 characters"),
        (["create", "--nodes", "1", "--host", "a/b"], "host 'a/b' is neither an IP address"),
        (["create", "--nodes", "1", "--client", "a b"], "client name 'a b': give 1..64"),
        (["create", "--nodes", "1", "--days", "-1"], "validity of -1 days is not in 1..36500"),
        (["create", "--nodes", "1", "--days", "x"], "raftkv: usage: argument --days: invalid"),
        (["create"], "raftkv: usage: the following arguments are required: --dir, --nodes"),
        (["add-node", "--node", "2"], "raftkv certs: cannot read the CA in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    error: str,
) -> None:
    directory = tmp_path / "certs"
    if arguments != ["create"]:
        arguments = [*arguments, "--dir", str(directory)]
    try:
        ran = run_cli(capsys, monkeypatch, "certs", *arguments)
    except SystemExit as exit:  # argparse's errors exit from inside the parser
        ran_code, err = exit.code, capsys.readouterr().err
    else:
        ran_code, err = ran.code, ran.err
    assert ran_code == EXIT_USAGE
    assert err.count("\n") == 1 and error in err, err
    assert not directory.exists()


def test_existing_files_are_refused_then_replaced_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    create = ("certs", "create", "--dir", str(tmp_path), "--nodes", "1")
    assert run_cli(capsys, monkeypatch, *create).code == EXIT_OK
    before = (tmp_path / "ca.pem").read_bytes()
    ran = run_cli(capsys, monkeypatch, *create)
    assert ran.code == EXIT_USAGE
    assert ran.err == (
        f"raftkv certs: {tmp_path} already holds ca.pem, ca-key.pem, node-1.pem, "
        "node-1-key.pem: not replaced (--force replaces them)\n"
    )
    assert (tmp_path / "ca.pem").read_bytes() == before
    assert run_cli(capsys, monkeypatch, *create, "--force").code == EXIT_OK
    assert (tmp_path / "ca.pem").read_bytes() != before
