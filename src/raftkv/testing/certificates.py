"""Throwaway certificates for tests: a CA that issues certificates for TLS servers and
clients alike (ECDSA P-256, both key usages, valid for 127.0.0.1 and localhost unless told
otherwise, for a century), written as PEM files. For tests only: the keys are written
unprotected and the validity is absurd on purpose."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "TlsFiles"]


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its key, and the CA file its holder trusts."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self, *, trusting: Path | None = None) -> ssl.SSLContext:
        """A TLS client context trusting `ca_file` (or `trusting`) and showing this
        certificate (for a server that asks for one)."""
        context = ssl.create_default_context(cafile=trusting or self.ca_file)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


_NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
_VALID_UNTIL = datetime.datetime(2125, 1, 1, tzinfo=datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_certificate(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class CertificateAuthority:
    """A throwaway CA that issues peer certificates (server and client use) for 127.0.0.1."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} CA"))
            .issuer_name(_name(f"{name} CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW)
            .not_valid_after(_VALID_UNTIL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name}-ca.pem"
        _write_certificate(self.certificate, self.ca_file)

    def issue(
        self,
        peer: str,
        *,
        trusting: Path | None = None,
        names: list[x509.GeneralName] | None = None,
    ) -> TlsFiles:
        """A certificate for `peer` signed by this CA, valid for `names` (by default IP
        127.0.0.1 and localhost); the CA file the peer trusts is this one unless `trusting`
        names another."""
        if names is None:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(peer))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW)
            .not_valid_after(_VALID_UNTIL)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.directory / f"{self.name}-{peer}.pem"
        key_file = self.directory / f"{self.name}-{peer}-key.pem"
        _write_certificate(certificate, cert_file)
        _write_key(key, key_file)
        return TlsFiles(trusting or self.ca_file, cert_file, key_file)
