"""`raftkv serve` (and `raftkv recover`) that cannot start say so in one line, no traceback
(issue 14, item 8): exit 2 for a setting or a file a setting names, found before the data
dir is created; exit 1 for what this machine refuses (a port in use, a host that does not
resolve, a data dir that cannot be written, a database that is damaged or in use)."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raftkv.raft.storage.rocks import RocksStorage
from raftkv.server.identity import DATABASE_DIR, Identity, write_identity
from raftkv.testing.processes import free_port

EXIT_START_FAILED = 1
EXIT_USAGE = 2


def raftkv(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`raftkv serve` with free ports and data in tmp_path/data, then `flags`."""
    return raftkv(
        "serve",
        *("--listen-client", f"127.0.0.1:{free_port()}"),
        *("--listen-peer", f"127.0.0.1:{free_port()}"),
        *("--data-dir", str(tmp_path / "data")),
        *flags,
        cwd=tmp_path,
    )


def refusal(answer: subprocess.CompletedProcess[str], code: int, prefix: str) -> str:
    """The one error line, checked: exit `code`, no traceback, the last line of stderr."""
    assert answer.returncode == code, answer.stderr
    assert "Traceback" not in answer.stderr, answer.stderr
    last = answer.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prefix}: "), answer.stderr
    return last


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_a_busy_peer_port_is_one_line_and_creates_nothing(tmp_path: Path, held_port: int) -> None:
    line = refusal(
        serve(tmp_path, "--listen-peer", f"127.0.0.1:{held_port}"),
        EXIT_START_FAILED,
        "raftkv serve",
    )
    assert f"setting listen_peer: cannot listen on 127.0.0.1:{held_port}" in line
    assert "stop it or choose another port" in line
    assert not (tmp_path / "data").exists()


def test_a_busy_client_port_is_found_before_the_data_dir_is_created(
    tmp_path: Path, held_port: int
) -> None:
    line = refusal(
        serve(tmp_path, "--listen-client", f"127.0.0.1:{held_port}"),
        EXIT_START_FAILED,
        "raftkv serve",
    )
    assert f"setting listen_client: cannot listen on 127.0.0.1:{held_port}" in line
    assert not (tmp_path / "data").exists()


def test_a_client_host_that_does_not_resolve_names_the_setting(tmp_path: Path) -> None:
    line = refusal(
        serve(tmp_path, "--listen-client", "example.invalid:8080"),
        EXIT_START_FAILED,
        "raftkv serve",
    )
    assert "setting listen_client: cannot resolve the host 'example.invalid'" in line
    assert not (tmp_path / "data").exists()


def write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def write_self_signed(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raftkv test")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def tls_flags(ca: Path, cert: Path, key: Path) -> list[str]:
    return ["--peer-ca-file", str(ca), "--peer-cert-file", str(cert), "--peer-key-file", str(key)]


def test_unusable_peer_tls_files_name_the_setting_and_create_nothing(tmp_path: Path) -> None:
    certificate, key, other_key = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "k2.pem"
    signing_key = write_key(key)
    write_self_signed(certificate, signing_key)
    write_key(other_key)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (tls_flags(tmp_path / "missing.pem", certificate, key), "setting peer_ca_file: cannot"),
        (tls_flags(garbage, certificate, key), "setting peer_ca_file: "),
        (tls_flags(certificate, garbage, key), "settings peer_cert_file and peer_key_file: "),
        (tls_flags(certificate, certificate, other_key), "not a PEM certificate and its own"),
        # Refused, not prompted for on the terminal: gRPC cannot use an encrypted key.
        (tls_flags(certificate, certificate, encrypted), "its own unencrypted private key"),
    ]
    for flags, expected in cases:
        line = refusal(serve(tmp_path, *flags), EXIT_USAGE, "raftkv serve")
        assert expected in line
        assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("setting", ["--id", "--cluster-id"])
def test_an_id_beyond_64_bits_is_a_bad_setting(tmp_path: Path, setting: str) -> None:
    line = refusal(serve(tmp_path, setting, str(2**64)), EXIT_USAGE, "raftkv serve")
    assert "must be a positive integer below 2**64" in line


