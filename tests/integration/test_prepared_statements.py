"""The hot path's libpq prepared statements answer what `conn.execute` answers, errors included."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from tests.integration.pg_backends import terminate_backend
from tests.integration.server_log_text import logged_once
from vault_service.adapters.postgres.prepared import PreparedStatement, UnnamedStatement, planted_statements_replaced

_ROWS_SQL = (
    "SELECT n, n::text || 'é', CASE WHEN mod(n, 2) = 0 THEN NULL ELSE decode(lpad(to_hex(n), 4, '0'), 'hex') END,"
    " n > 1, now() FROM unnest({}::int[]) AS u(n) ORDER BY n"
)


@pytest.fixture
def conn(stack_env: dict[str, str]) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as connection:
        connection.execute("CREATE TEMPORARY TABLE prepared_probe (v text NOT NULL CHECK (v <> 'refused'))")
        yield connection


@pytest.mark.parametrize("binary", [False, True])
def test_rows_are_what_execute_fetches_in_either_format(conn: psycopg.Connection, binary: bool) -> None:
    statement = PreparedStatement(f"probe_rows_{binary}", _ROWS_SQL.format("$1"), binary_rows=binary)
    expected = conn.execute(_ROWS_SQL.format("%s"), ("{1,2,3}",), binary=binary).fetchall()
    got = statement.rows(conn, ("{1,2,3}",))
    assert [row[:4] for row in got] == [row[:4] for row in expected]
    assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]
    assert got[0][2] == b"\x00\x01" and got[1][2] is None
    assert statement.rows(conn, ("{}",)) == []


def _server_log(conn: psycopg.Connection) -> Path:
    row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    return Path(str(row[0])) / "server.log"


def test_a_first_run_on_each_connection_leaves_no_error_in_the_server_log(
    conn: psycopg.Connection, stack_env: dict[str, str]
) -> None:
    """It used to be tried unprepared first: `ERROR: prepared statement ... does not exist` per connection."""
    log = _server_log(conn)
    logged_from = log.stat().st_size
    statement = PreparedStatement("probe_first_run", "SELECT $1::int + 1")
    assert statement.rows(conn, ("1",)) == [(2,)]
    assert statement.rows(conn, ("2",)) == [(3,)]
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as other:
        assert statement.rows(other, ("3",)) == [(4,)]
    same_name = PreparedStatement("probe_first_run", "SELECT $1::int + 1")  # the same name: known prepared there
    assert same_name.rows(conn, ("4",)) == [(5,)]
    with pytest.raises(errors.UndefinedFunction):
        conn.execute("SELECT tv_probe_marker_of_the_log_end()")  # an error that is logged: the log is this one
    written = logged_once(log, "tv_probe_marker_of_the_log_end", since=logged_from)
    assert "tv_probe_marker_of_the_log_end" in written
    assert "tv_probe_first_run" not in written, written


def test_it_is_prepared_again_on_a_connection_that_lost_it(conn: psycopg.Connection) -> None:
    statement = PreparedStatement("probe_insert", "INSERT INTO prepared_probe (v) VALUES ($1)")
    statement.run(conn, ("one",))
    prepared_there = "SELECT count(*) FROM pg_prepared_statements WHERE name = %s"
    assert conn.execute(prepared_there, (statement.name,)).fetchone() == (1,)
    conn.execute("DEALLOCATE ALL")
    statement.run(conn, ("two",))
    statement.run(conn, ("three",))
    assert conn.execute("SELECT v FROM prepared_probe ORDER BY v").fetchall() == [("one",), ("three",), ("two",)]


def test_one_prepared_there_by_another_is_replaced_by_its_own_sql(conn: psycopg.Connection) -> None:
    """The name is computable from the source: a statement planted under it (42P05) is never run."""
    statement = PreparedStatement("probe_planted", "SELECT $1::int * 2")
    conn.execute(f"PREPARE {statement.name} (int) AS SELECT $1::int * 3")  # prepared there, not by this process
    replaced_before = planted_statements_replaced()
    assert statement.rows(conn, ("21",)) == [(42,)]
    assert statement.rows(conn, ("5",)) == [(10,)]
    assert planted_statements_replaced() == replaced_before + 1
    held = conn.execute("SELECT statement FROM pg_prepared_statements WHERE name = %s", (statement.name,)).fetchall()
    assert held == [("SELECT $1::int * 2",)]


def test_one_prepared_there_with_the_same_sql_is_replaced_too(
    conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Not taken for the vault's own because its SQL matches: counted, said, and prepared again by the vault."""
    statement = PreparedStatement("probe_pooled", "SELECT $1::int * 2")
    conn.execute(f"PREPARE {statement.name} AS SELECT $1::int * 2")
    replaced_before = planted_statements_replaced()
    with caplog.at_level(logging.WARNING, logger="vault_service.adapters.postgres.prepared"):
        assert statement.rows(conn, ("21",)) == [(42,)]
    assert planted_statements_replaced() == replaced_before + 1
    said = [r for r in caplog.records if "prepared on its database connection by something else" in r.getMessage()]
    assert [r.__dict__["statement"] for r in said] == [statement.name]
    held = conn.execute(
        "SELECT statement, from_sql FROM pg_prepared_statements WHERE name = %s", (statement.name,)
    ).fetchall()
    assert held == [("SELECT $1::int * 2", False)]  # the vault's protocol-level prepare, not the SQL PREPARE


