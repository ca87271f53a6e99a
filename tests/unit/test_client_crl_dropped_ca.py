"""A client CA's revocations lifted by leaving its list out of the CRL file (third insider round, 3 Dec).

vault_service/adapters/client_crl.py: "neither a half-written file nor an older list lets a
revoked certificate back in"; a file holds one list per client CA during a CA rotation. The
roll-back check compares only the CAs present in both the new file and the list in force: a
file that simply leaves one CA's list out is taken in, and every certificate that CA revoked -
while the vault still trusts that CA - works again. Real CRLs signed by real CA keys, read by
the real adapter (no fakes).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from devstack import certs
from vault_service.adapters.client_crl import RevocationList


def test_leaving_a_trusted_cas_list_out_of_the_file_does_not_lift_its_revocations(tmp_path: Path) -> None:
    old_ca, new_ca = certs.create_authority(tmp_path / "old"), certs.create_authority(tmp_path / "new")
    certs.write_revocation_list(old_ca, [0xA1], tmp_path / "old.pem")  # a stolen certificate of the old CA
    certs.write_revocation_list(new_ca, [], tmp_path / "new.pem")
    path = tmp_path / "crl.pem"
    path.write_bytes((tmp_path / "old.pem").read_bytes() + (tmp_path / "new.pem").read_bytes())
    now = [0.0]
    revocations = RevocationList(path, [old_ca.cert, new_ca.cert], recheck_seconds=1, clock=lambda: now[0])
    assert revocations.is_revoked("a1")

    path.write_bytes((tmp_path / "new.pem").read_bytes())  # whoever can write the file drops the old CA's list
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    now[0] = 5.0

    assert revocations.is_revoked("a1"), "the old CA is still trusted, yet its revocation was lifted"


def test_an_older_list_of_one_of_two_same_named_cas_put_back_does_not_lift_its_revocation(tmp_path: Path) -> None:
    # A CA rotated in place keeps its name (devstack.certs.create_authority's default): the lists in
    # force are kept per issuer *name*, the last list of that name in the file wins, so the old CA's
    # list from before the revocation goes back in behind a current list of the new CA.
    old_ca, new_ca = certs.create_authority(tmp_path / "old"), certs.create_authority(tmp_path / "new")
    assert old_ca.cert.subject == new_ca.cert.subject
    an_hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    certs.write_revocation_list(old_ca, [], tmp_path / "old-before.pem", published=an_hour_ago)
    certs.write_revocation_list(old_ca, [0xA1], tmp_path / "old-now.pem")
    certs.write_revocation_list(new_ca, [], tmp_path / "new.pem")
    path = tmp_path / "crl.pem"
    path.write_bytes((tmp_path / "old-now.pem").read_bytes() + (tmp_path / "new.pem").read_bytes())
    now = [0.0]
    revocations = RevocationList(path, [old_ca.cert, new_ca.cert], recheck_seconds=1, clock=lambda: now[0])
    assert revocations.is_revoked("a1")

    path.write_bytes((tmp_path / "old-before.pem").read_bytes() + (tmp_path / "new.pem").read_bytes())
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    now[0] = 5.0

    assert revocations.is_revoked("a1"), "the old CA's list from before the revocation was put back and taken in"
