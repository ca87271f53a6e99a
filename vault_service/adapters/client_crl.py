"""Client certificates the client CA has revoked, read from its certificate revocation list (CRL) file.

A stolen or leaked client certificate would otherwise work until it expires. The security team
revokes it at the CA (Vault PKI: `vault write pki/revoke serial_number=...`, which publishes
the CRL at `pki/crl/pem`) and the vault reads that CRL from `TOKENVAULT_TLS_CLIENT_CRL`.

The file is read again when it changes (looked at no more often than every `recheck_seconds`,
on the calls themselves: a revocation takes effect within seconds, with no restart). A CRL is
used only if one of the client CAs signed it. One that cannot be read or is not signed so
stops the service at start; at run time the last good list is kept and the error logged, so a
half-written file never lets a revoked certificate back in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)


class InvalidRevocationList(ValueError):
    """The CRL file cannot be read, or none of the client CAs signed it."""


def read_revoked_serials(path: Path, cas: Sequence[x509.Certificate]) -> frozenset[str]:
    """The revoked serial numbers (lowercase hex, as `Caller.serial`) of the CRL at `path`."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as error:
        raise InvalidRevocationList(f"cannot read the client CRL {path}: {error}") from None
    if not any(crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key()) for ca in cas):  # type: ignore[arg-type]
        raise InvalidRevocationList(f"the client CRL {path} is not signed by the vault's client CA")
    return frozenset(format(revoked.serial_number, "x") for revoked in crl)


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
        self._serials = read_revoked_serials(path, self._cas)
        self._checked_at = clock()

    def is_revoked(self, serial: str) -> bool:
        """Whether the certificate with this serial (lowercase hex) is revoked."""
        self._refresh()
        return serial in self._serials

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._recheck or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked_at = now
            version = self._file_version()
            if version == self._version:
                return
            try:
                serials = read_revoked_serials(self._path, self._cas)
            except InvalidRevocationList as error:
                log.error("client CRL not taken in; the previous one stays in force", extra={"error": str(error)})
                return
            self._serials, self._version = serials, version
            log.info("client CRL taken in", extra={"revoked_certificates": len(serials)})
        finally:
            self._lock.release()

    def _file_version(self) -> tuple[int, int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)
