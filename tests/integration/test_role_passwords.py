"""Role passwords reach PostgreSQL as SCRAM verifiers, never in clear, even where DDL is logged.

`ALTER ROLE ... PASSWORD 'secret'` is DDL: a server that logs DDL (`log_statement = ddl`, common
for change auditing) wrote the password set by the migrator into its log, readable by whoever
reads the database's logs. Real PostgreSQL (the session's stack); a throwaway role.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.integration.server_log_text import logged_once
from tokenvault_common.migrations import set_role_passwords


def test_a_role_password_is_set_as_a_verifier_absent_from_a_ddl_logging_servers_log(
    stack_env: dict[str, str],
) -> None:
    role, password = f"pw_probe_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    admin_dsn = stack_env["PG_ADMIN_DSN"]
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute("SHOW data_directory").fetchone()
        assert row is not None
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    log = Path(str(row[0])) / "server.log"
    try:
        logged_from = log.stat().st_size
        ddl_logged = make_conninfo(admin_dsn, options="-c log_statement=ddl")  # as a server that audits DDL
        set_role_passwords(ddl_logged, {role: password})

        written = logged_once(log, f"ALTER ROLE {role}", f'ALTER ROLE "{role}"', since=logged_from)
        assert f"ALTER ROLE {role}" in written or f'ALTER ROLE "{role}"' in written  # the statement was logged
        in_clear = password in written  # a boolean: pytest would print both strings
        assert not in_clear, "the role's password is in clear in the server log"
        with psycopg.connect(admin_dsn) as admin:
            stored = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
        assert stored is not None and str(stored[0]).startswith("SCRAM-SHA-256$")
        params = conninfo_to_dict(admin_dsn)
        login = make_conninfo(admin_dsn, user=role, password=password, dbname=str(params.get("dbname", "postgres")))
        with psycopg.connect(login) as conn:  # the password works: a SCRAM login with it
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
