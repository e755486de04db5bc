"""How the client verifies a TLS cluster and shows its own certificate: `ClientSettings`'s
`ca_file`, `cert_file` and `key_file` made into the SSL context its HTTP connections use.

Without `ca_file` the system's CAs are trusted (a cluster with a publicly trusted
certificate); with it, only that CA (a cluster's own, as `raftkv certs` makes). The host
name in each endpoint URL must be one the server's certificate names. `cert_file` and
`key_file`: the client certificate a cluster with `client_ca_file` asks for. TLS 1.2 at
least, as the server."""

from __future__ import annotations

import ssl

from raftkv.client.settings import ClientSettings

__all__ = ["TlsUnusable", "tls_context", "verify_of"]


class TlsUnusable(ValueError):
    """A client TLS file cannot be read or used; the message names it."""


def tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """The context for https:// endpoints (see the module docstring); TlsUnusable if a
    file cannot be used."""
    for path in (ca_file, cert_file, key_file):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as error:
                raise TlsUnusable(f"cannot read {path}: {error.strerror or error}") from error
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except ssl.SSLError as error:
        raise TlsUnusable(f"{ca_file} holds no PEM CA certificate ({error.reason})") from error
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file, password=lambda: b"")
        except ssl.SSLError as error:
            raise TlsUnusable(
                f"{cert_file} and {key_file} are not a PEM certificate and its own "
                f"unencrypted private key ({error.reason})"
            ) from error
    return context


def verify_of(settings: ClientSettings) -> ssl.SSLContext | bool:
    """What the client's HTTP connections verify with: `settings`' TLS files, or True (the
    HTTP library's own CAs) when none is given."""
    if not (settings.ca_file or settings.cert_file):
        return True
    return tls_context(settings.ca_file, settings.cert_file, settings.key_file)
