"""Client certificates the client CA has revoked, read from its certificate revocation list (CRL) file.

A stolen or leaked client certificate would otherwise work until it expires. The security team
revokes it at the CA (Vault PKI: `vault write pki/revoke serial_number=...`, which publishes
the CRL at `pki/crl/pem`) and the vault reads that CRL from `TOKENVAULT_TLS_CLIENT_CRL`.

The file is read again when it changes (looked at no more often than every `recheck_seconds`,
on the calls themselves: a revocation takes effect within seconds, with no restart). A CRL is
used only if one of the client CAs signed it and it is not past its next update; a list
published before the one in force (an older list put back) is not taken in either. One that
cannot be used stops the service at start; at run time the last good list is kept and the
error logged, so neither a half-written file nor an older list lets a revoked certificate back
in. A file may hold one list per client CA (a CA bundle during a CA rotation).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from cryptography import x509

log = logging.getLogger(__name__)


class InvalidRevocationList(ValueError):
    """The CRL file cannot be read, or none of the client CAs signed it."""


class RevocationLists(NamedTuple):
    """What a CRL file holds: the revoked serials, and when each issuing CA published its list."""

    serials: frozenset[str]
    published: dict[x509.Name, datetime]


def read_revocation_lists(path: Path, cas: Sequence[x509.Certificate]) -> RevocationLists:
    """The CRLs in `path` (one per client CA, PEM, concatenated): revoked serials as lowercase hex (as `Caller.serial`).

    Each must be signed by one of `cas` and not be past its next update.
    """
    try:
        blocks = [_BEGIN + block for block in path.read_bytes().split(_BEGIN)[1:]]
        crls = [x509.load_pem_x509_crl(block) for block in blocks]
    except (OSError, ValueError) as error:
        raise InvalidRevocationList(f"cannot read the client CRL {path}: {error}") from None
    if not crls:
        raise InvalidRevocationList(f"cannot read the client CRL {path}: it holds no PEM CRL")
    now = datetime.now(UTC)
    for crl in crls:
        if not any(crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key()) for ca in cas):  # type: ignore[arg-type]
            raise InvalidRevocationList(f"the client CRL {path} is not signed by the vault's client CA")
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise InvalidRevocationList(
                f"the client CRL {path} expired on {crl.next_update_utc:%Y-%m-%d %H:%M} UTC: publish a fresh one"
            )
    serials = frozenset(format(revoked.serial_number, "x") for crl in crls for revoked in crl)
    return RevocationLists(serials, {crl.issuer: crl.last_update_utc for crl in crls})


def _older(new: dict[x509.Name, datetime], current: dict[x509.Name, datetime]) -> bool:
    """Whether a CA's list in `new` was published before the one in force (a list put back)."""
    return any(issuer in current and published < current[issuer] for issuer, published in new.items())


_BEGIN = b"-----BEGIN X509 CRL-----"


class RevocationList:
    """The serials revoked by the CRL at `path`, re-read when the file changes."""

    def __init__(
        self,
        path: Path,
        cas: Sequence[x509.Certificate],
        recheck_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read the CRL now; InvalidRevocationList if it cannot be used."""
        self._path = path
        self._cas = list(cas)
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._version = self._file_version()
        self._lists = read_revocation_lists(path, self._cas)
        self._checked_at = clock()

    def is_revoked(self, serial: str) -> bool:
        """Whether the certificate with this serial (lowercase hex) is revoked."""
        self._refresh()
        return serial in self._lists.serials

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._recheck or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked_at = now
            version = self._file_version()
            if version == self._version:
                return
            self._version = version
            try:
                lists = read_revocation_lists(self._path, self._cas)
                if _older(lists.published, self._lists.published):
                    raise InvalidRevocationList(
                        f"the client CRL {self._path} was published before the one in force (an older list put back?)"
                    )
            except InvalidRevocationList as error:
                log.error("client CRL not taken in; the previous one stays in force", extra={"error": str(error)})
                return
            self._lists = lists
            log.info("client CRL taken in", extra={"revoked_certificates": len(lists.serials)})
        finally:
            self._lock.release()

    def _file_version(self) -> tuple[int, int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)
