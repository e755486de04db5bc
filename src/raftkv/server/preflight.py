"""What `raftkv serve` checks before it creates or opens anything, so that a node that
cannot start leaves no data dir behind and says why in one line naming the setting:

- a peer port reachable from the network without peer TLS, unless allow_insecure_peers
  (raftkv.server.exposure): `SettingsInvalid`;
- the peer TLS files (`peer_ca_file`, `peer_cert_file`, `peer_key_file`) and the client
  port's (`cert_file`, `key_file`, `client_ca_file`) can be read, hold PEM certificates,
  and each certificate matches its key, which is not encrypted (gRPC itself reports a bad
  file only as "Failed to bind", after the data dir exists): `SettingsInvalid`, checked
  as raftkv.server.client_tls loads them;
- `listen_client`, `listen_peer`, `listen_client_grpc` and `listen_metrics` resolve and
  can be bound now (a port another process holds, a host this machine does not have):
  `StartFailed`.

Ports are probed, not held: a process that takes one between this check and the real bind
still fails the start, later, with the same kind of line.
"""

from __future__ import annotations

import errno
import socket

from raftkv.raft.listening import probe_listen
from raftkv.server.client_tls import TlsFiles, TlsFilesInvalid, check_files, tls_files_of
from raftkv.server.exposure import peer_refusal
from raftkv.server.setting_values import split_address
from raftkv.server.settings import ServerSettings, SettingsInvalid

__all__ = ["StartFailed", "check_before_start"]


class StartFailed(Exception):
    """`raftkv serve` cannot start on this machine as configured (a port in use, a host
    that does not resolve, a data dir it cannot write, a database it cannot open); the
    message says what and what to do."""


def check_before_start(settings: ServerSettings) -> None:
    refusal = peer_refusal(settings)
    if refusal is not None:
        raise SettingsInvalid(refusal)
    check_peer_tls(settings)
    check_client_tls(settings)
    check_can_listen("listen_client", settings.listen_client)
    check_can_listen("listen_peer", settings.listen_peer)
    if settings.listen_client_grpc:
        check_can_listen("listen_client_grpc", settings.listen_client_grpc)
    if settings.listen_metrics:
        check_can_listen("listen_metrics", settings.listen_metrics)


def check_client_tls(settings: ServerSettings) -> None:
    """SettingsInvalid naming the setting if a client port TLS file cannot be used."""
    files = tls_files_of(settings)
    if files is not None:
        _check_tls(files, {"cert_and_key": "settings cert_file and key_file"})


def check_peer_tls(settings: ServerSettings) -> None:
    """SettingsInvalid naming the setting if a peer TLS file cannot be used."""
    if settings.peer_ca_file is None or settings.peer_cert_file is None:
        return
    assert settings.peer_key_file is not None  # all three or none (ServerSettings)
    files = TlsFiles(settings.peer_cert_file, settings.peer_key_file, settings.peer_ca_file)
    _check_tls(
        files,
        {
            "cert_file": "setting peer_cert_file",
            "key_file": "setting peer_key_file",
            "client_ca_file": "setting peer_ca_file",
            "cert_and_key": "settings peer_cert_file and peer_key_file",
        },
    )


def _check_tls(files: TlsFiles, names: dict[str, str]) -> None:
    """SettingsInvalid if `files` do not make a TLS server context (the files gRPC and the
    TCP transport load alike), named by `names` (part -> setting; else "setting <part>")."""
    try:
        check_files(files)
    except TlsFilesInvalid as error:
        name = names.get(error.part, f"setting {error.part}")
        raise SettingsInvalid(f"{name}: {error}") from error


def check_can_listen(name: str, address: str) -> None:
    """StartFailed naming setting `name` if `address` does not resolve or cannot be bound."""
    host, port = split_address(address)
    try:
        if port == 0:  # any free port will do: only the host must resolve
            socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        else:
            # As the real listeners (asyncio's) bind: IPv6 only on an IPv6 address.
            probe_listen(host, port, v6_only=True)
    except socket.gaierror as error:
        raise StartFailed(
            f"setting {name}: cannot resolve the host {host!r} of {address} "
            f"({error.strerror}): give an IP address or a name this machine resolves"
        ) from error
    except OSError as error:
        advice = (
            ": another process listens there (another raftkv serve?); stop it or "
            "choose another port"
            if error.errno == errno.EADDRINUSE
            else ""
        )
        raise StartFailed(
            f"setting {name}: cannot listen on {address}: {error.strerror or error}{advice}"
        ) from error
