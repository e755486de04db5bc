"""A cluster's certificates (`raftkv.server.certificates`): node certificates from one CA
complete a mutual TLS handshake under Python's strict verification; names, usages and
validity are as documented; keys are 0600; nothing is replaced without `force`; every input
out of bounds is refused before anything is written."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftkv.server.certificates import (
    CLOCK_SKEW,
    MAX_HOSTS,
    CertificateError,
    ClusterDirectory,
    add_node,
    create_cluster,
    ensure_cluster,
)

NOW = datetime.datetime(2030, 6, 1, tzinfo=datetime.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(certificate: x509.Certificate) -> str:
    [attribute] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


def contexts(
    layout: ClusterDirectory, server: int, client: int, trusted: Path | None = None
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """As the peer transports make them: both sides verify (strictly, as Python 3.13's
    default context does), the client checks the server's name."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context, node in ((server_context, server), (client_context, client)):
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        context.load_verify_locations(trusted or layout.ca_file)
        files = layout.node(node)
        context.load_cert_chain(files.cert_file, files.key_file)
    return server_context, client_context


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext, name: str) -> str:
    """The common name of the client's certificate as the server saw it, after a TLS
    handshake on 127.0.0.1 in which the client dialled `name`."""

    async def scenario() -> str:
        seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peercert")
            subject = dict(pair[0] for pair in peer["subject"])
            seen.set_result(subject["commonName"])
            writer.write(b"ok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_context, server_hostname=name
                )
                assert await reader.read() == b"ok"
                writer.close()
                return await seen
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(scenario())


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "kv1.example", "10.1.2.3"])
def test_two_node_certificates_of_one_ca_complete_a_mutual_handshake(
    tmp_path: Path, name: str
) -> None:
    layout = create_cluster(tmp_path, [1, 2], hosts=["kv1.example", "10.1.2.3"])
    server_context, client_context = contexts(layout, server=1, client=2)
    assert handshake(server_context, client_context, name) == "node-2"


def test_a_node_certificate_of_another_ca_is_refused(tmp_path: Path) -> None:
    ours = create_cluster(tmp_path / "ours", [1])
    theirs = create_cluster(tmp_path / "theirs", [2])
    server_context, _ = contexts(theirs, server=2, client=2, trusted=ours.ca_file)
    _, client_context = contexts(ours, server=1, client=1)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server_context, client_context, "127.0.0.1")


def test_node_certificates_name_the_node_and_serve_and_dial(tmp_path: Path) -> None:
    layout = create_cluster(tmp_path, [7], hosts=["KV7.example.", "::1", "127.0.0.1"], now=NOW)
    certificate = load(layout.node(7).cert_file)
    assert common_name(certificate) == "node-7"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "kv7.example"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.not_valid_before_utc == NOW - CLOCK_SKEW
    assert certificate.not_valid_after_utc == NOW + datetime.timedelta(days=365)
    certificate.verify_directly_issued_by(load(layout.ca_file))


def test_client_certificates_name_the_user_and_only_dial(tmp_path: Path) -> None:
    layout = create_cluster(tmp_path, [1], clients=["alice"], days=30, now=NOW)
    certificate = load(layout.client("alice").cert_file)
    assert common_name(certificate) == "alice"
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certificate.not_valid_after_utc == NOW + datetime.timedelta(days=30)
    certificate.verify_directly_issued_by(load(layout.ca_file))


def test_the_ca_lasts_ten_years_and_no_certificate_outlives_it(tmp_path: Path) -> None:
    layout = create_cluster(tmp_path, [1], now=NOW)
    authority = load(layout.ca_file)
    assert authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert authority.not_valid_after_utc == NOW + datetime.timedelta(days=3650)
    later = NOW + datetime.timedelta(days=3600)
    files = add_node(tmp_path, 2, days=365, now=later)
    assert load(files.cert_file).not_valid_after_utc == authority.not_valid_after_utc
    with pytest.raises(CertificateError, match="the CA expired"):
        add_node(tmp_path, 3, now=NOW + datetime.timedelta(days=3651))


