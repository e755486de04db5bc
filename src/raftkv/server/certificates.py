"""Issuing a cluster's certificates: one CA, a certificate per node, one per client user.

Theory of operation. A cluster trusts one certificate authority (`ca.pem`, its key
`ca-key.pem`). Each node gets one certificate (`node-<id>.pem`, key `node-<id>-key.pem`)
that it uses both ways: to serve TLS (peer port, client port) and to present when it dials a
peer (mutual TLS), so its extended key usage is serverAuth and clientAuth. Its common name is
`node-<id>` and it is valid for `localhost`, 127.0.0.1 and the hosts given (peers and clients
check the name they dialled against these). A client user gets `client-<name>.pem` (common
name: the user's name, clientAuth only), for when the certificate's CN stands for the user.

Keys are ECDSA P-256 and signatures SHA-256: what Python's `ssl`, gRPC and curl all accept.
The extensions are those strict verifiers ask for (Python 3.13's VERIFY_X509_STRICT): a
critical BasicConstraints and KeyUsage on every certificate, the subject key identifier on
all and the authority key identifier on those the CA issues.

Rules:
- a file that exists is never replaced unless `force` is given; without it the whole request
  is refused before anything is written (`CertificateError`, one line);
- private keys are created 0600 (never readable by others, not even for a moment: the file is
  created with that mode) and every file appears whole (written aside, then linked or
  renamed into place);
- every input has a limit (`MAX_*` below); a certificate never outlives the CA that signed it
  (it would not verify after the CA expires anyway), so its end is the earlier of the two;
- `now` is passed in, so tests are deterministic.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftkv.raft.transport.peer_identity import node_common_name

__all__ = [
    "CA_COMMON_NAME",
    "DEFAULT_CA_DAYS",
    "DEFAULT_DAYS",
    "Authority",
    "CertificateError",
    "CertificateFiles",
    "ClusterDirectory",
    "Issued",
    "add_node",
    "create_cluster",
    "ensure_cluster",
    "usable",
]

DEFAULT_DAYS = 365
DEFAULT_CA_DAYS = 3650
# Limits: ids are ServerSettings' (1..2**64-1); a request names at most this many nodes,
# hosts and clients; a host is a DNS name (253 characters at most) or an IP address; a
# client name is a common name (64 characters at most, X.509's upper bound) made of
# characters safe in a file name.
MAX_VALIDITY_DAYS = 36500
MAX_NODES = 1000
MAX_HOSTS = 64
MAX_CLIENTS = 100
MAX_HOST_LENGTH = 253
MAX_CLIENT_NAME_LENGTH = 64
MAX_NODE_ID = 2**64 - 1
# Certificates start a little in the past: a peer whose clock is slightly behind still
# accepts a certificate issued a moment ago.
CLOCK_SKEW = datetime.timedelta(minutes=5)
CA_COMMON_NAME = "raftkv cluster CA"

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CertificateError(Exception):
    """A request that cannot be met: bad input, files in the way, a CA that cannot be used.
    Its message is one line naming what and, where there is one, the way out."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Authority:
    """The cluster's CA: issues node and client certificates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, days: int, now: datetime.datetime) -> Authority:
        _check_days(days)
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(CA_COMMON_NAME)
        certificate = (
            _builder(name, key.public_key(), now, now + datetime.timedelta(days=days))
            .issuer_name(name)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(certificate_sign=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    def issue_node(
        self, node: int, hosts: Sequence[str], days: int, now: datetime.datetime
    ) -> Issued:
        """`node`'s certificate, for serving TLS and for dialling peers, valid for
        localhost, 127.0.0.1 and `hosts`."""
        check_node_id(node)
        names = subject_alternative_names(hosts)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        # The name peers bind the connection to (raftkv.raft.transport.peer_identity).
        return self._issue(node_common_name(node), usages, names, days, now)

    def issue_client(self, user: str, days: int, now: datetime.datetime) -> Issued:
        """A client certificate whose common name is `user` (clientAuth only)."""
        check_client_name(user)
        return self._issue(user, [ExtendedKeyUsageOID.CLIENT_AUTH], [], days, now)

    def _issue(
        self,
        common_name: str,
        usages: list[x509.ObjectIdentifier],
        names: list[x509.GeneralName],
        days: int,
        now: datetime.datetime,
    ) -> Issued:
        _check_days(days)
        end = min(now + datetime.timedelta(days=days), self.certificate.not_valid_after_utc)
        if end <= now:
            raise CertificateError(
                f"the CA expired on {self.certificate.not_valid_after_utc:%Y-%m-%d}: "
                "create a new one (raftkv certs create --force) and issue every certificate again"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(common_name), key.public_key(), now, end)
            .issuer_name(self.certificate.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(certificate_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


def check_node_id(node: int) -> None:
    if not 1 <= node <= MAX_NODE_ID:
        raise CertificateError(f"node id {node} is not in 1..{MAX_NODE_ID}")


def check_client_name(user: str) -> None:
    if len(user) > MAX_CLIENT_NAME_LENGTH or not _CLIENT_NAME.fullmatch(user):
        raise CertificateError(
            f"client name {user!r}: give 1..{MAX_CLIENT_NAME_LENGTH} letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )


def subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """localhost, 127.0.0.1 and each of `hosts` (an IP address or a DNS name), once each."""
    if len(hosts) > MAX_HOSTS:
        raise CertificateError(f"{len(hosts)} hosts: give at most {MAX_HOSTS}")
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for host in hosts:
        name = _host_name(host)
        if name not in names:
            names.append(name)
    return names


def _host_name(host: str) -> x509.GeneralName:
    with contextlib.suppress(ValueError):
        return x509.IPAddress(ipaddress.ip_address(host))
    labels = host.removesuffix(".").split(".")
    if len(host) > MAX_HOST_LENGTH or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        shown = host if len(host) <= 80 else host[:80] + "..."
        raise CertificateError(f"host {shown!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host.removesuffix(".").lower())


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise CertificateError(f"validity of {days} days is not in 1..{MAX_VALIDITY_DAYS}")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, certificate_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificate_sign,
        crl_sign=certificate_sign,
        encipher_only=False,
        decipher_only=False,
    )


# -- files ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Where one certificate and its key are."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class ClusterDirectory:
    """The layout of a cluster's certificates in one directory."""

    path: Path

    @property
    def ca_file(self) -> Path:
        return self.path / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.path / "ca-key.pem"

    def node(self, node: int | str) -> CertificateFiles:
        """Node `node`'s files (an id, or a placeholder such as N in usage text)."""
        return CertificateFiles(self.path / f"node-{node}.pem", self.path / f"node-{node}-key.pem")

    def client(self, user: str) -> CertificateFiles:
        return CertificateFiles(
            self.path / f"client-{user}.pem", self.path / f"client-{user}-key.pem"
        )

    def load_authority(self) -> Authority:
        """The CA written here; `CertificateError` if it is missing, unreadable, not a CA,
        or its key is not the certificate's."""
        try:
            certificate = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), None)
        except OSError as error:
            raise CertificateError(
                f"cannot read the CA in {self.path}: {error.strerror}: {error.filename} "
                "(create one with raftkv certs create)"
            ) from None
        except (ValueError, TypeError) as error:
            reason = " ".join(str(error).split())
            raise CertificateError(
                f"the CA in {self.path} is not a PEM certificate and an unencrypted PEM key: "
                f"{reason}"
            ) from None
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise CertificateError(f"{self.ca_file} is not a CA certificate")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(
                f"{self.ca_key_file} is not an ECDSA key: raftkv certs issues from the CAs "
                "it creates"
            )
        if key.public_key() != certificate.public_key():
            raise CertificateError(f"{self.ca_key_file} is not the key of {self.ca_file}")
        return Authority(certificate, key)


