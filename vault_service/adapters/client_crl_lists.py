"""The lists a client CRL file holds, read and checked on their own: `read_revocation_lists`.

Each list must be signed by one of the client CAs, be a full list, not be published in the
future nor past its next update, be the only list of its CA in the file (or the very same list
again), and each client CA must have its list in the file; a file that fails any of these is
refused with `InvalidRevocationList`, its reason one of `REFUSAL_REASONS`. Whether a good file
may replace the lists in force is client_crl.py's (`check_replaces`).

A delta CRL (Delta CRL Indicator: only the revocations since a base list), a list scoped to some
certificates or reasons (Issuing Distribution Point), or one with any other critical extension
the vault does not process is refused (RFC 5280 5.2: taken as the full list it would lift every
other revocation), and so is a list published in the future beyond `MAX_CLOCK_SKEW` (taken in,
it would make the CA's real next lists look older). The file is read only if it is a regular file (`crl_file`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vault_service.adapters.crl_file import read_regular_file

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


_BEGIN = b"-----BEGIN X509 CRL-----"
