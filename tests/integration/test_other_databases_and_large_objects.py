"""No login of the stack reaches another database of the cluster, nor writes a large object (migration 0049).

Attack 30: PostgreSQL's lock table is one per cluster, but the revocations that keep the serving role, the ETL and
analysts from filling it (0045, 0046) and the lock watch (0047) are per database. From `postgres` - CONNECT was
PUBLIC's - each of the three logins filled the table with session-level advisory locks in about a second and every
vault call failed (F1). In the vault's own database the large-object functions were PUBLIC's: an analyst's
`lo_create` under savepoints, or `lo_unlink(lo_create(0))` in one statement, filled it too, and `lo_from_bytea`
committed data of the analyst's choosing (F5). Each test here does the attacker's first step as that login, on the
stack's real PostgreSQL, and is refused.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

LOGINS = ("PG_VAULT_DSN", "PG_ETL_DSN", "PG_ANALYST_DSN")


@pytest.mark.parametrize("database", ["postgres", "template1"])
@pytest.mark.parametrize("login", LOGINS)
def test_no_login_of_the_stack_connects_to_another_database(
    stack_env: dict[str, str], login: str, database: str
) -> None:
    """Before 0049: connected, and `SELECT pg_advisory_lock(k)` over 95,000 keys filled the lock table."""
    elsewhere = make_conninfo(stack_env[login], dbname=database)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(elsewhere, connect_timeout=10).close()


def test_the_logins_still_connect_to_their_own_database(stack_env: dict[str, str]) -> None:
    """What 0049 leaves: each login's own database (the one migrated)."""
    for login in LOGINS:
        with psycopg.connect(stack_env[login], connect_timeout=10) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
        assert row == (conninfo_to_dict(stack_env[login])["dbname"],)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT pg_catalog.lo_create(0)",
        "SELECT pg_catalog.lo_from_bytea(0, '\\x00'::bytea)",
        "SELECT count(pg_catalog.lo_unlink(pg_catalog.lo_create(0))) FROM generate_series(1, 100)",
        "SELECT pg_catalog.lo_creat(-1)",
    ],
)
@pytest.mark.parametrize("login", LOGINS)
def test_no_login_of_the_stack_writes_a_large_object(stack_env: dict[str, str], login: str, statement: str) -> None:
    """Before 0049: each wrote one (an analyst too), and nested in savepoints they filled the lock table."""
    with psycopg.connect(stack_env[login], connect_timeout=10) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for function lo_"):
            conn.execute(statement)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM pg_catalog.pg_largeobject_metadata").fetchone() == (0,)


def test_every_large_object_function_is_revoked_from_public(stack_env: dict[str, str]) -> None:
    """Not only the four tried above: every lo_* function of pg_catalog (and loread/lowrite)."""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as admin:
        rows = admin.execute(
            "SELECT p.oid::regprocedure::text, has_function_privilege('public', p.oid, 'EXECUTE')"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'pg_catalog' AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('loread', 'lowrite'))"
        ).fetchall()
    assert len(rows) >= 15
    assert [name for name, public in rows if public] == []
