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

A delta CRL (Delta CRL Indicator: only the revocations since a base list), a list scoped to some
certificates or reasons (Issuing Distribution Point), or one with any other critical extension
the vault does not process is refused (RFC 5280 5.2: taken as the full list it would lift every
other revocation), and so is a list published in the future beyond `MAX_CLOCK_SKEW` (taken in,
it would make the CA's real next lists look older). The file is read only if it is a regular file (`crl_file`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vault_service.adapters.crl_file import read_regular_file

log = logging.getLogger(__name__)


REFUSAL_REASONS = (
    "unreadable",
    "unknown_ca",
    "not_full_list",
    "future",
    "expired",
    "two_lists_of_a_ca",
    "ca_left_out",
    "not_newer",
)
"""Why a CRL file is refused: a fixed set, fit for a metric's label (the error's text says more)."""


class InvalidRevocationList(ValueError):
    """The CRL file cannot be read, a client CA did not sign it, or it would lift a revocation.

    `reason` is one of `REFUSAL_REASONS`.
    """

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        """An error saying `message`, refused for `reason` (one of `REFUSAL_REASONS`)."""
        super().__init__(message)
        self.reason = reason


MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the vault's clock a list's publish time (thisUpdate) may be: the CA's clock may run ahead."""


class PublishedList(NamedTuple):
    """A CA's list in force: when published, its CRL number, when the CA promised the next one, its digest."""

    ca_name: str
    last_update: datetime
    next_update: datetime | None
    number: int | None = None
    digest: str = ""
    serials: frozenset[str] = frozenset()


class RevocationLists(NamedTuple):
    """What a CRL file holds: the revoked serials, and each signing CA's list (by its key's SHA-256)."""

    serials: frozenset[str]
    published: dict[str, PublishedList]


def ca_key_fingerprint(ca: x509.Certificate) -> str:
    """The SHA-256 (hex) of the CA certificate's public key: the same for a CA re-issued with its key."""
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def read_revocation_lists(path: Path, cas: Sequence[x509.Certificate], now: datetime | None = None) -> RevocationLists:
    """The CRLs in `path` (one per client CA, PEM, concatenated): revoked serials as lowercase hex (as `Caller.serial`).

    Each must be signed by one of `cas`, be a full list (no delta, no critical extension the
    vault does not process), be published no later than `now` plus `MAX_CLOCK_SKEW`, not be
    past its next update at `now`, and be the only list of that CA in the file (or the very
    same list again); and each of `cas` (by its key) must have its list in the file.
    """
    try:
        blocks = [_BEGIN + block for block in read_regular_file(path).split(_BEGIN)[1:]]
        crls = [x509.load_pem_x509_crl(block) for block in blocks]
    except (OSError, ValueError) as error:
        raise InvalidRevocationList(f"cannot read the client CRL {path}: {error}") from None
    if not crls:
        raise InvalidRevocationList(f"cannot read the client CRL {path}: it holds no PEM CRL")
    now = now or datetime.now(UTC)
    published: dict[str, PublishedList] = {}
    for crl in crls:
        signer = _signer(crl, cas)
        if signer is None:
            raise InvalidRevocationList(f"the client CRL {path} is not signed by the vault's client CA", "unknown_ca")
        _check_full_list(crl, path)
        if crl.last_update_utc > now + MAX_CLOCK_SKEW:
            raise InvalidRevocationList(
                f"the client CRL {path} was published in the future ({crl.last_update_utc:%Y-%m-%d %H:%M:%S} UTC, "
                f"over {MAX_CLOCK_SKEW} ahead of this host's clock): check the CA's and this host's clocks",
                "future",
            )
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise InvalidRevocationList(
                f"the client CRL {path} expired on {crl.next_update_utc:%Y-%m-%d %H:%M} UTC: publish a fresh one",
                "expired",
            )
        key = ca_key_fingerprint(signer)
        digest = hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest()
        if key in published and published[key].digest == digest:
            continue  # the same list again: issuers sharing a key share one list
        if key in published:
            raise InvalidRevocationList(
                f"the client CRL {path} holds two lists of the client CA {_describe(signer)}: keep one list per CA",
                "two_lists_of_a_ca",
            )
        published[key] = PublishedList(
            signer.subject.rfc4514_string(),
            crl.last_update_utc,
            crl.next_update_utc,
            _crl_number(crl),
            digest,
            frozenset(format(revoked.serial_number, "x") for revoked in crl),
        )
    _check_every_ca_listed(published, cas, path)
    serials = frozenset().union(*(listed.serials for listed in published.values()))
    return RevocationLists(serials, published)


def _check_every_ca_listed(published: dict[str, PublishedList], cas: Sequence[x509.Certificate], path: Path) -> None:
    """InvalidRevocationList naming each client CA (by key) of `cas` that has no list in `published`.

    `is_revoked` looks a serial up in the lists of all CAs together: a CA without a list would
    have nothing of it revocable, with no sign of it (review 19, R19-5).
    """
    unlisted = {ca_key_fingerprint(ca): ca for ca in cas if ca_key_fingerprint(ca) not in published}
    if unlisted:
        named = "; ".join(_describe(ca) for ca in unlisted.values())
        raise InvalidRevocationList(
            f"the client CRL {path} has no list of the client CA {named}, which TOKENVAULT_TLS_CLIENT_CA trusts: "
            "its certificates could not be revoked. Publish one list per client CA in the file (Vault/OpenBao "
            "PKI: each issuer's pki/issuer/<name>/crl, docs/production.md step 4), or take the CA out of the bundle",
            "ca_left_out",
        )


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _check_full_list(crl: x509.CertificateRevocationList, path: Path) -> None:
    """InvalidRevocationList unless `crl` is a full list of every certificate its CA issued, for every reason."""
    for extension in crl.extensions:
        value = extension.value
        if isinstance(value, x509.DeltaCRLIndicator):
            raise InvalidRevocationList(
                f"the client CRL {path} is a delta CRL (only the revocations since list {value.crl_number}), "
                "not the CA's full list: render the CA's full CRL (Vault PKI: pki/issuer/<name>/crl, not crl/delta)",
                "not_full_list",
            )
        if isinstance(value, x509.IssuingDistributionPoint):
            if value.indirect_crl or value.only_some_reasons or value.only_contains_ca_certs:
                raise InvalidRevocationList(
                    f"the client CRL {path} covers only some certificates or reasons (issuing distribution point): "
                    "render the CA's full CRL",
                    "not_full_list",
                )
            if value.only_contains_attribute_certs:
                raise InvalidRevocationList(f"the client CRL {path} lists attribute certificates only", "not_full_list")
            continue
        if extension.critical:
            raise InvalidRevocationList(
                f"the client CRL {path} has a critical extension the vault does not process "
                f"({extension.oid.dotted_string})",
                "not_full_list",
            )


def _signer(crl: x509.CertificateRevocationList, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The client CA whose key signed `crl` (two CAs may share a name), or None."""
    return next(
        (ca for ca in cas if crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())),  # type: ignore[arg-type]
        None,
    )


def _describe(ca: x509.Certificate) -> str:
    return f"{ca.subject.rfc4514_string()} (key sha256 {ca_key_fingerprint(ca)[:16]})"


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


_BEGIN = b"-----BEGIN X509 CRL-----"


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
