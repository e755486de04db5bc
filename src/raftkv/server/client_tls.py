"""TLS on the client port: the HTTP API (and etcd's gRPC API) served over TLS with
`cert_file` and `key_file`, and, with `client_ca_file`, mutual TLS (every client presents a
certificate signed by that CA, or the handshake fails). TLS 1.2 at least.

Reloading: certificates expire and are renewed while the node runs. `ClientTls.reload()`
reads the three files again and, if they make a usable context, serves every later
handshake with it; connections already open keep theirs. It runs on SIGHUP and whenever
a file's modification time or size changes (checked every `watch_interval_s` by `watch()`).
A reload that fails (a half-written file, a key that does not match) is logged in one line
and changes nothing: the node keeps serving with what it had, and tries again at the next
change. The swap works through the listening context's SNI callback, which OpenSSL calls
at every handshake (the listener's own context cannot be replaced once the socket serves):
the callback hands the handshake to the current context. etcd's gRPC port reloads through
gRPC's own dynamic credentials, which ask `pem()` at every handshake (raftkv.etcd.server).

Every setting is checked before the node starts (`check_files`), so a node never starts
with TLS files it cannot use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from raftkv.server.settings import ServerSettings

__all__ = ["ClientTls", "TlsFiles", "TlsFilesInvalid", "check_files", "tls_files_of"]

logger = logging.getLogger("raftkv.server.tls")


class TlsFilesInvalid(Exception):
    """A TLS file cannot be read or used; the message names the file and why, `part` which
    of them: "cert_file", "key_file", "client_ca_file", or "cert_and_key" (the pair does
    not match, or is not PEM)."""

    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The client port's TLS files: this node's certificate (PEM, chain allowed) and its
    unencrypted private key; `client_ca_file`: the CA clients' certificates must be signed
    by (None: no client certificates asked for)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        return tuple(path for path in (self.cert_file, self.key_file, self.client_ca_file) if path)


def _read(path: Path, part: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsFilesInvalid(f"cannot read {path}: {error.strerror or error}", part) from error


def _reason(error: Exception) -> str:
    """OpenSSL's reason for `error` in words ("key values mismatch"), else its text."""
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).lower().replace("_", " ")
    return str(error)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context from `files`, or TlsFilesInvalid saying which file is wrong."""
    # ssl's own errors for a missing file do not name it.
    _read(files.cert_file, "cert_file")
    _read(files.key_file, "key_file")
    if files.client_ca_file is not None:
        _read(files.client_ca_file, "client_ca_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # No password: an encrypted key cannot be served unattended, and OpenSSL must
        # never prompt on the terminal.
        context.load_cert_chain(files.cert_file, files.key_file, password=lambda: b"")
    except ssl.SSLError as error:
        raise TlsFilesInvalid(
            f"{files.cert_file} and {files.key_file} are not a PEM certificate and its own "
            f"unencrypted private key ({_reason(error)})",
            "cert_and_key",
        ) from error
    if files.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca_file)
        except (ssl.SSLError, ValueError) as error:
            raise TlsFilesInvalid(
                f"{files.client_ca_file} holds no PEM CA certificate ({_reason(error)})",
                "client_ca_file",
            ) from error
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_files_of(settings: ServerSettings) -> TlsFiles | None:
    """The client port's TLS files as `settings` give them (None: no TLS)."""
    if settings.cert_file is None or settings.key_file is None:
        return None
    return TlsFiles(settings.cert_file, settings.key_file, settings.client_ca_file)


def check_files(files: TlsFiles) -> None:
    """TlsFilesInvalid if `files` do not make a server context (a check before start)."""
    server_context(files)


class ClientTls:
    """The client port's TLS, reloadable (see the module docstring). `listening_context` is
    the one given to the listener; `current` serves each new handshake."""

    def __init__(self, files: TlsFiles, *, watch_interval_s: float = 5.0) -> None:
        self.files = files
        self.watch_interval_s = watch_interval_s
        self.current = server_context(files)
        self._stamps = self._file_stamps()
        # The PEM bytes etcd's gRPC port serves, read with the context they match.
        self._pem = self._read_pem()
        # Reloads that took / failed since start (metrics and tests).
        self.reloads = 0
        self.failed_reloads = 0
        # The first context also listens: its SNI callback hands each handshake to the
        # current one (itself until a reload).
        self.listening_context = self.current
        self.listening_context.sni_callback = self._hand_over

    def _hand_over(self, connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        # Called by OpenSSL at the start of every handshake: serve it with the current one.
        connection.context = self.current

    def reload(self) -> bool:
        """Read the files again; serve later handshakes with them if they are usable.
        Whether it took (a failure is logged in one line and changes nothing)."""
        try:
            context = server_context(self.files)
            pem = self._read_pem()
        except TlsFilesInvalid as error:
            self.failed_reloads += 1
            logger.error("client TLS not reloaded, still serving the previous files: %s", error)
            return False
        self.current, self._pem = context, pem
        self.reloads += 1
        logger.info("client TLS reloaded from %s", self.files.cert_file)
        return True

    async def watch(self) -> None:
        """Reload whenever a file's modification time or size changes (run as a task)."""
        while True:
            await asyncio.sleep(self.watch_interval_s)
            stamps = self._file_stamps()
            if stamps != self._stamps:
                self._stamps = stamps
                self.reload()

    def _file_stamps(self) -> tuple[tuple[int, int] | None, ...]:
        stamps: list[tuple[int, int] | None] = []
        for path in self.files.paths():
            try:
                status = os.stat(path)
                stamps.append((status.st_mtime_ns, status.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _read_pem(self) -> tuple[bytes, bytes, bytes | None]:
        files = self.files
        ca = None if files.client_ca_file is None else _read(files.client_ca_file, "client_ca_file")
        return _read(files.cert_file, "cert_file"), _read(files.key_file, "key_file"), ca

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """The files as last loaded, as PEM (certificate, key, client CA or None) for etcd's
        gRPC port (raftkv.etcd.server): the same tuple until a reload replaces it."""
        return self._pem
