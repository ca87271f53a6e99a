"""Wires the real adapters into a TokenVault (the composition root)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres import PostgresAuditLog, PostgresKeyStore, PostgresTokenStore
from vault_service.adapters.transit import TransitKeyWrapper, connect_vault
from vault_service.config import VaultServiceConfig
from vault_service.domain.policy import load_policy
from vault_service.service.keyring import load_keyring
from vault_service.service.vault import TokenVault


@dataclass
class Bootstrapped:
    """The wired vault and the resources to close at shutdown."""

    vault: TokenVault
    pool: ConnectionPool


def bootstrap(config: VaultServiceConfig) -> Bootstrapped:
    """Connect to Vault and Postgres, load the keys and the policy; raise with a clear message."""
    policy = load_policy(config.policy_file)
    client = connect_vault(config.vault_address, config.vault_token, config.vault_role_id, config.vault_secret_id_file)
    wrapper = TransitKeyWrapper(client, config.kek_name, config.transit_mount)
    pool = ConnectionPool(
        config.database_dsn,
        min_size=1,
        max_size=config.db_pool_size,
        open=False,
        name="vault",
        kwargs={"application_name": "tokenvault-vault"},
    )
    pool.open(wait=True, timeout=15)
    keyring = load_keyring(PostgresKeyStore(pool, config.kek_name), wrapper)
    vault = TokenVault(PostgresTokenStore(pool), keyring, policy, PostgresAuditLog(pool))
    return Bootstrapped(vault, pool)
