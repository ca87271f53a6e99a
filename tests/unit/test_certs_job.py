"""The compose stack's certificate job: issues per identity, keeps what is current, renews in time."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from cryptography import x509

from devstack.certs import load_authority
from devstack.certs_job import Identity, issued_by, main


def identities(tmp_path: Path) -> list[str]:
    uid = os.getuid()
    return [f"tokenvault-vault:{uid}:{tmp_path / 'vault'}:server", f"etl-service:{uid}:{tmp_path / 'etl'}"]


def run(tmp_path: Path, *options: str) -> None:
    assert main([f"--ca-dir={tmp_path / 'ca'}", *options, *identities(tmp_path)]) == 0


def snapshot(tmp_path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*.pem"))}


def test_each_identity_gets_its_own_directory_with_its_key_and_no_ca_key(tmp_path: Path) -> None:
    run(tmp_path)
    assert sorted(p.name for p in (tmp_path / "etl").iterdir()) == ["ca.pem", "etl-service-key.pem", "etl-service.pem"]
    assert sorted(p.name for p in (tmp_path / "vault").iterdir()) == [
        "ca.pem",
        "tokenvault-vault-key.pem",
        "tokenvault-vault.pem",
    ]
    assert oct((tmp_path / "etl" / "etl-service-key.pem").stat().st_mode & 0o777) == "0o400"
    assert oct((tmp_path / "ca").stat().st_mode & 0o777) == "0o700"
    server = x509.load_pem_x509_certificate((tmp_path / "vault" / "tokenvault-vault.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "vault-service" in names.get_values_for_type(x509.DNSName)


def test_a_second_run_keeps_current_certificates(tmp_path: Path) -> None:
    run(tmp_path)
    before = snapshot(tmp_path)
    run(tmp_path)
    assert snapshot(tmp_path) == before


def test_certificates_expiring_within_the_renewal_window_are_renewed(tmp_path: Path) -> None:
    run(tmp_path, "--leaf-days=5")  # already inside the default 10-day window
    before = snapshot(tmp_path)
    run(tmp_path)
    after = snapshot(tmp_path)
    assert after["etl/etl-service.pem"] != before["etl/etl-service.pem"]
    assert after["etl/etl-service-key.pem"] != before["etl/etl-service-key.pem"]
    assert after["ca/ca.pem"] == before["ca/ca.pem"]


def test_a_ca_near_its_end_is_replaced_and_everything_reissued_under_it(tmp_path: Path) -> None:
    run(tmp_path, "--ca-days=30")  # inside the default 60-day CA window
    old_ca = (tmp_path / "ca" / "ca.pem").read_bytes()
    run(tmp_path)
    authority = load_authority(tmp_path / "ca")
    assert (tmp_path / "ca" / "ca.pem").read_bytes() != old_ca
    for leaf in ("etl/etl-service.pem", "vault/tokenvault-vault.pem"):
        assert issued_by(tmp_path / leaf, authority)
    assert (tmp_path / "etl" / "ca.pem").read_bytes() == (tmp_path / "ca" / "ca.pem").read_bytes()


def test_a_certificate_from_another_ca_is_reissued(tmp_path: Path) -> None:
    run(tmp_path)
    other = tmp_path / "other"
    assert main([f"--ca-dir={other / 'ca'}", f"etl-service:{os.getuid()}:{other / 'etl'}"]) == 0
    (tmp_path / "etl" / "etl-service.pem").chmod(0o644)
    (tmp_path / "etl" / "etl-service.pem").write_bytes((other / "etl" / "etl-service.pem").read_bytes())
    run(tmp_path)
    assert issued_by(tmp_path / "etl" / "etl-service.pem", load_authority(tmp_path / "ca"))


def test_metrics_identities_come_from_a_ca_of_their_own_placed_beside_the_grpc_files(tmp_path: Path) -> None:
    uid, etl, scraper = os.getuid(), tmp_path / "etl", tmp_path / "scraper"
    identities = [
        f"etl-service:{uid}:{etl}",
        f"etl-metrics:{uid}:{etl}:server=etl-service,localhost:metrics",
        f"metrics-scraper:{uid}:{scraper}:metrics",
    ]
    assert main([f"--ca-dir={tmp_path / 'ca'}", *identities]) == 0
    grpc, metrics = load_authority(tmp_path / "ca"), load_authority(tmp_path / "ca" / "metrics")
    assert issued_by(etl / "etl-service.pem", grpc) and not issued_by(etl / "etl-service.pem", metrics)
    assert issued_by(etl / "etl-metrics.pem", metrics) and not issued_by(etl / "etl-metrics.pem", grpc)
    assert issued_by(scraper / "metrics-scraper.pem", metrics)
    assert (etl / "ca.pem").read_bytes() == grpc.cert_path.read_bytes()
    assert (etl / "metrics-ca.pem").read_bytes() == metrics.cert_path.read_bytes()
    assert sorted(p.name for p in scraper.iterdir()) == [
        "metrics-ca.pem",
        "metrics-scraper-key.pem",
        "metrics-scraper.pem",
    ]
    server = x509.load_pem_x509_certificate((etl / "etl-metrics.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["etl-service", "localhost"]


@pytest.mark.parametrize("text", ["a:1:/d:client", "a:1:/d:server:server=x", "a:x:/d", "a:1:/d:metrics:metrics", "a:1"])
def test_an_identity_with_an_unknown_or_repeated_option_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        Identity.parse(text)
