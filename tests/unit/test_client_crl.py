"""The client CRL: taken in when it changes, never from a file the CA did not sign."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from devstack import certs
from vault_service.adapters.client_crl import RevocationList
from vault_service.adapters.client_crl_lists import InvalidRevocationList


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _bump(path: Path, seconds: int) -> None:
    """Give the file a later modification time (a rewrite within the same clock tick looks unchanged)."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 1_000_000_000))


def test_a_new_list_is_taken_in_once_the_recheck_interval_has_passed(tmp_path: Path) -> None:
    ca = certs.create_authority(tmp_path)
    path = tmp_path / "crl.pem"
    certs.write_revocation_list(ca, [0xABC], path)
    clock = Clock()
    revocations = RevocationList(path, [ca.cert], recheck_seconds=2, clock=clock)
    assert revocations.is_revoked("abc") and not revocations.is_revoked("def")
    certs.write_revocation_list(ca, [0xABC, 0xDEF], path)
    _bump(path, 1)
    clock.now = 1.0
    assert not revocations.is_revoked("def")  # not looked at again yet
    clock.now = 2.5
    assert revocations.is_revoked("def")


def test_a_broken_or_foreign_list_keeps_the_last_good_one_in_force(tmp_path: Path) -> None:
    ca = certs.create_authority(tmp_path)
    path = tmp_path / "crl.pem"
    certs.write_revocation_list(ca, [0xABC], path)
    clock = Clock()
    revocations = RevocationList(path, [ca.cert], recheck_seconds=1, clock=clock)
    certs.write_revocation_list(certs.create_authority(tmp_path / "other"), [], path)
    _bump(path, 1)
    clock.now = 5.0
    assert revocations.is_revoked("abc")
    path.write_text("half a file")
    _bump(path, 2)
    clock.now = 10.0
    assert revocations.is_revoked("abc")
    path.unlink()
    clock.now = 15.0
    assert revocations.is_revoked("abc")


@pytest.mark.parametrize("content", ["not a CRL", None])
def test_an_unusable_list_at_start_is_an_error(tmp_path: Path, content: str | None) -> None:
    ca = certs.create_authority(tmp_path)
    path = tmp_path / "crl.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidRevocationList, match="cannot read the client CRL"):
        RevocationList(path, [ca.cert])


def test_an_older_list_put_back_is_not_taken_in(tmp_path: Path) -> None:
    ca = certs.create_authority(tmp_path)
    path = tmp_path / "crl.pem"
    now = datetime.datetime.now(datetime.UTC)
    certs.write_revocation_list(ca, [], path, published=now - datetime.timedelta(hours=1))
    older = path.read_bytes()
    clock = Clock()
    revocations = RevocationList(path, [ca.cert], recheck_seconds=1, clock=clock)
    certs.write_revocation_list(ca, [0xABC], path, published=now)
    _bump(path, 1)
    clock.now = 2.0
    assert revocations.is_revoked("abc")
    path.write_bytes(older)
    _bump(path, 2)
    clock.now = 4.0
    assert revocations.is_revoked("abc")


def test_an_expired_list_stops_the_start(tmp_path: Path) -> None:
    ca = certs.create_authority(tmp_path)
    path = tmp_path / "crl.pem"
    certs.write_revocation_list(
        ca, [], path, published=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
    )
    with pytest.raises(InvalidRevocationList, match="expired"):
        RevocationList(path, [ca.cert])


def test_one_list_per_client_ca_in_one_file_during_a_ca_rotation(tmp_path: Path) -> None:
    old_ca, new_ca = certs.create_authority(tmp_path / "old"), certs.create_authority(tmp_path / "new")
    certs.write_revocation_list(old_ca, [0xA1], tmp_path / "old.pem")
    certs.write_revocation_list(new_ca, [0xB2], tmp_path / "new.pem")
    path = tmp_path / "crl.pem"
    path.write_bytes((tmp_path / "old.pem").read_bytes() + (tmp_path / "new.pem").read_bytes())
    revocations = RevocationList(path, [old_ca.cert, new_ca.cert])
    assert revocations.is_revoked("a1") and revocations.is_revoked("b2")


def test_two_lists_of_one_ca_in_a_file_are_refused(tmp_path: Path) -> None:
    ca = certs.create_authority(tmp_path)
    certs.write_revocation_list(ca, [0xA1], tmp_path / "now.pem")
    certs.write_revocation_list(ca, [], tmp_path / "again.pem")
    path = tmp_path / "crl.pem"
    path.write_bytes((tmp_path / "now.pem").read_bytes() + (tmp_path / "again.pem").read_bytes())
    with pytest.raises(InvalidRevocationList, match="two lists of the client CA"):
        RevocationList(path, [ca.cert])


def test_same_named_cas_each_keep_their_own_list_in_force(tmp_path: Path) -> None:
    # A CA rotated in place keeps its name: each list is kept by the CA key that signed it.
    old_ca, new_ca = certs.create_authority(tmp_path / "old"), certs.create_authority(tmp_path / "new")
    assert old_ca.cert.subject == new_ca.cert.subject
    certs.write_revocation_list(old_ca, [0xA1], tmp_path / "old.pem")
    certs.write_revocation_list(new_ca, [], tmp_path / "new.pem")
    path = tmp_path / "crl.pem"
    path.write_bytes((tmp_path / "old.pem").read_bytes() + (tmp_path / "new.pem").read_bytes())
    clock = Clock()
    revocations = RevocationList(path, [old_ca.cert, new_ca.cert], recheck_seconds=1, clock=clock)
    certs.write_revocation_list(new_ca, [0xB2], tmp_path / "new.pem")
    path.write_bytes((tmp_path / "new.pem").read_bytes() + (tmp_path / "old.pem").read_bytes())  # any order
    _bump(path, 1)
    clock.now = 2.0
    assert revocations.is_revoked("a1") and revocations.is_revoked("b2")


def test_a_list_in_force_past_its_next_update_stays_in_force_and_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = certs.create_authority(tmp_path)
    path = tmp_path / "crl.pem"
    certs.write_revocation_list(ca, [0xABC], path)  # next update: a week from now
    today = [datetime.datetime.now(datetime.UTC)]
    clock = Clock()
    revocations = RevocationList(path, [ca.cert], recheck_seconds=1, clock=clock, utc_now=lambda: today[0])
    clock.now = 2.0
    assert revocations.is_revoked("abc")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    today[0] += datetime.timedelta(days=8)
    for tick in (4.0, 6.0, 8.0):
        clock.now = tick
        assert revocations.is_revoked("abc")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "past its next update" in warnings[0].getMessage()
