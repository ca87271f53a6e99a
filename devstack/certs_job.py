"""`python -m devstack.certs_job`: the compose stack's certificate job, run on every `up`.

The CA's key lives in a directory (volume) that only this one-shot job mounts. Each identity
gets its own directory (volume) holding its certificate, its key and the CA certificate, owned
by the uid of the one service that mounts it. The job issues what is missing, renews a
certificate that expires within `--renew-days` or was not issued by the current CA, and makes a
new CA (then re-issues everything) when the CA expires within `--ca-renew-days`. It is safe to
run at any time; run it periodically and restart the services so they load renewed files::

    docker compose run --rm certs && docker compose restart vault-service etl-service lock-watchdog

Identities are `CN:UID:DIR[:OPTION...]`. Options: `server` (a server certificate for the
vault's names), `server=NAME,NAME` (for those DNS names and 127.0.0.1), `metrics` (issued by
the metrics CA instead: a CA of its own in `<ca-dir>/metrics`, signing the metrics endpoints and
the scraper only; its certificate goes beside the identity's as `metrics-ca.pem`).
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

from devstack.certs import SERVER_NAMES, Authority, create_authority, issue, load_authority

LEAF_DAYS = 30
CA_DAYS = 365


@dataclass(frozen=True)
class Identity:
    """Who gets a certificate, which uid owns it, and where it goes."""

    common_name: str
    uid: int
    directory: Path
    server: bool = False
    server_names: tuple[str, ...] = SERVER_NAMES
    metrics: bool = False
    """Issued by the metrics CA (which signs no gRPC client), not the gRPC one."""

    @classmethod
    def parse(cls, text: str) -> Identity:
        """`CN:UID:DIR[:server[=NAME,...]][:metrics]`."""
        parts = text.split(":")
        options = parts[3:]
        servers = [o for o in options if o == "server" or o.startswith("server=")]
        known = len(servers) <= 1 and all(o in ("metrics", *servers) for o in options)
        if len(parts) < 3 or not parts[1].isdigit() or not known or len(set(options)) != len(options):
            raise argparse.ArgumentTypeError(f"{text!r}: expected CN:UID:DIR[:server[=NAME,...]][:metrics]")
        names = tuple(n for n in servers[0].partition("=")[2].split(",") if n) if servers else ()
        return cls(parts[0], int(parts[1]), Path(parts[2]), bool(servers), names or SERVER_NAMES, "metrics" in options)

    @property
    def ca_file(self) -> Path:
        """Where the certificate of the CA that issued it goes."""
        return self.directory / ("metrics-ca.pem" if self.metrics else "ca.pem")

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


def ensure_authority(
    ca_dir: Path, now: datetime.datetime, renew_days: float, ca_days: int, name: str
) -> tuple[Authority, bool]:
    """The CA in `ca_dir`, made anew when missing or expiring within `renew_days`."""
    if (ca_dir / "ca-key.pem").exists() and days_left(ca_dir / "ca.pem", now) > renew_days:
        return load_authority(ca_dir), False
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    return create_authority(ca_dir, name, key_dir=ca_dir, validity=datetime.timedelta(days=ca_days)), True


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
        validity = datetime.timedelta(days=leaf_days)
        pair = issue(authority, Path(tmp), identity.common_name, identity.server, validity, identity.server_names)
        _place(pair.key, identity.key, identity.uid, 0o400)
        _place(pair.cert, identity.cert, identity.uid, 0o444)
    _place_ca(authority, identity)
    reason = "issued" if left < 0 else ("renewed" if left <= renew_days else "re-issued under the current CA")
    return f"{identity.common_name}: {reason} (valid {leaf_days} days)"


def _place_ca(authority: Authority, identity: Identity) -> None:
    target = identity.ca_file
    if target.exists() and target.read_bytes() == authority.cert_path.read_bytes():
        return
    with tempfile.TemporaryDirectory(dir=identity.directory, prefix=".ca-") as tmp:
        copy = Path(tmp) / target.name
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
    authorities = {}
    for metrics in sorted({identity.metrics for identity in args.identities}):
        ca_dir = args.ca_dir / "metrics" if metrics else args.ca_dir
        name = "tokenvault metrics CA" if metrics else "tokenvault dev CA"
        authorities[metrics], new_ca = ensure_authority(ca_dir, now, args.ca_renew_days, args.ca_days, name)
        left = days_left(authorities[metrics].cert_path, now)
        print(f"{'metrics CA' if metrics else 'CA'}: {'new' if new_ca else 'kept'} ({left:.0f} days left)")
    for identity in args.identities:
        print(ensure_identity(authorities[identity.metrics], identity, now, args.renew_days, args.leaf_days))
    return 0


if __name__ == "__main__":
    sys.exit(main())