def test_an_unnamed_statement_runs_its_own_sql_whatever_is_prepared_in_the_session(conn: psycopg.Connection) -> None:
    statement = UnnamedStatement(_ROWS_SQL.format("$1"), binary_rows=True)
    expected = conn.execute(_ROWS_SQL.format("%s"), ("{1,2,3}",), binary=True).fetchall()
    assert [row[:4] for row in statement.rows(conn, ("{1,2,3}",))] == [row[:4] for row in expected]
    with pytest.raises(errors.CheckViolation):
        UnnamedStatement("INSERT INTO prepared_probe (v) VALUES ($1)").run(conn, ("refused",))
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


def test_two_statements_given_one_name_each_run_their_own_sql(conn: psycopg.Connection) -> None:
    doubled = PreparedStatement("probe_one_name", "SELECT $1::int * 2")
    tripled = PreparedStatement("probe_one_name", "SELECT $1::int * 3")
    assert doubled.rows(conn, ("5",)) == [(10,)]
    assert tripled.rows(conn, ("5",)) == [(15,)]


def test_it_is_prepared_again_when_a_migration_changed_what_it_returns(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TEMPORARY TABLE altered_probe AS SELECT '12'::text AS v")
    statement = PreparedStatement("probe_altered", "SELECT v FROM altered_probe")
    assert statement.rows(conn, ()) == [("12",)]
    conn.execute("ALTER TABLE altered_probe ALTER COLUMN v TYPE int USING v::int")  # the plan's result type changed
    assert statement.rows(conn, ()) == [(12,)]


def test_it_refuses_to_run_in_pipeline_mode_or_outside_autocommit(conn: psycopg.Connection) -> None:
    statement = PreparedStatement("probe_modes", "INSERT INTO prepared_probe (v) VALUES ($1)")
    with pytest.raises(psycopg.ProgrammingError, match="idle autocommit"), conn.pipeline():
        statement.run(conn, ("in a pipeline",))
    conn.autocommit = False
    try:
        with pytest.raises(psycopg.ProgrammingError, match="idle autocommit"):
            statement.run(conn, ("outside autocommit",))
    finally:
        conn.rollback()
        conn.autocommit = True
    assert conn.execute("SELECT count(*) FROM prepared_probe").fetchone() == (0,)


def test_a_refused_statement_raises_psycopgs_own_error_and_the_connection_goes_on(conn: psycopg.Connection) -> None:
    statement = PreparedStatement("probe_check", "INSERT INTO prepared_probe (v) VALUES ($1)")
    with pytest.raises(errors.CheckViolation):
        statement.run(conn, ("refused",))
    with pytest.raises(errors.NotNullViolation):
        statement.run(conn, (None,))
    with pytest.raises(psycopg.DataError, match="NUL"):
        statement.run(conn, ("a\x00b",))
    statement.run(conn, ("kept",))
    assert conn.execute("SELECT v FROM prepared_probe").fetchall() == [("kept",)]


def test_it_refuses_to_run_inside_a_transaction(conn: psycopg.Connection) -> None:
    statement = PreparedStatement("probe_tx", "INSERT INTO prepared_probe (v) VALUES ($1)")
    with pytest.raises(psycopg.ProgrammingError, match="idle autocommit"), conn.transaction():
        statement.run(conn, ("inside",))
    assert conn.execute("SELECT count(*) FROM prepared_probe").fetchone() == (0,)


def test_a_lost_connection_is_an_operational_error(conn: psycopg.Connection, stack_env: dict[str, str]) -> None:
    statement = PreparedStatement("probe_lost", "SELECT $1::int + 1")
    assert statement.rows(conn, ("41",)) == [(42,)]
    terminate_backend(stack_env["PG_ADMIN_DSN"], conn.info.backend_pid)
    with pytest.raises(psycopg.OperationalError):
        statement.rows(conn, ("41",))
