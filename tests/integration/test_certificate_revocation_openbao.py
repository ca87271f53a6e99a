"""The client CA's own lists, from OpenBao PKI set up as docs/production.md says, against a running vault (attack 18).

OpenBao's PKI publishes, besides its full CRL (pki/cert/crl), a delta CRL (pki/cert/delta-crl:
only the revocations since the full list, marked by a critical Delta CRL Indicator) and numbers
each list it builds (CRL Number), several in the same second when certificates are revoked in a
row. Whoever can write the vault's CRL file can put any of them there: the CA signed them all.
A delta CRL must not be taken as the full list (it lifted every revocation of the base), and a
lower-numbered list must not come back (the same-second one re-admitted a revoked certificate).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import pytest
from cryptography import x509

from devstack import certs
from tests.conftest import RunningVault, running_vault
from tokenvault_client import ClientIdentity, TokenType, Unauthenticated, VaultClient

REPO = Path(__file__).resolve().parents[2]
MOUNT = "pki-crl-a18"


@pytest.fixture
def pki(stack_env: dict[str, str]) -> Iterator[hvac.Client]:
    """A client CA of the test's own on the stack's OpenBao, its CRL configured as docs/production.md says."""
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    root.sys.enable_secrets_engine("pki", path=MOUNT)
    try:
        root.write_data(f"{MOUNT}/root/generate/internal", data={"common_name": "attack 18 clients CA", "ttl": "24h"})
        root.write_data(
            f"{MOUNT}/roles/tokenvault-clients",
            data={"allow_any_name": True, "client_flag": True, "server_flag": False, "ttl": "1h"},
        )
        guide = (REPO / "docs" / "production.md").read_text()
        (documented,) = re.findall(r"vault write pki/config/crl ([^\n]*)", guide)
        root.write_data(f"{MOUNT}/config/crl", data=dict(pair.split("=", 1) for pair in documented.split()))
        config = root.read(f"{MOUNT}/config/crl")["data"]
        assert config["auto_rebuild"] is False and config["expiry"] == "72h"
        yield root
    finally:
        root.sys.disable_secrets_engine(MOUNT)


def _issue(pki: hvac.Client, server_ca: Path, directory: Path, name: str) -> tuple[ClientIdentity, str]:
    """A client certificate of the test's CA for the stack's `analyst`, and its serial (OpenBao's form)."""
    issued = pki.write_data(f"{MOUNT}/issue/tokenvault-clients", data={"common_name": "analyst"})["data"]
    (directory / f"{name}.pem").write_text(issued["certificate"])
    (directory / f"{name}-key.pem").write_text(issued["private_key"])
    identity = ClientIdentity(server_ca, directory / f"{name}.pem", directory / f"{name}-key.pem", "localhost")
    return identity, issued["serial_number"]


def _render(pki: hvac.Client, path: str, crl: Path) -> bytes:
    """What a Vault agent template of `path` writes to the CRL file (in one step)."""
    pem: bytes = pki.read(f"{MOUNT}/{path}")["data"]["certificate"].encode()
    staged = crl.with_name(crl.name + ".new")
    staged.write_bytes(pem)
    staged.replace(crl)
    return pem


def _reveals(vault: RunningVault, identity: ClientIdentity, token: str) -> bool:
    """True when answered, False when the certificate is refused."""
    try:
        with VaultClient.connect(vault.address, identity) as client:
            return bool(client.detokenize([token], "CASE-REVOKE"))
    except Unauthenticated:
        return False


def _settle(vault: RunningVault, identity: ClientIdentity, token: str, expected: bool) -> None:
    deadline = time.monotonic() + 10
    while _reveals(vault, identity, token) != expected:
        assert time.monotonic() < deadline, f"reveal never became {expected}"
        time.sleep(0.5)


def test_the_cas_delta_crl_and_an_older_numbered_list_do_not_lift_revocations(
    stack_env: dict[str, str], pki: hvac.Client, tmp_path: Path, client_for: Callable[..., VaultClient]
) -> None:
    server_ca = certs.load_authority(Path(stack_env["STACK_DIR"]) / "certs").cert_path
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_text(pki.read(f"{MOUNT}/cert/ca")["data"]["certificate"])
    first, first_serial = _issue(pki, server_ca, tmp_path, "first")
    second, second_serial = _issue(pki, server_ca, tmp_path, "second")
    (token,) = client_for("etl-service").tokenize([(TokenType.IP, "198.51.100.79")])
    assert isinstance(token, str)

    crl = tmp_path / "client-crl.pem"
    pki.write_data(f"{MOUNT}/revoke", data={"serial_number": first_serial})
    base = _render(pki, "cert/crl", crl)  # set up as documented, the revocation is in the full list at once
    with running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CA=str(client_ca), TOKENVAULT_TLS_CLIENT_CRL=str(crl)) as mine:
        assert not _reveals(mine, first, token) and _reveals(mine, second, token)

        # A CA set up otherwise (auto_rebuild, delta CRLs) publishes the second revocation in a delta.
        pki.write_data(f"{MOUNT}/config/crl", data={"auto_rebuild": True, "enable_delta": True, "expiry": "72h"})
        pki.read(f"{MOUNT}/crl/rotate")
        pki.write_data(f"{MOUNT}/revoke", data={"serial_number": second_serial})
        pki.read(f"{MOUNT}/crl/rotate-delta")
        delta = _render(pki, "cert/delta-crl", crl)  # only the second, since the base
        assert x509.load_pem_x509_crl(delta).extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        time.sleep(3)
        assert not _reveals(mine, first, token), "the delta CRL lifted the full list's revocation"

        pki.read(f"{MOUNT}/crl/rotate")
        full = _render(pki, "cert/crl", crl)  # the CA's full list, numbered after the base: both revoked
        assert full != base
        _settle(mine, second, token, expected=False)
        staged = crl.with_name(crl.name + ".old")
        staged.write_bytes(base)  # the lower-numbered list put back (OpenBao may build both in one second)
        staged.replace(crl)
        time.sleep(3)
        assert not _reveals(mine, second, token), "an older numbered list lifted a revocation"
        assert not _reveals(mine, first, token)
