"""The client CRL: taken in when it changes, never from a file the CA did not sign."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack import certs
from vault_service.adapters.client_crl import InvalidRevocationList, RevocationList


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
