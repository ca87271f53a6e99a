"""The audit reports made by the service for a client certificate (AuditReports), wired to the running vault.

Each report reads on a connection of its own (the serving pool is never held by a read of the
whole log), opened for the report and closed after it, whose statements end after the report's
time (`statement_timeout`): a report that outlives its call's deadline stops reading. It verifies
with the service's own Vault session (the signing key's public keys), its loaded audit keys and its
own exported checkpoint copy (TOKENVAULT_AUDIT_CHECKPOINT_FILE); the caller names none of them.
"""

from __future__ import annotations

from psycopg_pool import PoolTimeout

from vault_service.adapters.postgres import PostgresAuditLog, PostgresTokenStore
from vault_service.adapters.postgres.session_settings import session_settings_with
from vault_service.adapters.transit import verify_signature
from vault_service.bootstrap import Bootstrapped, open_vault_pool
from vault_service.config import VaultServiceConfig
from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.errors import DatabaseUnreachable
from vault_service.service.audit_reports import AuditReports, Verify
from vault_service.service.audit_verify import COPY_LAG_INTERVALS, FullAuditReport, verify_audit_and_erasures


def report_verifier(wired: Bootstrapped, config: VaultServiceConfig) -> Verify:
    """`verify(max_copy_lag, seconds)`: the full verification on a connection of its own, ended after `seconds`."""

    def verify(max_copy_lag: float, seconds: float) -> FullAuditReport:
        settings = {
            **session_settings_with(config.db_synchronous_commit),
            "statement_timeout": str(max(1, int(seconds * 1000))),
        }
        try:
            pool = open_vault_pool(config.database_dsn, 1, settings)
        except PoolTimeout:
            raise DatabaseUnreachable("the vault database cannot be reached; retry later") from None
        try:
            return verify_audit_and_erasures(
                PostgresAuditLog(pool, AppendedRows()),
                PostgresTokenStore(pool),
                wired.keys.ring.audit_keys,
                wired.signer.public_keys(),
                verify_signature,
                config.audit_checkpoint_file,
                max_copy_lag,
            )
        finally:
            pool.close()

    return verify


def audit_reports_of(wired: Bootstrapped, config: VaultServiceConfig) -> AuditReports:
    """The service's audit reports: authorized by the policy (refusals audited), rows in the service's audit log."""
    return AuditReports(
        wired.vault.authorize_audit_report,
        report_verifier(wired, config),
        wired.audit,
        wired.keys,
        COPY_LAG_INTERVALS * config.audit_checkpoint_seconds,
        wired.vault.refuse_audit_report,
    )
