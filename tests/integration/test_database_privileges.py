"""The vault schema is locked down; migrations upgrade the exercise's table in place."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql

from devstack.postgres import ANALYST_CONNECTION_LIMIT
from tokenvault_common.migrations import migrate

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM vault.tokens",
        "SELECT * FROM vault.data_keys",
        "SELECT * FROM vault.audit_log",
        "SELECT * FROM vault.erasure_count",
        "INSERT INTO vault.audit_log (at, client, action, item_count, outcome, prev_hash, row_hash)"
        " VALUES (now(), 'x', 'x', 0, 'x', '', '')",
    ],
)
def test_etl_role_is_refused_on_the_vault_schema(stack_env: dict[str, str], statement: str) -> None:
    with psycopg.connect(stack_env["PG_ETL_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


def test_analyst_role_reads_user_logins_but_not_the_vault(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ANALYST_DSN"]) as conn:
        conn.execute("SELECT count(*) FROM user_logins")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM vault.tokens")


def test_analysts_cannot_take_the_connection_slots_the_services_need(stack_env: dict[str, str]) -> None:
    # With max_connections at 100, a person's script opening connections in a loop would
    # otherwise leave the vault's pool none to grow into.
    opened: list[psycopg.Connection] = []
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            for _ in range(ANALYST_CONNECTION_LIMIT + 1):
                opened.append(psycopg.connect(stack_env["PG_ANALYST_DSN"]))
        assert len(opened) <= ANALYST_CONNECTION_LIMIT
        with psycopg.connect(stack_env["PG_VAULT_DSN"]) as vault:  # the service still gets in
            vault.execute("SELECT 1")
    finally:
        for conn in opened:
            conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM vault.audit_log",
        "UPDATE vault.audit_log SET outcome = 'ok'",
        "DELETE FROM vault.tokens",
        "UPDATE vault.tokens SET token = 'x'",
        "UPDATE vault.tokens SET token_type = 'ip'",
        "UPDATE vault.data_keys SET purpose = 'encryption'",
        # the erasure mark other replicas watch: held still, they would keep erased tokens cached
        "UPDATE vault.erasure_count SET erasures = 0",
        "DELETE FROM vault.erasure_count",
        "SELECT * FROM vault.erasure_count FOR UPDATE",
        "SELECT * FROM user_logins",
        "CREATE TABLE vault.sneaky (x int)",
        # a chosen id (ahead of the sequence, later inserts would meet it) or erasure time
        "INSERT INTO vault.tokens (id, token, token_type, fingerprint, fingerprint_key_id, dek_id)"
        " OVERRIDING SYSTEM VALUE VALUES (9000000000, 'ip_x', 'ip', '\\x01', 1, 1)",
        "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, erased_at)"
        " VALUES ('ip_y', 'ip', '\\x02', 1, 1, '9999-12-31')",
    ],
)
def test_vault_role_cannot_delete_rewrite_tokens_or_audit_or_reach_other_data(
    stack_env: dict[str, str], statement: str
) -> None:
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


def test_public_has_no_privilege_on_the_vault_schema(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT has_schema_privilege('public', 'vault', 'USAGE'),"
            " has_table_privilege('public', 'vault.tokens', 'SELECT')"
        ).fetchone()
    assert row == (False, False)


def test_migrations_upgrade_the_exercise_table_in_place(stack_env: dict[str, str]) -> None:
    admin = stack_env["PG_ADMIN_DSN"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS exercise_upgrade")
        conn.execute("CREATE DATABASE exercise_upgrade")
    dsn = admin.rsplit("/", 1)[0] + "/exercise_upgrade"
    with psycopg.connect(dsn) as conn:
        conn.execute((REPO / "examples" / "create_table.sql").read_text().encode())
        conn.execute("INSERT INTO user_logins VALUES ('u1', 'ios', 'old-mask', 'old-mask', 'US', 230, '2020-01-02')")
    assert migrate(dsn)  # applies everything
    assert migrate(dsn) == []  # and only once
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT user_id, masked_ip, app_version, create_date::text FROM user_logins").fetchall()
        columns = {
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT column_name FROM information_schema.columns WHERE table_name = 'user_logins'")
            )
        }
    assert rows == [("u1", "old-mask", 230, "2020-01-02")]
    assert {"event_id", "app_version_text", "sent_at"} <= columns
