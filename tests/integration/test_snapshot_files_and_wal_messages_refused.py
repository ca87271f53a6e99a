"""No login of the stack writes exported-snapshot files or WAL messages (migration 0055; attack 32, F3).

`pg_export_snapshot()` was PUBLIC's: each call leaves a file in the data directory's pg_snapshots until the
caller's transaction ends, counted by no bound (not a temporary file, no lock entry, no NOTIFY): the tester's
analyst, ETL and watchdog logins each filled a 400 MB data volume in 1.4 s from one idle transaction, and the ETL's
next insert failed for want of disk. `pg_logical_emit_message()` was PUBLIC's too: an analyst, who may write no
table, wrote 500 MB of WAL in 1.2 s. Each test does the first step as each login, on the stack's real PostgreSQL.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from tests.integration.member_logins import logins_beside_the_watchdog

__all__ = ["logins_beside_the_watchdog"]  # the fixture, used by name

LOGINS = ("PG_ANALYST_DSN", "PG_ETL_DSN", "PG_WATCHDOG_DSN", "PG_VAULT_DSN")
"""An analyst's, the ETL's, the lock watchdog's and the serving role's logins (none a superuser)."""


STATEMENTS = {
    "pg_export_snapshot": "SELECT pg_catalog.pg_export_snapshot()",
    "pg_logical_emit_message": "SELECT pg_catalog.pg_logical_emit_message(false, 'a32', repeat('x', 1000))",
}


@pytest.mark.parametrize("function", sorted(STATEMENTS))
@pytest.mark.parametrize("login", LOGINS)
def test_no_login_of_the_stack_exports_a_snapshot_or_writes_a_wal_message(
    logins_beside_the_watchdog: dict[str, str], login: str, function: str
) -> None:
    """Before 0055: every login's call returned (a snapshot's name, a WAL position) and wrote to the data disk."""
    with psycopg.connect(logins_beside_the_watchdog[login], connect_timeout=10) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # where an exported snapshot would be kept
        with pytest.raises(errors.InsufficientPrivilege, match=f"permission denied for function {function}"):
            conn.execute(STATEMENTS[function])
        conn.rollback()


def test_both_functions_are_revoked_from_public_and_a_superuser_still_exports_a_snapshot(
    stack_env: dict[str, str],
) -> None:
    """Every form of both (pg_logical_emit_message has a text and a bytea form); what 0055 leaves: a superuser's."""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        rows = admin.execute(
            "SELECT p.oid::regprocedure::text, has_function_privilege('public', p.oid, 'EXECUTE')"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'pg_catalog' AND p.proname IN ('pg_export_snapshot', 'pg_logical_emit_message')"
        ).fetchall()
        assert len(rows) == 3, rows
        assert [name for name, public in rows if public] == []
        # The embedded stack's admin login is the cluster's superuser (initdb's), as a backup's pg_dump -j may be.
        admin.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        exported = admin.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
        assert exported is not None and exported[0]
        admin.execute("ROLLBACK")
