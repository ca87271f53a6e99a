"""`python -m devstack.certs_job`: the compose stack's certificate job, run on every `up`.

The CA's key lives in a directory (volume) that only this one-shot job mounts. Each identity
gets its own directory (volume) holding its certificate, its key and the CA certificate, owned
by the uid of the one service that mounts it. The job issues what is missing, renews a
certificate that expires within `--renew-days` or was not issued by the current CA, and makes a
new CA (then re-issues everything) when the CA expires within `--ca-renew-days`. It is safe to
run at any time; run it periodically and restart the services so they load renewed files::

    docker compose run --rm certs && docker compose restart vault-service etl-service

Identities are `CN:UID:DIR`, or `CN:UID:DIR:server` for the vault's server certificate.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from devstack.certs import Authority, create_authority, issue, load_authority

LEAF_DAYS = 30
CA_DAYS = 365


@dataclass(frozen=True)
class Identity:
    """Who gets a certificate, which uid owns it, and where it goes."""

    common_name: str
    uid: int
    directory: Path
    server: bool = False

    @classmethod
    def parse(cls, text: str) -> Identity:
        """`CN:UID:DIR` or `CN:UID:DIR:server`."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "server") or not parts[1].isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: expected CN:UID:DIR or CN:UID:DIR:server")
        return cls(parts[0], int(parts[1]), Path(parts[2]), len(parts) == 4)

    @property
    def cert(self) -> Path:
        """The certificate's path."""
        return self.directory / f"{self.common_name}.pem"

    @property
    def key(self) -> Path:
        """The private key's path."""
        return self.directory / f"{self.common_name}-key.pem"


def days_left(cert_path: Path, now: datetime.datetime) -> float:
    """Days until the certificate at `cert_path` expires; -1 when it is missing or unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return -1.0
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def issued_by(cert_path: Path, authority: Authority) -> bool:
    """Whether the certificate at `cert_path` carries the signature of `authority`."""
    try:
        x509.load_pem_x509_certificate(cert_path.read_bytes()).verify_directly_issued_by(authority.cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return True


def _place(source: Path, target: Path, uid: int, mode: int) -> None:
    """Move `source` to `target` atomically, owned by `uid` with `mode`."""
    os.chmod(source, mode)
    if os.geteuid() == 0:
        os.chown(source, uid, uid)
    os.replace(source, target)


def ensure_authority(ca_dir: Path, now: datetime.datetime, renew_days: float, ca_days: int) -> tuple[Authority, bool]:
    """The CA in `ca_dir`, made anew when missing or expiring within `renew_days`."""
    if (ca_dir / "ca-key.pem").exists() and days_left(ca_dir / "ca.pem", now) > renew_days:
        return load_authority(ca_dir), False
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    return create_authority(ca_dir, key_dir=ca_dir, validity=datetime.timedelta(days=ca_days)), True


def ensure_identity(
    authority: Authority, identity: Identity, now: datetime.datetime, renew_days: float, leaf_days: int
) -> str:
    """Issue or renew `identity`'s certificate when needed; return what was done, for the log."""
    left = days_left(identity.cert, now)
    current = left > renew_days and identity.key.exists() and issued_by(identity.cert, authority)
    if current:
        _place_ca(authority, identity)
        return f"{identity.common_name}: kept ({left:.0f} days left)"
    identity.directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=identity.directory, prefix=".issue-") as tmp:
        pair = issue(authority, Path(tmp), identity.common_name, identity.server, datetime.timedelta(days=leaf_days))
        _place(pair.key, identity.key, identity.uid, 0o400)
        _place(pair.cert, identity.cert, identity.uid, 0o444)
    _place_ca(authority, identity)
    reason = "issued" if left < 0 else ("renewed" if left <= renew_days else "re-issued under the current CA")
    return f"{identity.common_name}: {reason} (valid {leaf_days} days)"


def _place_ca(authority: Authority, identity: Identity) -> None:
    target = identity.directory / "ca.pem"
    if target.exists() and target.read_bytes() == authority.cert_path.read_bytes():
        return
    with tempfile.TemporaryDirectory(dir=identity.directory, prefix=".ca-") as tmp:
        copy = Path(tmp) / "ca.pem"
        shutil.copyfile(authority.cert_path, copy)
        _place(copy, target, identity.uid, 0o444)


def main(argv: list[str] | None = None) -> int:
    """Issue and renew; print one line per identity."""
    parser = argparse.ArgumentParser(prog="python -m devstack.certs_job", description=__doc__.splitlines()[0])
    parser.add_argument("--ca-dir", type=Path, required=True, help="the CA's directory (this job's volume only)")
    parser.add_argument("--renew-days", type=float, default=10, help="renew certificates with fewer days left")
    parser.add_argument("--ca-renew-days", type=float, default=60, help="make a new CA with fewer days left")
    parser.add_argument("--leaf-days", type=int, default=LEAF_DAYS, help="validity of issued certificates")
    parser.add_argument("--ca-days", type=int, default=CA_DAYS, help="validity of a new CA")
    parser.add_argument("identities", nargs="+", type=Identity.parse, metavar="CN:UID:DIR[:server]")
    args = parser.parse_args(argv)
    now = datetime.datetime.now(datetime.UTC)
    authority, new_ca = ensure_authority(args.ca_dir, now, args.ca_renew_days, args.ca_days)
    print(f"CA: {'new' if new_ca else 'kept'} ({days_left(authority.cert_path, now):.0f} days left)")
    for identity in args.identities:
        print(ensure_identity(authority, identity, now, args.renew_days, args.leaf_days))
    return 0


if __name__ == "__main__":
    sys.exit(main())
