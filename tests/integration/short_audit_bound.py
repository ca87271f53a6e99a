"""A vault on an OpenBao of the test's own, its audit rows allowed to stay unanchored only briefly (chaos 50).

For the tests that take its OpenBao away or revoke its token while it serves: a checkpoint signed every second,
reveals refused once rows stayed unanchored UNCHECKED_SECONDS; the ETL's and an analyst's clients (no retries) and
one token the ETL had minted before anything went wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.fresh_values import fresh_value
from tests.integration.test_vault_dependencies import PrivateVault
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import NO_RETRY, TokenType, VaultClient

UNCHECKED_SECONDS = 6
"""TOKENVAULT_AUDIT_UNCHECKED_SECONDS of the vault: how long its reveals go on with no checkpoint signed."""


@dataclass
class BoundVault:
    """The running vault, its ETL's and an analyst's clients, and a token minted while all was well."""

    vault: RunningVault
    etl: VaultClient
    analyst: VaultClient
    token: str


@contextmanager
def vault_with_a_short_audit_bound(stack_env: dict[str, str], private: PrivateVault) -> Iterator[BoundVault]:
    """A vault on `private`'s OpenBao and database, checkpoints every second, reveals refused after
    UNCHECKED_SECONDS unanchored; stopped, its clients closed, on leaving."""
    settings = {
        **private.overrides,
        "TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1",
        "TOKENVAULT_AUDIT_UNCHECKED_SECONDS": str(UNCHECKED_SECONDS),
    }
    with running_vault(stack_env, **settings) as vault:
        etl = VaultClient.connect(vault.address, stack_identity(stack_env, "etl-service"), retry=NO_RETRY)
        analyst = VaultClient.connect(vault.address, stack_identity(stack_env, "analyst"), retry=NO_RETRY)
        with etl, analyst:
            (token,) = etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP))])
            yield BoundVault(vault, etl, analyst, str(token))