def test_private_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    layout = create_cluster(tmp_path / "certs", [1, 2], clients=["alice"])
    keys = sorted(path.name for path in layout.path.iterdir() if path.name.endswith("-key.pem"))
    assert keys == ["ca-key.pem", "client-alice-key.pem", "node-1-key.pem", "node-2-key.pem"]
    for path in layout.path.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.name.endswith("-key.pem") else 0o644), path.name
    # Written aside then linked into place: no temporary file is left behind.
    assert len(list(layout.path.iterdir())) == 8


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    create_cluster(tmp_path, [1])
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(CertificateError) as refused:
        create_cluster(tmp_path, [1, 2])
    assert str(refused.value) == (
        f"{tmp_path} already holds ca.pem, ca-key.pem, node-1.pem, node-1-key.pem: "
        "not replaced (--force replaces them)"
    )
    # Refused as a whole: node 2's files were not written either.
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    with pytest.raises(CertificateError, match=r"node-1\.pem"):
        add_node(tmp_path, 1)
    create_cluster(tmp_path, [1, 2], force=True)
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert set(after) == {*before, "node-2.pem", "node-2-key.pem"}
    assert after["ca.pem"] != before["ca.pem"]
    assert stat.S_IMODE((tmp_path / "node-1-key.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"nodes": []}, "give at least one node id"),
        ({"nodes": [0]}, "node id 0 is not in 1.."),
        ({"nodes": [2**64]}, "node id 18446744073709551616 is not in 1.."),
        ({"nodes": [1, 2, 1]}, "node id 1 given twice"),
        ({"nodes": list(range(1, 1002))}, "give at most 1000 nodes"),
        ({"hosts": ["a b"]}, "host 'a b' is neither an IP address nor a DNS name"),
        ({"hosts": ["-a.example"]}, "is neither an IP address nor a DNS name"),
        ({"hosts": [".".join(["a" * 63] * 4)]}, "neither"),
        ({"hosts": ["h"] * (MAX_HOSTS + 1)}, f"{MAX_HOSTS + 1} hosts: give at most {MAX_HOSTS}"),
        ({"clients": ["../alice"]}, "client name '../alice': give 1..64 letters"),
        ({"clients": ["a" * 65]}, "give 1..64 letters"),
        ({"clients": ["bob", "bob"]}, "client name bob given twice"),
        ({"days": 0}, "validity of 0 days is not in 1..36500"),
        ({"ca_days": 36501}, "validity of 36501 days is not in 1..36500"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    request: dict[str, object] = {"nodes": [1], **arguments}
    nodes = request.pop("nodes")
    with pytest.raises(CertificateError, match=re.escape(message)):
        create_cluster(tmp_path / "certs", nodes, **request)  # type: ignore[arg-type]
    assert not (tmp_path / "certs").exists()


def test_add_node_issues_from_the_ca_in_the_directory(tmp_path: Path) -> None:
    layout = create_cluster(tmp_path, [1, 2, 3])
    files = add_node(tmp_path, 4, hosts=["kv4.example"])
    assert files == layout.node(4)
    certificate = load(files.cert_file)
    certificate.verify_directly_issued_by(load(layout.ca_file))
    assert common_name(certificate) == "node-4"
    server_context, client_context = contexts(layout, server=4, client=1)
    assert handshake(server_context, client_context, "kv4.example") == "node-1"


def test_add_node_refuses_a_ca_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"cannot read the CA in .*: No such file"):
        add_node(tmp_path, 4)
    layout = create_cluster(tmp_path / "one", [1])
    other = create_cluster(tmp_path / "other", [1])
    layout.ca_key_file.write_bytes(other.ca_key_file.read_bytes())
    with pytest.raises(CertificateError, match=r"ca-key\.pem is not the key of .*ca\.pem"):
        add_node(layout.path, 4)
    layout.ca_key_file.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CertificateError, match=r"ca-key\.pem is not an ECDSA key"):
        add_node(layout.path, 4)
    layout.ca_file.write_bytes(layout.node(1).cert_file.read_bytes())
    with pytest.raises(CertificateError, match=r"ca\.pem is not a CA certificate"):
        add_node(layout.path, 4)
    layout.ca_file.write_text("not a certificate")
    with pytest.raises(CertificateError, match="is not a PEM certificate"):
        add_node(layout.path, 4)
    assert not layout.node(4).cert_file.exists()


def test_ensure_cluster_keeps_usable_certificates_and_replaces_the_rest(tmp_path: Path) -> None:
    layout = ensure_cluster(tmp_path, [1, 2], now=NOW)
    first = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert ensure_cluster(tmp_path, [1, 2], now=NOW) == layout
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == first
    # One more node: issued from the same CA, the others kept.
    ensure_cluster(tmp_path, [1, 2, 3], now=NOW)
    grown = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert {name: grown[name] for name in first} == first
    load(layout.node(3).cert_file).verify_directly_issued_by(load(layout.ca_file))
    # A damaged node certificate is issued again; an expired CA means a new CA.
    layout.node(2).key_file.write_text("garbage")
    ensure_cluster(tmp_path, [1, 2, 3], now=NOW)
    assert layout.node(2).key_file.read_bytes() != b"garbage"
    assert layout.ca_file.read_bytes() == first["ca.pem"]
    ensure_cluster(tmp_path, [1, 2, 3], now=NOW + datetime.timedelta(days=4000))
    assert layout.ca_file.read_bytes() != first["ca.pem"]
