"""Client certificates the client CA has revoked, read from its certificate revocation list (CRL) file.

A stolen or leaked client certificate would otherwise work until it expires. The security team
revokes it at the CA (Vault PKI: `vault write pki/revoke serial_number=...`, which publishes
the CRL at `pki/crl/pem`) and the vault reads that CRL from `TOKENVAULT_TLS_CLIENT_CRL`.

The file is read again when it changes (looked at no more often than every `recheck_seconds`,
on the calls themselves: a revocation takes effect within seconds, with no restart). The file
holds one list per client CA (PEM, concatenated): a CA bundle (TOKENVAULT_TLS_CLIENT_CA) of two
CAs during a CA rotation needs both CAs' lists - Vault/OpenBao PKI keeps one list per issuer
key, so one list per issuer is rendered (docs/production.md, step 4) - and a file without the
list of a CA of the bundle is refused, at start as at run time: that CA's certificates would be
checked against no list at all (nothing of it revocable). The same list twice (two issuers
sharing a key share one list) counts once; two different lists of one CA are refused. Each list
is used only if one of the client CAs signed it and it is not past its next update. The lists in
force are kept per CA that signed them (the SHA-256 of its public key, not its name, which two
CAs share when one is rotated in place), and a new file is not taken in when it leaves out the
list of a CA whose list is in force (that would lift its revocations) or holds a list published
before the one in force for that CA (an older list put back). A file that cannot be used stops
the service at start; at run time the last good lists are kept, the error logged and its reason
counted (`on_refused`; `file_in_force` is False until a good newer file comes), so neither
a half-written file, nor a list left out, nor an older list lets a revoked certificate back in.
A list in force that passes its next update (the CA stopped publishing) stays in force - the
revocations it holds still stand - and a warning is logged once.

Which of two lists of a CA is the newer is told by their CRL Number extension (RFC 5280 5.2.3:
monotonically increasing per CA; Vault/OpenBao PKI set it), not by their publish time alone: a
CA publishes two lists in the same second when two certificates are revoked in a row. A list
with the same number as the one in force is taken in only if it is that very list. A CA whose
list in force is numbered must number the next one; for a CA that numbers none (not conforming
to RFC 5280, e.g. `openssl ca` without a crlnumber file) lists are ordered by publish time, and
a list published in the same second as the one in force is taken in only if it keeps all of its
revocations (which of the two is newer cannot be told; one that only adds lifts nothing).

What one file must hold to be taken in at all is client_crl_lists.py's (`read_revocation_lists`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from vault_service.adapters.client_crl_lists import (
    InvalidRevocationList,
    PublishedList,
    RevocationLists,
    read_revocation_lists,
)

log = logging.getLogger(__name__)


def check_replaces(new: RevocationLists, current: RevocationLists, path: Path) -> None:
    """InvalidRevocationList if taking in `new` would lift a revocation of `current`.

    That is when a CA whose list is in force has no list in `new`, or its list in `new` is not
    the one in force and not a newer one (`_is_older_or_ambiguous`).
    """
    for key, in_force in current.published.items():
        replacement = new.published.get(key)
        if replacement is None:
            raise InvalidRevocationList(
                f"the client CRL {path} has no list of the client CA {in_force.ca_name} (key sha256 {key[:16]}), "
                "whose list is in force: publish one list per client CA",
                "ca_left_out",
            )
        if replacement.digest == in_force.digest:
            continue  # the same list, written again
        problem = _is_older_or_ambiguous(replacement, in_force)
        if problem:
            raise InvalidRevocationList(
                f"the client CRL {path} holds a list of the client CA {in_force.ca_name} (key sha256 {key[:16]}) "
                f"{problem}",
                "not_newer",
            )


def _is_older_or_ambiguous(new: PublishedList, in_force: PublishedList) -> str:
    """Why `new` (another list of the same CA) cannot replace `in_force`, or '' when it is newer."""
    if in_force.number is not None:
        if new.number is None:
            return f"without a CRL number, while the one in force has number {in_force.number}"
        if new.number < in_force.number:
            return f"numbered {new.number}, before the one in force ({in_force.number}): an older list put back?"
        if new.number == in_force.number:
            return f"numbered {new.number} like the one in force, with other contents"
        return ""  # the number orders a CA's lists, whatever their publish times
    if new.last_update < in_force.last_update:
        return "published before the one in force (an older list put back?)"
    if new.last_update == in_force.last_update and new.number is None and not new.serials >= in_force.serials:
        return (
            "published in the same second as the one in force, without some of its revocations "
            "and without a CRL number to tell which is newer"
        )
    return ""


class RevocationList:
    """The serials revoked by the CRL at `path`, re-read when the file changes."""

    def __init__(
        self,
        path: Path,
        cas: Sequence[x509.Certificate],
        recheck_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        utc_now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        """Read the CRL now; InvalidRevocationList if it cannot be used.

        At run time `on_refused` is told the reason (one of `REFUSAL_REASONS`) of each file
        version not taken in.
        """
        self._path = path
        self._cas = list(cas)
        self._recheck = recheck_seconds
        self._clock = clock
        self._utc_now = utc_now
        self._on_refused = on_refused
        self._lock = threading.Lock()
        self._version = self._file_version()
        self._lists = read_revocation_lists(path, self._cas, utc_now())
        self._stale_warned = False
        self._file_in_force = True
        self._checked_at = clock()

    def is_revoked(self, serial: str) -> bool:
        """Whether the certificate with this serial (lowercase hex) is revoked."""
        self._refresh()
        return serial in self._lists.serials

    def next_update_timestamp(self) -> float:
        """Unix time of the earliest next update promised by the lists in force (+inf: none promised).

        The file is looked at first (as by a call), so a quiet vault reports the list it would use.
        """
        self._refresh()
        promised = [p.next_update.timestamp() for p in self._lists.published.values() if p.next_update]
        return min(promised, default=float("inf"))

    def file_in_force(self) -> bool:
        """Whether the file at the path is the one in force (False: its last version was refused).

        The file is looked at first (as by a call). A refused file leaves the older lists in
        force: revocations published since are not enforced until a good newer file comes.
        """
        self._refresh()
        return self._file_in_force

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._recheck or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked_at = now
            version = self._file_version()
            if version != self._version:
                self._version = version
                self._take_in()
            self._warn_if_stale()
        finally:
            self._lock.release()

    def _take_in(self) -> None:
        try:
            lists = read_revocation_lists(self._path, self._cas, self._utc_now())
            check_replaces(lists, self._lists, self._path)
        except InvalidRevocationList as error:
            log.error(
                "client CRL not taken in; the previous one stays in force",
                extra={"error": str(error), "reason": error.reason},
            )
            self._file_in_force = False
            self._on_refused(error.reason)
            return
        self._lists = lists
        self._file_in_force = True
        self._stale_warned = False
        log.info("client CRL taken in", extra={"revoked_certificates": len(lists.serials)})

    def _warn_if_stale(self) -> None:
        if self._stale_warned:
            return
        now = self._utc_now()
        stale = sorted(p.ca_name for p in self._lists.published.values() if p.next_update and p.next_update < now)
        if stale:
            self._stale_warned = True
            log.warning(
                "client CRL in force is past its next update; it stays in force: publish a fresh one",
                extra={"client_cas": stale, "path": str(self._path)},
            )

    def _file_version(self) -> tuple[int, int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)
