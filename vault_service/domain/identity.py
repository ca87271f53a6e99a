"""Who is calling: a client identity taken from a verified certificate, strictly.

The TLS layer has already checked that the certificate chains to the client CA. This module
is stricter than that: the certificate must be issued *directly* by the client CA (a leaf under
an intermediate is refused even when TLS accepted the chain), and its subject must hold exactly
one common name of the form `[a-z0-9][a-z0-9-]*` (no control characters, no NUL, no second CN).

TLS checks the certificate's validity window only at the handshake, which happens once per
connection and not at all on a resumed TLS session: a certificate that expired while its
connection stayed open, or whose session was resumed, kept revealing (attack 18, finding 1).
So the window is checked here on every call, next to the revocation list.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from vault_service.domain.errors import Unauthenticated

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Caller(NamedTuple):
    """A verified client: its name (the certificate's CN), serial and SHA-256 fingerprint."""

    name: str
    serial: str = ""
    cert_sha256: str = ""

    @classmethod
    def of(cls, client: Caller | str | None) -> Caller | None:
        """A Caller from a name (in-process callers and tests) or a Caller; None stays None."""
        if client is None or isinstance(client, Caller):
            return client
        return cls(client)


class _Known(NamedTuple):
    """A certificate verified before: its caller and validity window (POSIX seconds)."""

    caller: Caller
    not_before: float
    not_after: float


class IdentityVerifier:
    """Turns a peer certificate (PEM) into a Caller, or refuses it with the reason."""

    def __init__(
        self,
        client_ca_pem: bytes,
        is_revoked: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`is_revoked(serial)`: whether the client CA revoked the certificate with this serial (hex).

        `clock`: the time now (POSIX seconds), against which each call's certificate must be valid.
        """
        self._cas = x509.load_pem_x509_certificates(client_ca_pem)
        self._is_revoked = is_revoked
        self._clock = clock
        self._known: dict[bytes, _Known] = {}  # certificates seen before: one parse per client

    def caller(self, cert_pem: bytes | None) -> Caller:
        """The caller named by `cert_pem`; Unauthenticated when the certificate does not qualify.

        A refusal carries the certificate's serial and SHA-256 when it could be read, for the audit, and
        its client name when only its validity window or its revocation refused it (the chain and the CN
        held): what the refusal is throttled by (attack 45, A45-5).
        """
        if not cert_pem:
            raise Unauthenticated("no client certificate: connect with one issued by the vault's client CA")
        known = self._known.get(cert_pem)
        if known is None:
            known = self._verify(cert_pem)
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[cert_pem] = known
        caller, now = known.caller, self._clock()
        if now > known.not_after:
            raise Unauthenticated(
                f"your client certificate (serial {caller.serial}) expired at {_utc(known.not_after)}:"
                " get a new one from the client CA and reconnect with it",
                caller.serial,
                caller.cert_sha256,
                caller.name,
            )
        if now < known.not_before:
            raise Unauthenticated(
                f"your client certificate (serial {caller.serial}) is not valid before {_utc(known.not_before)}:"
                " check this machine's clock or the certificate's",
                caller.serial,
                caller.cert_sha256,
                caller.name,
            )
        if self._is_revoked is not None and self._is_revoked(caller.serial):
            raise Unauthenticated(
                f"the client certificate (serial {caller.serial}) was revoked by the client CA:"
                " ask the security team for a new one",
                caller.serial,
                caller.cert_sha256,
                caller.name,
            )
        return caller

    def _verify(self, cert_pem: bytes) -> _Known:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise Unauthenticated("the client certificate cannot be parsed") from None
        serial, digest = format(cert.serial_number, "x"), cert.fingerprint(hashes.SHA256()).hex()
        try:
            caller = Caller(_client_name(cert, self._cas), serial, digest)
        except Unauthenticated as refused:
            raise Unauthenticated(str(refused), serial, digest) from None
        return _Known(caller, cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


def _utc(posix: float) -> str:
    return datetime.datetime.fromtimestamp(posix, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _client_name(cert: x509.Certificate, cas: list[x509.Certificate]) -> str:
    """The client name `cert` carries, if a CA of `cas` issued it directly; else Unauthenticated."""
    if not any(_issued_by(cert, ca) for ca in cas):
        raise Unauthenticated(
            "the client certificate is not issued directly by the vault's client CA (intermediate CAs are not accepted)"
        )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise Unauthenticated(
            f"the client certificate's subject has {len(names)} common names; exactly one is required"
        )
    name = names[0].value
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise Unauthenticated(
            "the client certificate's common name is not a valid client name"
            " (lowercase letters, digits and '-', at most 63)"
        )
    return name


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):  # another issuer name, key type or signature
        return False
    return True
