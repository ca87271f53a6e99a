"""The service's audit log on a migrated database of the test module's own, and the owner's DSN to plant with.

Shared by the tests that plant rows as the database owner and read them back through the
service's adapter (audit times out of range, the upkeep's read timeout and its bounded reads):
`vault_pool_of_its_own` gives the vault's pool on a new, migrated database; `audit_log_of_its_own`
the audit log on it with `rows` reveal rows appended through the service's append.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from psycopg_pool import ConnectionPool

from tests.integration.own_database import database_of_its_own
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.bootstrap import open_vault_pool
from vault_service.domain.audit import AuditEvent


def reveal_event(n: int) -> AuditEvent:
    """A one-token reveal's audit event, purpose `INC-<n>`."""
    return AuditEvent("svc", "detokenize", "ok: 1 revealed", 1, f"INC-{n}", "ip", revealed=(b"\1" * 16,))


@contextmanager
def vault_pool_of_its_own(stack_env: dict[str, str], prefix: str) -> Iterator[tuple[ConnectionPool, str]]:
    """The vault's pool (2 connections) on a new, migrated database named `prefix_<random>`, and the owner's DSN."""
    with database_of_its_own(stack_env, prefix, migrated=True) as env:
        pool = open_vault_pool(env["PG_VAULT_DSN"], 2)
        try:
            yield pool, env["PG_ADMIN_DSN"]
        finally:
            pool.close()


@contextmanager
def audit_log_of_its_own(stack_env: dict[str, str], prefix: str, rows: int) -> Iterator[tuple[PostgresAuditLog, str]]:
    """The service's audit log on a database of its own with `rows` reveal rows appended, and the owner's DSN."""
    with vault_pool_of_its_own(stack_env, prefix) as (pool, owner_dsn):
        log = PostgresAuditLog(pool)
        for n in range(rows):
            log.append(reveal_event(n))
        yield log, owner_dsn
