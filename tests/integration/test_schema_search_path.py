"""No role of the vault can plant a function or operator the audit triggers or an analyst would run.

PostgreSQL 14 and older grant CREATE on schema public to every role, and the audit trigger
functions ran with the caller's search_path (fourth insider round, MED-2): the ETL planted an
`=` operator for varchar that an analyst's `WHERE masked_ip = 'ip_...'` ran with the analyst's
rights (copying token columns to a table the ETL reads), and the serving role planted a
`clock_timestamp()` first on its search_path that dated its audit rows at will - one in 2099
made every genuine append fail. Migration 0018 revokes CREATE on public from PUBLIC and fixes
the search_path of every trigger function; these tests do the planting on a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
from psycopg import errors

from tests.conftest import running_vault
from tests.integration.audit_attacks import audit_verify, count_revealed, own_database, tokenize_fresh_ip
from tests.integration.own_database import EVERY_DSN, database_of_its_own
from tokenvault_common.migrations import migrate

__all__ = ["own_database"]  # the fixture, shared by the audit attack tests

_SERVICE_ROLES = ("tokenvault_vault", "tokenvault_etl", "tokenvault_analyst", "analyst", "public")
_APPEND = (  # the service's single-event append (vault_service/adapters/postgres/audit.py)
    "INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,"
    " item_count, outcome, revealed) VALUES ('analyst', '01', 'ab', 'detokenize', 'CASE-1', 'ip', 1,"
    " 'ok: 1 revealed, 0 refused', NULL) RETURNING at"
)


@pytest.fixture
def pg14_database(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A database of its own with PostgreSQL 14's default ACL on schema public, then migrated."""
    with database_of_its_own(stack_env, "pg14", dsns=EVERY_DSN) as env:
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
            conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # PostgreSQL <= 14's default
        migrate(env["PG_ADMIN_DSN"])
        yield env


def test_no_role_of_the_vault_may_create_in_schema_public_on_postgres_14_defaults(
    pg14_database: dict[str, str],
) -> None:
    env = pg14_database
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        may_create = {
            role: admin.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (role,)).fetchone()
            for role in _SERVICE_ROLES
        }
    assert may_create == {role: (False,) for role in _SERVICE_ROLES}
    # The ETL's operator for an analyst's `WHERE masked_ip = 'ip_...'` cannot be planted.
    with psycopg.connect(env["PG_ETL_DSN"], autocommit=True) as etl:
        with pytest.raises(errors.InsufficientPrivilege):
            etl.execute(
                "CREATE FUNCTION public.vc_eq(a varchar, b varchar) RETURNS boolean LANGUAGE sql"
                " AS $$ SELECT a::text = b::text $$"
            )
        with pytest.raises(errors.InsufficientPrivilege):
            etl.execute("CREATE TABLE public.loot (ip text, dev text)")
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as vault, pytest.raises(errors.InsufficientPrivilege):
        vault.execute("CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS $$ SELECT now() $$")


@pytest.fixture
def vault_with_writable_schema(own_database: dict[str, str]) -> Iterator[dict[str, str]]:
    """own_database, where the serving role may create in a schema `scratch` (as on any writable schema)."""
    with psycopg.connect(own_database["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute("CREATE SCHEMA scratch")
        admin.execute("GRANT USAGE, CREATE ON SCHEMA scratch TO tokenvault_vault")
    yield own_database


def _append_at(vault: psycopg.Connection, fake_clock: str) -> tuple[datetime, datetime]:
    """The service's append, with scratch.clock_timestamp() answering `fake_clock`: (row's at, real clock)."""
    vault.execute("SELECT set_config('x.at', %s, false)", (fake_clock,))
    (at,) = vault.execute(_APPEND).fetchone() or (None,)
    (real,) = vault.execute("SELECT pg_catalog.clock_timestamp()").fetchone() or (None,)
    assert at is not None and real is not None
    return at, real


def test_the_serving_role_cannot_date_audit_rows_with_a_clock_of_its_own(
    vault_with_writable_schema: dict[str, str],
) -> None:
    env = vault_with_writable_schema
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as vault:
        vault.execute(
            "CREATE FUNCTION scratch.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS"
            " $$ SELECT pg_catalog.current_setting('x.at')::timestamptz $$"
        )
        vault.execute("SET search_path = scratch, pg_catalog")
        (head,) = vault.execute("SELECT max(at) FROM vault.audit_log").fetchone() or (None,)
        past = str(head or "2000-01-01 00:00:00+00")  # as far back as the chain lets a row go
        for fake_clock in (past, "2099-01-01 00:00:00+00"):
            at, real = _append_at(vault, fake_clock)
            assert abs((real - at).total_seconds()) < 5, "an audit row took the serving role's clock"
    with running_vault(env) as service:  # genuine appends go on, and the chain verifies
        assert count_revealed(env, service, tokenize_fresh_ip(env, service), ["CASE-AFTER-CLOCK"]) == 1
        report = audit_verify(service, None)
        assert report.intact, report.finding


def test_every_trigger_function_runs_with_a_fixed_search_path_and_the_hash_stays_inlined(
    own_database: dict[str, str],
) -> None:
    with psycopg.connect(own_database["PG_ADMIN_DSN"]) as admin:
        unfixed = admin.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
            " WHERE p.pronamespace = 'vault'::regnamespace AND (l.lanname <> 'sql' OR p.prosecdef)"
            " AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY(p.proconfig), false) ORDER BY 1"
        ).fetchall()
        assert unfixed == []
        # A SQL function with a SET clause is never inlined: the hash helpers carry none, and
        # name what they call by schema instead (migration 0008 inlined them for speed).
        plan = admin.execute(
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT vault.audit_row_hash('\\x00', 1, now(), 'a', 'b', 'c', 'd', 'e',"
            " 'f', 1, 'g', NULL), vault.audit_session()"
        ).fetchall()
        output = " ".join(line for (line,) in plan)
        assert "sha256(" in output and "audit_row_hash" not in output and "audit_session" not in output, output
