"""A statement planted under the vault's prepared-statement names (insider round 14, finding 1).

The names are `tv_<name>_<digest of the SQL>`, and the SQL is in the source: anyone can
compute them. Another client of a server connection (behind a transaction-pooling proxy), a
database owner's login event trigger (PostgreSQL 17), or anything else that runs in the
vault's session before its code, could PREPARE them first. The vault used to accept the
`already exists` answer (SQLSTATE 42P05) and run whatever the name held: a planted append
that inserts nothing and returns an id, with a planted presence check that counts whatever
it is given, made every audit append a silent no-op - reveals served, no audit row.

Here a pool on the serving role plants both names in each new connection (its `configure`
callback runs before the vault's code does). The append must store its row, or be refused
(AuditUnavailable): never be a silent no-op.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.integration.own_database import database_of_its_own
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.adapters.postgres import audit as audit_module
from vault_service.adapters.postgres.prepared import planted_statements_replaced
from vault_service.adapters.postgres.session_settings import VAULT_SESSION_OPTIONS
from vault_service.adapters.postgres.sql_arrays import int_array
from vault_service.bootstrap import open_vault_pool
from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import AuditUnavailable

_FAKE_ID = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS id"
"""What the planted append does: insert nothing, return a fresh id above every real one."""
_PLANTED_APPEND_ONE = (
    f"PREPARE {audit_module._APPEND_ONE.name} (text,text,text,text,text,text,int,text,bytea[]) AS {_FAKE_ID}"
)
_PLANTED_APPEND = (
    f"PREPARE {audit_module._APPEND.name}"
    " (bytea[],text[],text[],text[],text[],text[],text[],int[],text[],int[],int[])"
    " AS SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + g"
    " FROM generate_series(1, cardinality($2)) g"
)
_PRESENT_NAME = "tv_audit_present_2f4510e0091d"
"""The name the presence check had when it was a prepared statement (it is sent unnamed now: planted all the same)."""
_PLANTED_PRESENT = f"PREPARE {_PRESENT_NAME} (bigint[],text[],text[],text[]) AS SELECT cardinality($1)::bigint"


def _pool(dsn: str, configure: Callable[[psycopg.Connection], None] | None, max_size: int = 2) -> ConnectionPool:
    """A pool of the vault's connections (autocommit, its session options) with the prober's `configure`."""
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        open=False,
        configure=configure,
        kwargs={"autocommit": True, "options": VAULT_SESSION_OPTIONS},
    )
    pool.open(wait=True, timeout=15)
    return pool


def _plant_audit_statements(conn: psycopg.Connection) -> None:
    """The other client of the server connection: it prepared the vault's names first."""
    conn.execute(_PLANTED_APPEND_ONE)
    conn.execute(_PLANTED_APPEND)
    conn.execute(_PLANTED_PRESENT)


@pytest.fixture
def planted_pool(stack_env: dict[str, str]) -> Iterator[ConnectionPool]:
    pool = _pool(stack_env["PG_VAULT_DSN"], _plant_audit_statements)
    try:
        yield pool
    finally:
        pool.close()


def _rows_with_purpose(stack_env: dict[str, str], purpose: str) -> int:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert row is not None
    return int(row[0])


def _event(purpose: str, n: int = 0) -> AuditEvent:
    return AuditEvent(
        "fraud-investigator", "detokenize", f"ok: 1 revealed, 0 refused ({n})", 1, purpose, "ip", "serial", "sha",
        (bytes(16),),
    )  # fmt: skip


def test_planted_audit_statements_are_replaced_and_every_append_stores_its_row(
    stack_env: dict[str, str], planted_pool: ConnectionPool
) -> None:
    purpose = f"CASE-A14-{uuid.uuid4().hex[:8]}"
    replaced_before = planted_statements_replaced()
    log = PostgresAuditLog(planted_pool)
    appended = 0
    for n in range(3):
        try:
            log.append(_event(purpose, n))
            appended += 1
        except AuditUnavailable:
            pass
    assert _rows_with_purpose(stack_env, purpose) == appended == 3, "an append was a silent no-op"
    assert planted_statements_replaced() > replaced_before
    with planted_pool.connection() as conn:
        held = conn.execute(
            "SELECT statement FROM pg_prepared_statements WHERE name = %s", (audit_module._APPEND_ONE.name,)
        ).fetchone()
    assert held is not None and "INSERT INTO vault.audit_log" in held[0], held


def test_a_planted_group_append_is_replaced_too(stack_env: dict[str, str], planted_pool: ConnectionPool) -> None:
    """A group of several events goes through the other statement (`_APPEND`)."""
    purpose = f"CASE-A14G-{uuid.uuid4().hex[:8]}"
    log = PostgresAuditLog(planted_pool)
    events = [_event(purpose, n) for n in range(4)]
    log._write([audit_module._Appending(event) for event in events])  # one group, as the committer hands it over
    assert _rows_with_purpose(stack_env, purpose) == len(events)


def test_a_statement_replaced_after_the_vault_prepared_it_is_caught_by_the_presence_check(
    stack_env: dict[str, str],
) -> None:
    """The presence check must not share the append's mechanism: one plant must not defeat both.

    Here the append's name is replaced in the vault's own session after the vault prepared it
    (so the vault runs it without preparing again), together with a planted presence check.
    """
    purpose = f"CASE-A14R-{uuid.uuid4().hex[:8]}"
    pool = _pool(stack_env["PG_VAULT_DSN"], None, max_size=1)
    try:
        log = PostgresAuditLog(pool)
        log.append(_event(purpose))  # prepared by the vault now
        with pool.connection() as conn:  # the pool's one connection: the one the vault prepared on
            conn.execute("DEALLOCATE ALL")
            conn.execute(_PLANTED_APPEND_ONE)
            conn.execute(_PLANTED_PRESENT)
        with pytest.raises(AuditUnavailable):
            log.append(_event(purpose, 1))
    finally:
        pool.close()
    assert _rows_with_purpose(stack_env, purpose) == 1


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_the_unprepared_presence_check_probes_the_primary_key_of_a_big_log(stack_env: dict[str, str]) -> None:
    """Planned on every run on the vault's connections (generic plans forced): an index scan, not the whole log."""
    with database_of_its_own(stack_env, "presence", migrated=True) as env:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            admin.execute("SET LOCAL session_replication_role = replica")  # no chain trigger for the filler rows
            admin.execute(
                "INSERT INTO vault.audit_log (at, client, action, item_count, outcome, prev_hash, row_hash)"
                " SELECT now(), 'filler', 'detokenize', 1, 'ok', sha256(('p' || g)::bytea), sha256(('r' || g)::bytea)"
                " FROM generate_series(1, 200000) g"
            )
            admin.commit()
            admin.execute("ANALYZE vault.audit_log")
        pool = open_vault_pool(env["PG_VAULT_DSN"], 1)
        try:
            with pool.connection() as conn:
                sql = audit_module._PRESENT._sql.decode().replace("$1::bigint[]", "%s::bigint[]")
                row = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", (int_array([5, 150000]),), prepare=False).fetchone()
                found = audit_module._PRESENT.rows(conn, (int_array([5, 150000, 10**9]),))
        finally:
            pool.close()
    assert row is not None
    plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
    scans = [n["Node Type"] for n in _nodes(plan) if n.get("Relation Name") == "audit_log"]
    assert scans and set(scans) <= {"Index Scan", "Bitmap Heap Scan"}, scans
    assert sorted(r[0] for r in found) == [5, 150000]
