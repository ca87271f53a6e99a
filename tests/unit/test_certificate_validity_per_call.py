"""IdentityVerifier checks the certificate's validity window on every call, not once per certificate."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from devstack import certs
from vault_service.domain.errors import Unauthenticated
from vault_service.domain.identity import IdentityVerifier


def test_a_certificate_verified_before_is_refused_once_the_clock_passes_its_expiry(tmp_path: Path) -> None:
    ca = certs.create_authority(tmp_path / "ca")
    pair = certs.issue(ca, tmp_path, "analyst", validity=datetime.timedelta(hours=1))
    pem = pair.cert.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    now = [datetime.datetime.now(datetime.UTC).timestamp()]
    verifier = IdentityVerifier(ca.cert_path.read_bytes(), clock=lambda: now[0])
    assert verifier.caller(pem).name == "analyst"  # parsed and cached
    now[0] = cert.not_valid_after_utc.timestamp() + 1
    with pytest.raises(Unauthenticated, match=r"expired at .* UTC: get a new one") as refused:
        verifier.caller(pem)
    assert refused.value.serial == format(cert.serial_number, "x") and refused.value.cert_sha256
    now[0] = cert.not_valid_before_utc.timestamp() - 1
    with pytest.raises(Unauthenticated, match="not valid before"):
        verifier.caller(pem)
