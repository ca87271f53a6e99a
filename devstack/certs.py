"""A throwaway local CA and the certificates of the stack's mTLS, generated at run time.

Server: `tokenvault-vault` (SAN localhost, 127.0.0.1, vault-service). Clients are named by
their CN, which is the identity the vault's policy file refers to.

Whoever holds the CA's private key can mint any identity, so it is kept only where asked: not
at all by `make up` (every certificate is issued at creation), in a root-only `ca/` directory
beside `certs/` for the tests' stack (tests mint extra clients).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.private_files import write_private

VALIDITY = datetime.timedelta(days=30)
SERVER_NAMES = ("localhost", "vault-service", "tokenvault-vault")
CLIENTS = ("etl-service", "analyst", "fraud-investigator", "privacy-officer", "security-team")
"""`security-team`: the certificate the vault runs its key jobs for (KeyJobs: reencrypt, reindex); it sees no value."""


@dataclass(frozen=True)
class CertPair:
    """Paths of a certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA able to sign more certificates (tests make extra clients with it)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """A certificate readable by all; a private key created owner-only (A53-1: never readable by others a moment)."""
    write_private(path, data, 0o600 if private else 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_authority(
    directory: Path,
    name: str = "tokenvault dev CA",
    key_dir: Path | None = None,
    validity: datetime.timedelta = VALIDITY,
) -> Authority:
    """A self-signed CA written to `directory/ca.pem`, its key kept in memory.

    The key is written to `key_dir/ca-key.pem` (file 0600; a separate directory becomes 0700)
    only if `key_dir` is given.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "ca.pem"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    if key_dir is not None:
        key_dir.mkdir(parents=True, exist_ok=True)
        key_dir.chmod(0o700 if key_dir != directory else key_dir.stat().st_mode & 0o777)
        _write(key_dir / "ca-key.pem", _key_pem(key), private=True)
    return Authority(cert, key, cert_path)


def load_authority(directory: Path) -> Authority:
    """The CA of `directory/ca.pem`, its key from `directory/ca-key.pem` or `directory/../ca/`."""
    candidates = (directory / "ca-key.pem", directory.parent / "ca" / "ca-key.pem")
    key_file = next((path for path in candidates if path.exists()), None)
    if key_file is None:
        raise FileNotFoundError(f"the CA key of {directory} was not kept (`make up` discards it after issuing)")
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("ca-key.pem is not an EC private key")
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    return Authority(cert, key, directory / "ca.pem")


def issue(
    authority: Authority,
    directory: Path,
    common_name: str,
    server: bool = False,
    validity: datetime.timedelta = VALIDITY,
    server_names: Sequence[str] = SERVER_NAMES,
) -> CertPair:
    """A certificate for `common_name` signed by `authority`, as `<cn>.pem` / `<cn>-key.pem`.

    A server certificate names `server_names` and 127.0.0.1; a client certificate only its CN.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    cert = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(authority.key, hashes.SHA256())
    pair = CertPair(directory / f"{common_name}.pem", directory / f"{common_name}-key.pem")
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    _write(pair.key, _key_pem(key), private=True)
    return pair


def create_stack_certificates(
    directory: Path, ca_key_dir: Path | None = None
) -> tuple[Authority, CertPair, dict[str, CertPair]]:
    """CA, the vault's server certificate, and one client certificate per name in CLIENTS.

    The CA's key is kept in `ca_key_dir` if given, else nowhere.
    """
    authority = create_authority(directory, key_dir=ca_key_dir)
    server = issue(authority, directory, "tokenvault-vault", server=True)
    clients = {name: issue(authority, directory, name) for name in CLIENTS}
    return authority, server, clients


METRICS_SCRAPER = "metrics-scraper"
"""The one client certificate the metrics CA signs: Prometheus's, or the operator's."""


@dataclass(frozen=True)
class MetricsCertificates:
    """The metrics endpoints' own PKI: its CA, each service's server certificate, the scraper's."""

    ca: Path
    vault: CertPair
    etl: CertPair
    scraper: CertPair


def create_metrics_certificates(directory: Path) -> MetricsCertificates:
    """A CA apart from the gRPC one, signing the two metrics endpoints and the scraper (`metrics-scraper`).

    Apart, because the metrics are a membership oracle (new-token counters) that no gRPC client -
    the ETL, an analyst - may read; the endpoints accept client certificates of this CA only.
    Its key is never kept: nothing else is ever issued under it.
    """
    authority = create_authority(directory, name="tokenvault metrics CA")
    return MetricsCertificates(
        authority.cert_path,
        issue(authority, directory, "vault-metrics", server=True, server_names=("localhost",)),
        issue(authority, directory, "etl-metrics", server=True, server_names=("localhost",)),
        issue(authority, directory, METRICS_SCRAPER),
    )


def write_revocation_list(
    authority: Authority, serials: Sequence[int], path: Path, published: datetime.datetime | None = None
) -> None:
    """A CRL signed by `authority` revoking `serials`, written to `path` in one step (rename).

    What the vault reads from TOKENVAULT_TLS_CLIENT_CRL; production takes it from its CA (Vault
    PKI publishes one at `pki/crl/pem`). `published`: its last update (default: now), valid a
    week from then.
    """
    now = datetime.datetime.now(datetime.UTC)
    published = published or now
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(published)
        .next_update(published + datetime.timedelta(days=7))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(authority.key, hashes.SHA256())
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    staged.replace(path)