def test_a_binary_config_file_is_not_valid_toml(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_bytes(b"\xff\xfe\x00binary")
    line = refusal(serve(tmp_path, "--config", str(config)), EXIT_USAGE, "raftkv serve")
    assert f"the config file {config} is not valid TOML" in line


def existing_data_dir(tmp_path: Path) -> Path:
    """tmp_path/data as a node's data dir: its identity and a database."""
    data_dir = tmp_path / "data"
    RocksStorage(data_dir / DATABASE_DIR, create=True).close()
    write_identity(data_dir, Identity(node_id=1, cluster_id=1))
    return data_dir


def test_a_damaged_database_keeps_rocksdbs_line_and_says_what_to_do(tmp_path: Path) -> None:
    database = existing_data_dir(tmp_path) / DATABASE_DIR
    manifests = list(database.glob("MANIFEST-*"))
    assert manifests
    for manifest in manifests:
        manifest.write_bytes(b"\x00garbage" * 32)
    answer = serve(tmp_path)
    line = refusal(answer, EXIT_START_FAILED, "raftkv serve")
    assert "Corruption" in line and "may be corrupted" in line
    assert "restore this member from a backup" in line and "raftkv member remove 1" in line
    assert "node 1 stopped" not in answer.stderr  # it never started


def test_a_data_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    # (Tests run as root, for whom a read-only mode bit does not stop a write: a data dir
    # below a regular file fails the same way a read-only one does.)
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = refusal(
        serve(tmp_path, "--data-dir", str(blocker / "data")), EXIT_START_FAILED, "raftkv serve"
    )
    assert f"data dir {blocker / 'data'}: cannot write" in line
    assert "make it writable by this user or choose another data_dir" in line


UNPRIVILEGED = 65534  # nobody


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run raftkv serve as another user",
)
def test_a_data_dir_its_user_cannot_write_says_whose_it_must_be() -> None:
    """A data dir holding a database, read-only to the user who starts the node: RocksDB
    refuses to open it, and the line says what to change. Run as `nobody` (root writes
    anywhere), in a directory of its own under /tmp (pytest's is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="raftkv-read-only-"))
    try:
        directory.chmod(0o755)
        storage = RocksStorage(directory / "data" / DATABASE_DIR)
        storage.close()
        write_identity(directory / "data", Identity(node_id=1, cluster_id=1))
        for path in [directory / "data", *(directory / "data").rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        answer = subprocess.run(
            [
                "setpriv",
                f"--reuid={UNPRIVILEGED}",
                f"--regid={UNPRIVILEGED}",
                "--clear-groups",
                "--",
                sys.executable,
                "-m",
                "raftkv",
                "serve",
                *("--listen-client", f"127.0.0.1:{free_port()}"),
                *("--listen-peer", f"127.0.0.1:{free_port()}"),
                *("--data-dir", str(directory / "data")),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=directory,
            stdin=subprocess.DEVNULL,
        )
        line = refusal(answer, EXIT_START_FAILED, "raftkv serve")
        assert "Permission denied" in line and "must be writable by the user running" in line
    finally:
        shutil.rmtree(directory)


def test_recover_on_a_running_node_says_to_stop_it_first(tmp_path: Path) -> None:
    data_dir = existing_data_dir(tmp_path)
    # This process holds the database as a running node would (RocksDB's LOCK file).
    storage = RocksStorage(data_dir / DATABASE_DIR, create=False)
    try:
        answer = raftkv("recover", "--force-new-cluster", "--data-dir", str(data_dir), cwd=tmp_path)
    finally:
        storage.close()
    line = refusal(answer, EXIT_START_FAILED, "raftkv recover")
    assert "in use by a running node: stop the node first" in line
    assert "Resource temporarily unavailable" not in line


def test_a_plaintext_peer_port_open_to_the_network_is_refused_unless_chosen(
    tmp_path: Path,
) -> None:
    """Anyone who reaches a plaintext peer port could append entries or change the
    membership: off loopback it needs peer TLS or allow_insecure_peers, and nothing is
    created without it."""
    peer = f"0.0.0.0:{free_port()}"
    line = refusal(serve(tmp_path, "--listen-peer", peer), EXIT_USAGE, "raftkv serve")
    assert f"setting listen_peer: {peer} is reachable from the network" in line
    assert "raftkv certs create" in line and "allow_insecure_peers" in line
    assert not (tmp_path / "data").exists()
