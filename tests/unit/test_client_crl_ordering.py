"""Which list of the client CA is the full, newest one (attack 18, finding 3).

Each list here is a real CRL signed by the test's CA with the `cryptography` library, carrying
what Vault/OpenBao PKI put in theirs: a CRL number, and for a delta CRL the Delta CRL Indicator.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from devstack import certs
from vault_service.adapters.client_crl import RevocationList
from vault_service.adapters.client_crl_lists import InvalidRevocationList

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_crl(
    ca: certs.Authority,
    path: Path,
    serials: Sequence[int],
    published: datetime.datetime = NOW,
    number: int | None = None,
    delta_of: int | None = None,
) -> None:
    """A CRL of `ca` revoking `serials`, numbered `number`; a delta CRL of base list `delta_of` if given."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(published)
        .next_update(published + datetime.timedelta(hours=72))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    if delta_of is not None:
        builder = builder.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(published).build()
        )
    existed = path.exists()
    previous = path.stat().st_mtime_ns if existed else 0
    path.write_bytes(builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    if existed:  # a rewrite within the same clock tick would look unchanged
        os.utime(path, ns=(previous + 1_000_000_000, previous + 1_000_000_000))


def watch(path: Path, ca: certs.Authority, clock: Clock) -> RevocationList:
    return RevocationList(path, [ca.cert], recheck_seconds=1, clock=clock)


def next_look(revocations: RevocationList, clock: Clock, serial: str) -> bool:
    clock.now += 2
    return revocations.is_revoked(serial)


def test_a_delta_crl_written_over_the_full_list_does_not_lift_its_revocations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [0xA], number=5)  # the base list revokes A
    revocations = watch(path, ca, clock)
    write_crl(ca, path, [0xB], published=NOW + datetime.timedelta(seconds=8), number=6, delta_of=5)  # B since
    assert next_look(revocations, clock, "a"), "the delta CRL lifted the base list's revocation"
    assert not revocations.is_revoked("b")
    assert any("delta CRL" in str(getattr(r, "error", "")) for r in caplog.records if r.levelname == "ERROR")


def test_a_delta_crl_stops_the_start(tmp_path: Path) -> None:
    ca, path = certs.create_authority(tmp_path), tmp_path / "crl.pem"
    write_crl(ca, path, [0xB], number=6, delta_of=5)
    with pytest.raises(InvalidRevocationList, match="delta CRL"):
        watch(path, ca, Clock())


def test_a_list_with_an_unknown_critical_extension_is_refused(tmp_path: Path) -> None:
    ca, path = certs.create_authority(tmp_path), tmp_path / "crl.pem"
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW)
        .next_update(NOW + datetime.timedelta(hours=1))
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), True)
        .sign(ca.key, hashes.SHA256())
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(InvalidRevocationList, match="critical extension"):
        watch(path, ca, Clock())


def test_of_two_lists_published_in_the_same_second_the_lower_numbered_one_does_not_come_back(
    tmp_path: Path,
) -> None:
    # OpenBao, two revocations in a row: list 5 revokes X, list 7 revokes X and Y, same thisUpdate.
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [0xA], number=5)
    first = path.read_bytes()
    revocations = watch(path, ca, clock)
    write_crl(ca, path, [0xA, 0xB], number=7)
    assert next_look(revocations, clock, "b")
    path.write_bytes(first)
    os.utime(path, ns=(path.stat().st_mtime_ns + 5_000_000_000,) * 2)
    assert next_look(revocations, clock, "b"), "the lower-numbered list of the same second lifted the revocation"


def test_the_crl_number_orders_lists_whatever_their_publish_times(tmp_path: Path) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [0xA], published=NOW, number=9)
    revocations = watch(path, ca, clock)
    write_crl(ca, path, [], published=NOW + datetime.timedelta(seconds=30), number=8)  # later, but numbered before
    assert next_look(revocations, clock, "a")
    write_crl(ca, path, [0xA, 0xB], published=NOW + datetime.timedelta(seconds=1), number=10)
    assert next_look(revocations, clock, "b")


def test_a_list_numbered_like_the_one_in_force_with_other_contents_is_refused(tmp_path: Path) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [0xA], number=3)
    revocations = watch(path, ca, clock)
    write_crl(ca, path, [], published=NOW + datetime.timedelta(seconds=5), number=3)
    assert next_look(revocations, clock, "a")


def test_once_the_ca_numbers_its_lists_an_unnumbered_list_is_refused(tmp_path: Path) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [0xA], number=3)
    revocations = watch(path, ca, clock)
    write_crl(ca, path, [], published=NOW + datetime.timedelta(seconds=5))
    assert next_look(revocations, clock, "a")


def test_unnumbered_lists_are_ordered_by_publish_time_and_a_same_second_one_may_only_add(tmp_path: Path) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [0xA, 0xB])
    revocations = watch(path, ca, clock)
    write_crl(ca, path, [0xA])  # same second, fewer revocations: which is newer cannot be told
    assert next_look(revocations, clock, "b")
    write_crl(ca, path, [0xA, 0xB, 0xD])  # same second, only adds: lifts nothing
    assert next_look(revocations, clock, "d")
    write_crl(ca, path, [0xA, 0xB, 0xC], published=NOW + datetime.timedelta(seconds=1))
    assert next_look(revocations, clock, "c")
    same = path.read_bytes()
    path.write_bytes(same)  # the same list written again is no change
    os.utime(path, ns=(path.stat().st_mtime_ns + 7_000_000_000,) * 2)
    assert next_look(revocations, clock, "c")


def test_a_list_published_in_the_future_is_refused_and_does_not_hold_back_the_real_next_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [], number=1)
    revocations = watch(path, ca, clock)
    write_crl(ca, path, [], published=NOW + datetime.timedelta(days=1), number=2)  # a CA clock a day ahead
    assert not next_look(revocations, clock, "a")
    assert any("in the future" in str(getattr(r, "error", "")) for r in caplog.records)
    write_crl(ca, path, [0xA], published=NOW + datetime.timedelta(seconds=2), number=3)
    assert next_look(revocations, clock, "a"), "the future-dated list held back the CA's real next list"


def test_a_list_published_in_the_future_stops_the_start_but_a_small_skew_does_not(tmp_path: Path) -> None:
    ca, path = certs.create_authority(tmp_path), tmp_path / "crl.pem"
    write_crl(ca, path, [], published=NOW + datetime.timedelta(hours=1), number=1)
    with pytest.raises(InvalidRevocationList, match="in the future"):
        watch(path, ca, Clock())
    write_crl(ca, path, [0xA], published=NOW + datetime.timedelta(minutes=2), number=2)
    assert watch(path, ca, Clock()).is_revoked("a")
