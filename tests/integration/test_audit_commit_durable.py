"""An audit row is durable before its reveal is served, whatever defaults the serving role sets itself.

Insider round 15, finding 3: the serving role (`tokenvault_vault`, no superuser, no CREATEROLE)
ran `ALTER ROLE CURRENT_USER SET synchronous_commit = off`; every new vault session then
acknowledged its audit appends before their WAL was flushed, and a crash right after a reveal
lost its audit row 3 times of 3. The vault's startup options pin synchronous_commit (and the
other settings of session_settings.py) over role and database defaults, and the chain trigger
raises it for the commit of every transaction that appends an audit row (migration 0025).

Real PostgreSQL and OpenBao: a database of the test's own on the session's cluster, and for the
crash a private cluster (devstack's start_postgres) whose postmaster gets SIGQUIT (immediate
shutdown: no WAL flushed at exit, as a crash).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from devstack.postgres import Postgres, pg_ctl, postmaster_pid
from tests.conftest import running_vault
from tests.integration.audit_attacks import count_revealed, own_database, tokenize_fresh_ip
from tests.integration.own_cluster import cluster_of_its_own

__all__ = ["own_database"]  # the fixture used here, shared by the audit attack tests

_APPEND = (
    "INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,"
    " item_count, outcome) VALUES ('analyst', '1', 'ab', 'detokenize', %s, 'ip', 1, 'ok: 1 revealed, 0 refused')"
    " RETURNING pg_catalog.current_setting('synchronous_commit')"
)
"""An audit append as the serving role may write one; it returns synchronous_commit as the row's
transaction will commit with it (RETURNING is evaluated after the chain trigger ran)."""


def _set_for_the_role(dsn: str, settings: dict[str, str], in_database: bool = True) -> None:
    """`ALTER ROLE CURRENT_USER [IN DATABASE <this one>] SET ...`, as the serving role itself."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        (is_super, can_create_roles) = conn.execute(
            "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone() or (True, True)
        assert not is_super and not can_create_roles  # the serving role as deployed
        (database,) = conn.execute("SELECT current_database()").fetchone() or ("",)
        where = sql.SQL("IN DATABASE {} ").format(sql.Identifier(database)) if in_database else sql.SQL("")
        for name, value in settings.items():
            conn.execute(
                sql.SQL("ALTER ROLE CURRENT_USER {}SET {} = {}").format(where, sql.Identifier(name), sql.Literal(value))
            )


def test_defaults_the_serving_role_sets_itself_do_not_reach_the_vaults_sessions_and_are_reported(
    own_database: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    env = own_database
    _set_for_the_role(
        env["PG_VAULT_DSN"],
        {
            "synchronous_commit": "off",
            "default_transaction_isolation": "repeatable read",
            "search_path": "public",
            "statement_timeout": "3600000",  # not pinned (a denial of service at most): reported only
        },
    )
    with psycopg.connect(env["PG_VAULT_DSN"]) as plain:  # a session of the role without the vault's options
        assert plain.execute("SHOW synchronous_commit").fetchone() == ("off",)
    with caplog.at_level(logging.WARNING), running_vault(env) as vault:
        with vault.wired.pool.connection() as conn:
            shown = {
                name: (conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone() or ("",))[0]
                for name in ("synchronous_commit", "default_transaction_isolation", "search_path", "statement_timeout")
            }
        assert shown["synchronous_commit"] == "on"
        assert shown["default_transaction_isolation"] == "read committed"
        assert shown["search_path"] == "pg_catalog, pg_temp"
        assert shown["statement_timeout"] == "1h"  # in effect, and named in the warning
        assert count_revealed(env, vault, tokenize_fresh_ip(env, vault), ["CASE-DEFAULTS-1"]) == 1
    (warning,) = [r for r in caplog.records if "defaults are set for the vault's database sessions" in r.getMessage()]
    assert getattr(warning, "overridden", None) == [
        "default_transaction_isolation",
        "search_path",
        "synchronous_commit",
    ]
    assert getattr(warning, "in_effect", None) == ["statement_timeout"]
    assert "repeatable" not in caplog.text and "3600000" not in caplog.text  # names, never values
    assert REGISTRY.get_sample_value("tokenvault_database_defaults_set") == 4


def test_an_audit_append_commits_synchronously_even_from_a_session_that_turned_it_off(
    own_database: dict[str, str],
) -> None:
    with psycopg.connect(own_database["PG_VAULT_DSN"], autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        assert conn.execute(_APPEND, ("CASE-SYNC-1",)).fetchone() == ("on",)  # a single statement, as the vault's
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)  # the session's own setting is kept
        with conn.transaction():  # in a transaction: raised up to its commit, after the append
            conn.execute(_APPEND, ("CASE-SYNC-2",))
            assert conn.execute("SELECT current_setting('synchronous_commit')").fetchone() == ("on",)
        conn.execute("SET synchronous_commit = local")  # no wait for a synchronous standby: raised too
        assert conn.execute(_APPEND, ("CASE-SYNC-3",)).fetchone() == ("on",)
        conn.execute("SET synchronous_commit = remote_apply")  # stronger than on: kept
        assert conn.execute(_APPEND, ("CASE-SYNC-4",)).fetchone() == ("remote_apply",)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own, so that it can be crashed."""
    with cluster_of_its_own(tmp_path) as postgres:
        yield postgres


def _crash(pg: Postgres) -> None:
    """SIGQUIT to the postmaster (immediate shutdown: nothing flushed on the way out), then start it again."""
    pid = postmaster_pid(pg.data_dir)
    os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 20
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the postmaster did not exit on SIGQUIT"
        time.sleep(0.02)
    pg_ctl(pg.data_dir, pg.bindir, pg.run_as, "start", pg.port)


def test_a_reveals_audit_row_survives_a_crash_right_after_it_with_synchronous_commit_off_for_the_role(
    stack_env: dict[str, str], private_postgres: Postgres
) -> None:
    pg = private_postgres
    _set_for_the_role(pg.vault_dsn, {"synchronous_commit": "off"}, in_database=False)
    purposes = [f"CASE-CRASH-{i}" for i in range(3)]
    with running_vault(stack_env, TOKENVAULT_DATABASE_DSN=pg.vault_dsn) as vault:
        token = tokenize_fresh_ip(stack_env, vault)
        time.sleep(1.0)  # the token's own rows are flushed by now, whatever the setting
        assert count_revealed(stack_env, vault, token, purposes) == len(purposes)
        _crash(pg)  # right after the last reveal was answered
        with psycopg.connect(pg.admin_dsn) as admin:
            kept = admin.execute(
                "SELECT purpose FROM vault.audit_log WHERE purpose = ANY(%s) ORDER BY id", (purposes,)
            ).fetchall()
    assert [p for (p,) in kept] == purposes, "a reveal was served on an audit row the crash lost"
