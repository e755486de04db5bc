"""TLS on the client port (`raftkv.server.client_tls`): real handshakes on 127.0.0.1 against
a listener using `ClientTls.listening_context`: client certificates required with
client_ca_file, renewed files served after a reload without a restart, a failed reload
keeping the old files, the file watcher, and the settings' one-line errors."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from raftkv.server.client_tls import ClientTls, TlsFiles, TlsFilesInvalid, check_files
from raftkv.server.preflight import check_client_tls
from raftkv.server.settings import ServerSettings, SettingsInvalid
from raftkv.testing.certificates import CertificateAuthority
from raftkv.testing.certificates import TlsFiles as IssuedFiles
from raftkv.testing.local_cluster import run_scenario


def files_of(issued: IssuedFiles, *, client_ca: bool = True) -> TlsFiles:
    return TlsFiles(issued.cert_file, issued.key_file, issued.ca_file if client_ca else None)


async def served_subject(port: int, context: ssl.SSLContext) -> str:
    """The common name of the certificate the server at `port` shows; raises what the
    handshake raised (the server's refusal of a client certificate shows at the first
    read with TLS 1.3)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        writer.write(b"ping")
        await writer.drain()
        assert await reader.readexactly(4) == b"pong"
        certificate = writer.get_extra_info("peercert")
        subject = dict(item for rdn in certificate["subject"] for item in rdn)
        return str(subject["commonName"])
    finally:
        writer.close()


async def serving(tls: ClientTls) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await reader.readexactly(4) == b"ping":
                writer.write(b"pong")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls.listening_context)


def test_client_certificates_are_required_and_renewed_files_are_served_after_a_reload(
    tmp_path: Path,
) -> None:
    authority = CertificateAuthority(tmp_path, "cluster")
    node = authority.issue("node-a")
    client = authority.issue("client")
    stranger = CertificateAuthority(tmp_path, "stranger").issue("client")

    async def scenario() -> None:
        tls = ClientTls(files_of(node))
        server = await serving(tls)
        port = server.sockets[0].getsockname()[1]
        try:
            assert await served_subject(port, client.client_context()) == "node-a"
            no_certificate = ssl.create_default_context(cafile=node.ca_file)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await served_subject(port, no_certificate)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await served_subject(port, stranger.client_context(trusting=node.ca_file))

            # Renewed: the same paths hold a new certificate; served once reloaded.
            renewed = authority.issue("node-b")
            node.cert_file.write_bytes(renewed.cert_file.read_bytes())
            node.key_file.write_bytes(renewed.key_file.read_bytes())
            assert await served_subject(port, client.client_context()) == "node-a"
            assert tls.reload()
            assert await served_subject(port, client.client_context()) == "node-b"

            # A half-written file: the reload fails, the node keeps serving what it had.
            node.cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage")
            assert not tls.reload()
            assert (tls.reloads, tls.failed_reloads) == (1, 1)
            assert await served_subject(port, client.client_context()) == "node-b"
        finally:
            server.close()
            await server.wait_closed()

    run_scenario(scenario)


def test_the_watcher_reloads_when_a_file_changes(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path, "cluster")
    node = authority.issue("node-a")

    async def scenario() -> None:
        tls = ClientTls(files_of(node, client_ca=False), watch_interval_s=0.05)
        server = await serving(tls)
        port = server.sockets[0].getsockname()[1]
        watcher = asyncio.create_task(tls.watch())
        try:
            renewed = authority.issue("node-b")
            node.key_file.write_bytes(renewed.key_file.read_bytes())
            node.cert_file.write_bytes(renewed.cert_file.read_bytes())
            async with asyncio.timeout(10):
                while tls.reloads == 0:
                    await asyncio.sleep(0.05)
            # Without client_ca_file no client certificate is asked for.
            plain = ssl.create_default_context(cafile=node.ca_file)
            assert await served_subject(port, plain) == "node-b"
        finally:
            watcher.cancel()
            server.close()
            await server.wait_closed()

    run_scenario(scenario)


def test_unusable_files_are_refused_before_start_in_one_line(tmp_path: Path) -> None:
    node = CertificateAuthority(tmp_path, "cluster").issue("node")
    other = CertificateAuthority(tmp_path, "other").issue("node")
    with pytest.raises(TlsFilesInvalid, match=r"cannot read .*missing\.pem"):
        check_files(TlsFiles(tmp_path / "missing.pem", node.key_file))
    with pytest.raises(TlsFilesInvalid, match="not a PEM certificate and its own"):
        check_files(TlsFiles(node.cert_file, other.key_file))
    with pytest.raises(TlsFilesInvalid, match="holds no PEM CA certificate"):
        check_files(TlsFiles(node.cert_file, node.key_file, node.key_file))
    settings = ServerSettings(cert_file=node.cert_file, key_file=other.key_file)
    with pytest.raises(SettingsInvalid, match=r"^settings cert_file and key_file: .*mismatch"):
        check_client_tls(settings)
    missing_ca = ServerSettings(
        cert_file=node.cert_file, key_file=node.key_file, client_ca_file=tmp_path / "nope.pem"
    )
    with pytest.raises(SettingsInvalid, match=r"^setting client_ca_file: cannot read"):
        check_client_tls(missing_ca)
    with pytest.raises(SettingsInvalid, match="cert_file and key_file: give both or neither"):
        ServerSettings(cert_file=node.cert_file)
    with pytest.raises(SettingsInvalid, match="client_ca_file: needs cert_file"):
        ServerSettings(client_ca_file=node.ca_file)


def test_tls_makes_the_advertised_urls_https() -> None:
    plain = ServerSettings(listen_client="127.0.0.1:8080", listen_client_grpc="127.0.0.1:2379")
    assert (plain.client_url, plain.etcd_url) == (
        "http://127.0.0.1:8080",
        "http://127.0.0.1:2379",
    )
    secure = ServerSettings(
        listen_client="0.0.0.0:8443",
        listen_client_grpc="127.0.0.1:2379",
        cert_file=Path("node.pem"),
        key_file=Path("node-key.pem"),
    )
    assert (secure.client_url, secure.etcd_url) == (
        "https://127.0.0.1:8443",
        "https://127.0.0.1:2379",
    )
