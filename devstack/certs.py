"""A throwaway local CA and the certificates of the stack's mTLS, generated at run time.

Server: `tokenvault-vault` (SAN localhost, 127.0.0.1, vault-service). Clients are named by
their CN, which is the identity the vault's policy file refers to.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
SERVER_NAMES = ("localhost", "vault-service", "tokenvault-vault")
CLIENTS = ("etl-service", "analyst", "fraud-investigator", "privacy-officer")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_authority(directory: Path, name: str = "tokenvault dev CA") -> Authority:
    """A self-signed CA written to `directory/ca.pem` (key kept in memory and ca-key.pem)."""
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
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "ca.pem"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / "ca-key.pem", _key_pem(key), private=True)
    return Authority(cert, key, cert_path)


def load_authority(directory: Path) -> Authority:
    """The CA written by `create_authority` to `directory` (ca.pem, ca-key.pem)."""
    key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("ca-key.pem is not an EC private key")
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    return Authority(cert, key, directory / "ca.pem")


def issue(authority: Authority, directory: Path, common_name: str, server: bool = False) -> CertPair:
    """A certificate for `common_name` signed by `authority`, as `<cn>.pem` / `<cn>-key.pem`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
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


def create_stack_certificates(directory: Path) -> tuple[Authority, CertPair, dict[str, CertPair]]:
    """CA, the vault's server certificate, and one client certificate per name in CLIENTS."""
    authority = create_authority(directory)
    server = issue(authority, directory, "tokenvault-vault", server=True)
    clients = {name: issue(authority, directory, name) for name in CLIENTS}
    return authority, server, clients


def main() -> None:
    """`python -m devstack.certs DIR`: write the CA, server and client certificates into DIR."""
    import sys

    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "certs")
    if (directory / "ca.pem").exists():
        print(f"certificates already in {directory}; keeping them")
        return
    create_stack_certificates(directory)
    for key in directory.glob("*-key.pem"):
        key.chmod(0o640)  # readable by the services' group in containers
    print(f"wrote CA, server and client certificates ({', '.join(CLIENTS)}) to {directory}")


if __name__ == "__main__":
    main()
