"""A revoked client certificate against whoever can put an older revocation list in place (second insider round).

tests/integration/test_certificate_revocation.py: a list "planted by whoever can write the
file is not taken in: the revocation stays in force rather than being lifted". A forged list
is refused because the CA did not sign it; but every list the CA published before the
revocation is signed by it too. The vault takes in any CA-signed list, whatever its number
(CRL number extension) or its dates, so an older one lifts the revocation.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509

from devstack import certs
from tests.conftest import RunningVault, stack_identity
from tests.integration.revocation_lists import authority, crl, crl_vault, reveals
from tokenvault_client import ClientIdentity, TokenType, Unauthenticated, VaultClient

__all__ = ["authority", "crl", "crl_vault"]  # fixtures used here, shared with the first round's tests


def test_an_older_list_signed_by_the_ca_does_not_lift_a_revocation(
    stack_env: dict[str, str], crl_vault: RunningVault, authority: certs.Authority, crl: Path, tmp_path: Path
) -> None:
    published_before = crl.read_bytes()  # the CA's list before the revocation: signed, genuine, older
    stolen = certs.issue(authority, tmp_path, "analyst")
    stolen_identity = ClientIdentity(authority.cert_path, stolen.cert, stolen.key, "localhost")
    with VaultClient.connect(crl_vault.address, stack_identity(stack_env, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, "198.51.100.78")])
    assert isinstance(token, str)
    serial = x509.load_pem_x509_certificate(stolen.cert.read_bytes()).serial_number
    time.sleep(1.1)  # the next list is issued later than the first (its thisUpdate moves on)
    certs.write_revocation_list(authority, [serial], crl)
    deadline = time.monotonic() + 10
    while True:
        try:
            reveals(crl_vault, stolen_identity, token)
        except Unauthenticated:
            break
        assert time.monotonic() < deadline, "the revocation never took effect"
        time.sleep(0.5)

    staged = crl.with_name(crl.name + ".old")  # whoever writes the file puts the older list back
    staged.write_bytes(published_before)
    staged.replace(crl)
    time.sleep(3)
    with pytest.raises(Unauthenticated, match="revoked"):
        reveals(crl_vault, stolen_identity, token)
