"""The migrator waits for a table's lock a bounded time, tries again, then stops naming who held it (attack 32, F9).

A migration that alters `public.user_logins` needs ACCESS EXCLUSIVE; an analyst's `BEGIN; SELECT ... FROM
user_logins` left idle holds ACCESS SHARE, so the migration waits - and every later lock request on the table, the
ETL's inserts, queues behind it. The runner set no lock_timeout: the ETL's loads stopped for as long as the analyst
liked. Now each file runs under the runner's lock_timeout (MIGRATIONS_LOCK_TIMEOUT, here 1 s) and is tried
MIGRATIONS_LOCK_ATTEMPTS times (here 2, 2 s apart): the ETL's inserts wait at most that second, and the runner
stops naming the analyst's session. Cluster of its own; the real migrator on a copy of the repository's migrations
plus one new file standing for the next release's.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devstack.postgres import Postgres
from tests.integration.test_lock_watchdog import private_postgres
from tokenvault_common import migrations

__all__ = ["private_postgres"]

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
NEXT = "ALTER TABLE public.user_logins ADD COLUMN next_release_column integer;\n"


def _next_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The repository's migrations plus one altering user_logins (the next release's), each lock wait 1 s, 2 tries:
    the directory and the new file's version."""
    directory = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, directory)
    last = sorted(p.stem for p in directory.glob("*.sql"))[-1]
    version = f"{int(last[:4]) + 1:04d}_next_release"
    (directory / f"{version}.sql").write_text(NEXT)
    monkeypatch.setenv("MIGRATIONS_LOCK_TIMEOUT", "1s")
    monkeypatch.setenv("MIGRATIONS_LOCK_ATTEMPTS", "2")
    return directory, version


def _etl_insert(pg: Postgres, statement_timeout_ms: int) -> tuple[str, float]:
    started = time.monotonic()
    try:
        options = f"-c statement_timeout={statement_timeout_ms}"
        with psycopg.connect(pg.etl_dsn, connect_timeout=5, options=options) as c:
            c.execute(
                "INSERT INTO public.user_logins (user_id, device_type, masked_ip, masked_device_id, locale,"
                " app_version, create_date, event_id, sqs_message_id, app_version_text)"
                " VALUES ('u', 'ios', 'ip_x', 'dv_x', 'en', 1000000, current_date, %s, %s, '1.0.0')",
                (f"lockwait-{time.time()}", f"m-{time.time()}"),
            )
        return "ok", time.monotonic() - started
    except psycopg.Error as error:
        return type(error).__name__, time.monotonic() - started


@pytest.mark.timeout(90)
def test_a_migration_behind_an_idle_analyst_gives_up_in_seconds_naming_it_and_the_etl_loads_go_on(
    private_postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = private_postgres
    directory, version = _next_release(tmp_path, monkeypatch)
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["applied"] = migrations.migrate(pg.admin_dsn, directory)
        except Exception as error:  # what the runner ends with is the point
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    analyst = psycopg.connect(pg.analyst_dsn)
    with contextlib.closing(analyst):
        analyst.execute("SELECT count(*) FROM public.user_logins")  # a transaction, ACCESS SHARE kept: idle
        analyst_pid = analyst.info.backend_pid
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        loads = []
        started = time.monotonic()
        while runner.is_alive() and time.monotonic() - started < 7:  # the ETL loads on while the migration waits
            loads.append(_etl_insert(pg, 3000))
            time.sleep(0.1)
        runner.join(2)
        gave_up = not runner.is_alive()
        analyst.rollback()
        runner.join(30)
    after = migrations.migrate(pg.admin_dsn, directory)
    load_after = _etl_insert(pg, 3000)
    error = outcome.get("error")
    print(
        f"MIGRATION-LOCK-WAIT: gave up in {outcome['seconds']:.1f} s: {type(error).__name__}; ETL loads meanwhile"
        f" {[(r, round(t, 2)) for r, t in loads]}; then applied {after}, ETL {load_after[0]}; its message: {error}"
    )
    assert gave_up and isinstance(error, migrations.MigrationLockTimeout), outcome
    assert float(str(outcome["seconds"])) < 6
    login = conninfo_to_dict(pg.analyst_dsn)["user"]
    message = str(error)
    assert f"pid {analyst_pid} (login {login}" in message and "idle in transaction" in message, message
    assert "count(" not in message and version in message and "pg_terminate_backend" in message
    assert len(loads) >= 3 and all(r == "ok" and t < 1.8 for r, t in loads), loads
    assert after == [version] and load_after[0] == "ok"


@pytest.mark.timeout(90)
def test_a_stranger_holding_the_migrators_lock_is_named_in_seconds_and_another_migrator_is_waited_for(
    private_postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack 33, A3: where PUBLIC still runs pg_advisory_lock (a managed PostgreSQL whose owner may not revoke it;
    here the superuser grants it back), an analyst's idle session holding the migrators' key stopped every upgrade,
    unnamed, for as long as it liked (the runner waited for that lock without bound). Now a holder that is not a
    migrator is waited for at most what the files' own waits add up to (1 s x 2 tries + 2 s here), then the runner
    stops naming it; another migrator's hold (the admin's own login) is waited for until it lets go."""
    pg = private_postgres
    directory, version = _next_release(tmp_path, monkeypatch)
    key = 0x746F6B76
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute("GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_lock(bigint) TO PUBLIC")
        with psycopg.connect(pg.analyst_dsn, autocommit=True) as analyst:
            analyst.execute("SELECT pg_advisory_lock(%s)", (key,))  # then idle: in no transaction
            started = time.monotonic()
            with pytest.raises(migrations.MigrationLockTimeout) as refused:
                migrations.migrate(pg.admin_dsn, directory)
            stranger_seconds = time.monotonic() - started
            analyst_pid = analyst.info.backend_pid
        admin.execute("SELECT pg_advisory_lock(%s)", (key,))  # another migrator, the same login: waited for
        outcome: dict[str, object] = {}
        runner = threading.Thread(target=lambda: outcome.update(applied=migrations.migrate(pg.admin_dsn, directory)))
        runner.start()
        runner.join(6)  # past the stranger's bound: still waiting, not refused
        waited_for_migrator = runner.is_alive()
        admin.execute("SELECT pg_advisory_unlock(%s)", (key,))
        runner.join(30)
    message = str(refused.value)
    print(
        f"MIGRATORS-LOCK: a stranger named after {stranger_seconds:.1f} s; a migrator waited for {waited_for_migrator}"
    )
    login = conninfo_to_dict(pg.analyst_dsn)["user"]
    assert 4.0 <= stranger_seconds < 6.5, stranger_seconds
    assert f"pid {analyst_pid} (login {login}" in message and "not a migrator" in message, message
    assert waited_for_migrator and outcome.get("applied") == [version], outcome
