"""PostgreSQL adapters for the vault schema, one module per concern: keys, tokens, the audit log.

The service connects as role `tokenvault_vault`, which may read and insert here, call the
audited functions that change a stored value, and update only the wrapping of data keys.
"""

from vault_service.adapters.postgres.audit import PostgresAuditLog
from vault_service.adapters.postgres.keys import PostgresKeyStore
from vault_service.adapters.postgres.tokens import PostgresTokenStore

__all__ = ["PostgresAuditLog", "PostgresKeyStore", "PostgresTokenStore"]
