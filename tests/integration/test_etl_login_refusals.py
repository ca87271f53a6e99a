"""Each refusal of the ETL's login by a real PostgreSQL is a misconfiguration, not the database down (R49-1).

psycopg 3.3 gives an error raised before a session no SQLSTATE, so `database_error` reads the server's text: before
review 49 only "password authentication failed" was recognised, and a role set NOLOGIN, a database that does not
exist or a revoked CONNECT was taken for an outage for ever (batches postponed, the gate closed, no exit).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from etl_service.adapters.postgres import database_error
from etl_service.errors import DependencyDown, Misconfigured


def _refusal(dsn: str) -> DependencyDown | Misconfigured:
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(dsn, connect_timeout=5).close()
    assert getattr(raised.value, "sqlstate", None) is None  # why the text is read at all
    return database_error(raised.value)


def _assert_refused(found: DependencyDown | Misconfigured, said: str) -> None:
    assert isinstance(found, Misconfigured), found
    assert f"Postgres refused the ETL: {said}" in str(found)


def test_a_role_set_nologin_is_refused_by_name(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute("ALTER ROLE tokenvault_etl NOLOGIN")
    try:
        found = _refusal(stack_env["PG_ETL_DSN"])
    finally:
        with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
            conn.execute("ALTER ROLE tokenvault_etl LOGIN")
    _assert_refused(found, "the role of ETL_DATABASE_DSN may not log in (NOLOGIN)")


def test_a_database_that_does_not_exist_is_refused_by_name(stack_env: dict[str, str]) -> None:
    found = _refusal(make_conninfo(stack_env["PG_ETL_DSN"], dbname="r49_no_such_database"))
    _assert_refused(found, "the database of ETL_DATABASE_DSN does not exist")


def test_a_revoked_connect_is_refused_by_name(stack_env: dict[str, str]) -> None:
    name = f"r49_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"REVOKE CONNECT ON DATABASE {name} FROM PUBLIC")
    try:
        found = _refusal(make_conninfo(stack_env["PG_ETL_DSN"], dbname=name))
    finally:
        with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name}")
    _assert_refused(found, "the role of ETL_DATABASE_DSN lacks CONNECT on its database")


def test_a_database_that_does_not_answer_is_still_an_outage(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT inet_server_port()").fetchone()
    closed = (row[0] if row and row[0] else 5432) + 17  # nothing listens there in the test stack
    found = _refusal(make_conninfo(stack_env["PG_ETL_DSN"], host="127.0.0.1", port=str(closed)))
    assert isinstance(found, DependencyDown), found