def usable(
    authority: Authority, files: CertificateFiles, common_name: str, now: datetime.datetime
) -> bool:
    """Whether `files` hold a certificate named `common_name` that `authority` signed, valid
    at `now`, with its key beside it: one that can be used as it is."""
    try:
        certificate = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        key = serialization.load_pem_private_key(files.key_file.read_bytes(), None)
        certificate.verify_directly_issued_by(authority.certificate)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (
        [name.value for name in names] == [common_name]
        and certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc
        and isinstance(key, ec.EllipticCurvePrivateKey)
        and key.public_key() == certificate.public_key()
    )


def create_cluster(
    directory: Path,
    nodes: Sequence[int],
    *,
    hosts: Sequence[str] = (),
    clients: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    ca_days: int = DEFAULT_CA_DAYS,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> ClusterDirectory:
    """A new CA in `directory`, a certificate for each of `nodes` (valid for `hosts` too)
    and one for each of `clients`. Refused as a whole if a file is in the way, unless
    `force`."""
    now = now or datetime.datetime.now(datetime.UTC)
    if not nodes:
        raise CertificateError("give at least one node id")
    if len(nodes) > MAX_NODES or len(clients) > MAX_CLIENTS:
        raise CertificateError(f"give at most {MAX_NODES} nodes and {MAX_CLIENTS} clients")
    for label, items in (("node id", nodes), ("client name", clients)):
        repeated = sorted({str(item) for item in items if list(items).count(item) > 1})
        if repeated:
            raise CertificateError(f"{label} {', '.join(repeated)} given twice")
    for node in nodes:
        check_node_id(node)
    for user in clients:
        check_client_name(user)
    subject_alternative_names(hosts)  # checked before anything is made
    layout = ClusterDirectory(directory)
    authority = Authority.create(ca_days, now)
    writes = _writes(CertificateFiles(layout.ca_file, layout.ca_key_file), authority)
    for node in nodes:
        writes += _writes(layout.node(node), authority.issue_node(node, hosts, days, now))
    for user in clients:
        writes += _writes(layout.client(user), authority.issue_client(user, days, now))
    _write_all(directory, writes, force=force)
    return layout


def add_node(
    directory: Path,
    node: int,
    *,
    hosts: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> CertificateFiles:
    """One more node certificate from the CA already in `directory` (a member joining
    later)."""
    now = now or datetime.datetime.now(datetime.UTC)
    layout = ClusterDirectory(directory)
    authority = layout.load_authority()
    files = layout.node(node)
    _write_all(directory, _writes(files, authority.issue_node(node, hosts, days, now)), force=force)
    return files


def ensure_cluster(
    directory: Path, nodes: Sequence[int], now: datetime.datetime | None = None
) -> ClusterDirectory:
    """Certificates for `nodes` in `directory` (valid for localhost and 127.0.0.1): those
    already there when the CA and each node's certificate are usable now, else a new CA and
    every node's certificate (replacing what was there). For throwaway clusters
    (`raftkv dev --tls`): never for a directory whose CA matters."""
    now = now or datetime.datetime.now(datetime.UTC)
    layout = ClusterDirectory(directory)
    try:
        authority = layout.load_authority()
    except CertificateError:
        return create_cluster(directory, nodes, force=True, now=now)
    if not now < authority.certificate.not_valid_after_utc:
        return create_cluster(directory, nodes, force=True, now=now)
    for node in nodes:
        if not usable(authority, layout.node(node), node_common_name(node), now):
            writes = _writes(layout.node(node), authority.issue_node(node, (), DEFAULT_DAYS, now))
            _write_all(directory, writes, force=True)
    return layout


def _writes(files: CertificateFiles, issued: Issued | Authority) -> list[tuple[Path, bytes, int]]:
    """What to write for `issued`: its certificate (0644) and its key (0600)."""
    key = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    certificate = issued.certificate.public_bytes(serialization.Encoding.PEM)
    return [(files.cert_file, certificate, 0o644), (files.key_file, key, 0o600)]


def _write_all(directory: Path, writes: list[tuple[Path, bytes, int]], *, force: bool) -> None:
    """Each file of `writes` with its mode; none if one exists and not `force`."""
    if not force:
        existing = [path.name for path, _, _ in writes if path.exists()]
        if existing:
            raise CertificateError(
                f"{directory} already holds {', '.join(existing)}: not replaced "
                "(--force replaces them)"
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, data, mode in writes:
            _write_file(path, data, mode, replace=force)
    except OSError as error:
        raise CertificateError(
            f"cannot write {error.filename or directory}: {error.strerror or error}"
        ) from None


def _write_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """`path` holding `data` with `mode`, whole or not at all: written to a temporary file
    created with `mode` (mkstemp makes it 0600; a certificate is widened after), then renamed
    over `path` (`replace`) or linked to it (fails if it exists: no race replaces a file)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
