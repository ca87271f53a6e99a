"""The stack's client CA, a revocation list of the test's own, and a vault reading it.

Fixtures shared by the certificate revocation tests (first and second insider rounds): a test
module uses them by importing them (and naming them in its `__all__`). `crl` starts empty;
a test revokes a certificate by writing a new list over it with `certs.write_revocation_list`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import certs
from tests.conftest import RunningVault, running_vault
from tokenvault_client import ClientIdentity, VaultClient


@pytest.fixture
def authority(stack_env: dict[str, str]) -> certs.Authority:
    """The stack's certificate authority, which signs client certificates and revocation lists."""
    return certs.load_authority(Path(stack_env["STACK_DIR"]) / "certs")


@pytest.fixture
def crl(authority: certs.Authority, tmp_path: Path) -> Path:
    """A revocation list of the test's own, signed by the CA, revoking nothing yet."""
    path = tmp_path / "client-crl.pem"
    certs.write_revocation_list(authority, [], path)
    return path


@pytest.fixture
def crl_vault(stack_env: dict[str, str], crl: Path) -> Iterator[RunningVault]:
    """A vault service of the test's own, reading `crl` as its client CA's revocation list."""
    with running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CRL=str(crl)) as running:
        yield running


def reveals(vault: RunningVault, identity: ClientIdentity, token: str) -> bool:
    """Whether `identity` gets an answer to a reveal of `token` (raises when its certificate is refused)."""
    with VaultClient.connect(vault.address, identity) as client:
        return bool(client.detokenize([token], "CASE-REVOKE"))
