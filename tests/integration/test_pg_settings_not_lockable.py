"""Attack 31, F3: one lock on `pg_catalog.pg_settings` stopped every key operation, with no timeout.

PostgreSQL grants UPDATE on the pg_settings view to PUBLIC, so every login - an analyst's, the ETL's, the lock
watchdog's, the serving role's - could `LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE` and sit idle.
The key jobs' liveness hold read pg_settings (to turn off PostgreSQL 17's transaction_timeout) on a session with
no lock_timeout or statement_timeout: every rotation, re-encryption and KEK retirement waited for as long as the
locker liked, before any audit row (measured by the attacker: 2 of 2 rotations still blocked after 30 s each).

Now migration 0052 revokes PUBLIC's UPDATE on the view in the vault's database (so LOCK on it is refused to every
non-superuser login; SET, set_config, SHOW and reading the view work as before), and the hold reads no relation
(current_setting(..., true) / set_config) on a session bounded from its first statement (lock_timeout,
statement_timeout in its startup options). A superuser may still lock the view: a rotation then completes anyway.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault
from tests.integration.member_logins import logins_beside_the_watchdog
from tests.integration.own_database import database_of_its_own
from tokenvault_common.pg_options import startup_options
from vault_service.adapters.postgres.key_job_liveness import PostgresJobLiveness
from vault_service.adapters.postgres.session_settings import session_settings_with

__all__ = ["logins_beside_the_watchdog"]  # the fixture, used by name

LOGINS = ("PG_ANALYST_DSN", "PG_ETL_DSN", "PG_WATCHDOG_DSN", "PG_VAULT_DSN")
"""An analyst's, the ETL's, the lock watchdog's and the serving role's logins (none a superuser)."""


ROTATION_BOUND_SECONDS = 6.0
"""A rotation under the lock must end (done, or failed naming why) within this (the attacker's waited 30 s)."""


@pytest.mark.timeout(30)
def test_no_login_may_lock_pg_settings_and_every_login_still_sets_and_reads_its_settings(
    logins_beside_the_watchdog: dict[str, str],
) -> None:
    for who in LOGINS:
        with psycopg.connect(logins_beside_the_watchdog[who]) as conn:
            login = conn.execute("SELECT session_user").fetchone()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE")
            conn.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # any mode needing UPDATE: the view's
                conn.execute("LOCK TABLE pg_catalog.pg_settings IN ROW EXCLUSIVE MODE")
            conn.rollback()
            strong = conn.execute(  # pg_settings was the only relation any of them might lock strongly (attack 31)
                "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')"
                " AND has_table_privilege(c.oid, 'UPDATE,DELETE,TRUNCATE')"
            ).fetchall()
            assert strong == [], (login, strong)
            # What every login still does with its own settings: SET, set_config, SHOW, current_setting, the view.
            conn.execute("SET lock_timeout = '2s'")
            assert conn.execute("SHOW lock_timeout").fetchone() == ("2s",), login
            conn.execute("SELECT pg_catalog.set_config('statement_timeout', '7s', false)")
            assert conn.execute("SELECT pg_catalog.current_setting('statement_timeout')").fetchone() == ("7s",)
            assert conn.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'lock_timeout'").fetchone()
            conn.execute("RESET ALL")


def _rotate(vault: RunningVault, dsn: str, label: str) -> tuple[str, float]:
    """One data-key rotation as the admin Job runs it (its intent row held by the job's liveness): outcome, seconds."""
    out: list[str] = []

    def run() -> None:
        liveness = PostgresJobLiveness(dsn, startup_options(session_settings_with("on")))
        try:
            vault.wired.rotation("admin:pgsettings", None, liveness).rotate_encryption_key(label)
            out.append("ok")
        except Exception as error:  # the job's own failure: what it says
            out.append(f"{type(error).__name__}: {error}")
        finally:
            liveness.release()

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(ROTATION_BOUND_SECONDS)
    return (out[0] if out else "still blocked"), time.monotonic() - started


@pytest.mark.timeout(60)
def test_a_key_rotation_under_a_superusers_lock_completes_or_fails_in_bounds_saying_why(
    stack_env: dict[str, str],
) -> None:
    with database_of_its_own(stack_env, "pgsettings", migrated=True) as env, running_vault(env) as vault:
        locker = psycopg.connect(env["PG_ADMIN_DSN"])  # the migrator: a superuser, who still may
        try:
            assert locker.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user").fetchone() == (True,)
            locker.execute("LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE")  # and sits idle in it
            outcome, took = _rotate(vault, env["PG_VAULT_DSN"], "CHG-PGS-under")
            still_held = locker.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = 'AccessExclusiveLock'"
                " AND relation = 'pg_catalog.pg_settings'::regclass"
            ).fetchone()
            locker.rollback()
            # What the job's session does read, the audit log's key rows: a bounded failure that says why.
            locker.execute("LOCK TABLE vault.audit_log IN ACCESS EXCLUSIVE MODE")
            refused, refused_took = _rotate(vault, env["PG_VAULT_DSN"], "CHG-PGS-log")
        finally:
            locker.rollback()
            locker.close()
        after, _ = _rotate(vault, env["PG_VAULT_DSN"], "CHG-PGS-after")  # a blocked one ends once it lets go
    print(
        f"pg_settings locked by a superuser: rotation {outcome} after {took:.1f} s; the audit log locked: {refused!r}"
        f" after {refused_took:.1f} s; after it let go: {after}"
    )
    assert still_held == (1,)
    assert outcome == "ok" and took < ROTATION_BOUND_SECONDS, (outcome, took)
    assert refused.startswith("DatabaseUnavailable: the key job's database session did not get a lock within 3 s")
    assert refused_took < ROTATION_BOUND_SECONDS and after == "ok", (refused_took, after)
