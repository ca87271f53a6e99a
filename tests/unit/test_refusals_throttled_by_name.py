"""Refusals of a certificate the vault refuses itself are throttled by its name, and all of them within one bound.

Attack 45 (A45-5): such refusals were throttled by the peer's address, which the caller chooses (any local process
binds any 127.0.0.0/8 address): a fresh burst of audited rows per address. IdentityVerifier now tells the name of a
certificate the client CA issued (one well-formed CN) when only its validity window or its revocation refused it,
the guard throttles by that name ("refused <name>"), and RefusalAuditor takes every such refusal from the bucket of
all refused certificates too (both or neither). The integration tests (test_refused_certificates_by_name.py) run
the whole path from many addresses.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from devstack import certs
from tests.unit.fakes import FakeAuditLog
from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import TooManyRequests, Unauthenticated
from vault_service.domain.identity import IdentityVerifier
from vault_service.domain.rate_limit import RateLimit
from vault_service.service.metering import REFUSED_CERTIFICATES, RefusalAuditor


def test_a_certificate_refused_for_its_dates_or_revocation_names_its_client_and_a_foreign_one_names_none(
    tmp_path: Path,
) -> None:
    ca = certs.create_authority(tmp_path / "ca")
    pair = certs.issue(ca, tmp_path / "leaf", "analyst", validity=datetime.timedelta(hours=1))
    pem = pair.cert.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    revoked: set[str] = set()
    now = [datetime.datetime.now(datetime.UTC).timestamp()]
    verifier = IdentityVerifier(ca.cert_path.read_bytes(), revoked.__contains__, clock=lambda: now[0])
    assert verifier.caller(pem).name == "analyst"
    revoked.add(format(cert.serial_number, "x"))
    with pytest.raises(Unauthenticated, match="revoked") as refused:
        verifier.caller(pem)
    assert refused.value.name == "analyst"
    revoked.clear()
    now[0] = cert.not_valid_after_utc.timestamp() + 1
    with pytest.raises(Unauthenticated, match="expired") as refused:
        verifier.caller(pem)
    assert refused.value.name == "analyst"
    now[0] = cert.not_valid_before_utc.timestamp() - 1
    with pytest.raises(Unauthenticated, match="not valid before") as refused:
        verifier.caller(pem)
    assert refused.value.name == "analyst"
    other = certs.create_authority(tmp_path / "other-ca")
    foreign = certs.issue(other, tmp_path / "foreign", "analyst").cert.read_bytes()
    with pytest.raises(Unauthenticated, match="not issued directly") as refused:
        verifier.caller(foreign)
    assert refused.value.name == "" and refused.value.serial  # no name to throttle by: the CA did not issue it


def test_refused_certificates_of_every_name_together_stay_within_one_bound_taken_both_or_neither() -> None:
    audit = FakeAuditLog()
    now = [0.0]
    auditor = RefusalAuditor(
        audit, RateLimit(per_second=0.001, burst=2), RateLimit(per_second=1, burst=3), clock=lambda: now[0]
    )
    event = AuditEvent("<anonymous>", "detokenize", "refused: Unauthenticated", 0)

    def audited(peer: str, within: str = REFUSED_CERTIFICATES) -> bool:
        try:
            auditor.refused(peer, event, within)
        except TooManyRequests:
            return False
        return True

    assert [audited("refused analyst") for _ in range(3)] == [True, True, False]  # the name's own burst
    assert audited("refused etl-service")  # another name: the third of all refused certificates' burst
    assert not audited("refused etl-service")  # all refused certificates' bound, whatever the name
    assert not audited("refused privacy-officer")
    assert audited("client analyst", within="")  # a verified client's refusals are not in that bucket
    now[0] += 3  # all refused certificates' bucket full again; the names' own ones (one per 1000 s) not
    # etl-service's refusal that the shared bucket refused took nothing from its own bucket: one is left there
    assert audited("refused etl-service")
    assert not audited("refused etl-service")
    assert len(audit.events) == 5
