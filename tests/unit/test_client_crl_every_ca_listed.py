"""Every client CA of the bundle needs its list in the CRL file (review 19, R19-5).

During a client-CA rotation the bundle (TOKENVAULT_TLS_CLIENT_CA) holds the old and the new CA,
and Vault/OpenBao PKI keeps one list per issuer. A file holding one CA's list only was taken in
at start: the other CA's certificates were checked against no list (nothing of it revocable).
Real CRLs signed by real CA keys, read by the real adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from devstack import certs
from tests.unit.test_client_crl_ordering import Clock, write_crl
from vault_service.adapters.client_crl import RevocationList
from vault_service.adapters.client_crl_lists import InvalidRevocationList, ca_key_fingerprint
from vault_service.entrypoints.metrics import observe_client_crl_refused


def _refused_ca_left_out() -> float:
    return REGISTRY.get_sample_value("tokenvault_client_crl_refused_total", {"reason": "ca_left_out"}) or 0.0


def _concatenate(path: Path, *lists: Path) -> None:
    path.write_bytes(b"".join(part.read_bytes() for part in lists))


def test_a_file_without_one_client_cas_list_is_refused_at_start_and_at_run_time(tmp_path: Path) -> None:
    old_ca = certs.create_authority(tmp_path / "old", name="tokenvault clients CA 2026")
    new_ca = certs.create_authority(tmp_path / "new", name="tokenvault clients CA 2027")
    bundle = [old_ca.cert, new_ca.cert]
    write_crl(old_ca, tmp_path / "old.pem", [0xA1], number=3)  # a stolen certificate of the old CA
    write_crl(new_ca, tmp_path / "new.pem", [], number=1)
    path = tmp_path / "crl.pem"
    _concatenate(path, tmp_path / "new.pem")  # what pki/cert/crl renders: the default issuer's list

    with pytest.raises(InvalidRevocationList) as refused:
        RevocationList(path, bundle)
    assert refused.value.reason == "ca_left_out"
    assert "tokenvault clients CA 2026" in str(refused.value)
    assert ca_key_fingerprint(old_ca.cert)[:16] in str(refused.value)
    assert "CA 2027" not in str(refused.value)

    _concatenate(path, tmp_path / "old.pem", tmp_path / "new.pem")  # one list per issuer
    clock = Clock()
    revocations = RevocationList(path, bundle, recheck_seconds=1, clock=clock, on_refused=observe_client_crl_refused)
    assert revocations.is_revoked("a1")
    before = _refused_ca_left_out()
    write_crl(new_ca, tmp_path / "new.pem", [0xB2], number=2)
    _concatenate(path, tmp_path / "new.pem")  # the default issuer's list alone again
    clock.now += 2
    assert revocations.is_revoked("a1"), "the old CA's revocation was lifted"
    assert not revocations.file_in_force()
    assert _refused_ca_left_out() == before + 1


def test_the_same_list_twice_counts_once_and_two_different_lists_of_a_ca_are_refused(tmp_path: Path) -> None:
    # OpenBao PKI: two issuers sharing a key (a CA re-issued with its key) share one list, and
    # rendering each issuer's list writes it twice.
    ca, other = certs.create_authority(tmp_path / "ca"), certs.create_authority(tmp_path / "other")
    write_crl(ca, tmp_path / "ca.pem", [0xA1], number=3)
    write_crl(other, tmp_path / "other.pem", [], number=1)
    path = tmp_path / "crl.pem"
    _concatenate(path, tmp_path / "ca.pem", tmp_path / "other.pem", tmp_path / "ca.pem")
    assert RevocationList(path, [ca.cert, other.cert]).is_revoked("a1")

    write_crl(ca, tmp_path / "ca-newer.pem", [0xA1, 0xA2], number=4)
    _concatenate(path, tmp_path / "ca.pem", tmp_path / "other.pem", tmp_path / "ca-newer.pem")
    with pytest.raises(InvalidRevocationList) as refused:
        RevocationList(path, [ca.cert, other.cert])
    assert refused.value.reason == "two_lists_of_a_ca"
