"""Review 34, R34-12: the lock watchdog's credentials rotate under it, and it logs in again with the new ones.

In Kubernetes its login is Vault's (database secrets engine, `database/creds/tokenvault-watchdog`): the agent renders
it into a file and renders it again with a new login as each lease ends, and Vault drops the old login. The pod
sourced that file once at its start, so the warm connection survived but any reconnection (a Postgres restart, a
network blip) was refused until the pod restarted (~70 s, then CrashLoopBackOff's delay): blind exactly when it must
reconnect. Now TOKENVAULT_WATCHDOG_DSN_FILE names the file and every (re)connection reads it. Each test runs on a
PostgreSQL cluster of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack.postgres import Postgres
from devstack.procs import free_port, stop_pid, wait_until
from devstack.services import start_lock_watchdog
from tests.integration.own_cluster import cluster_of_its_own
from tests.integration.test_lock_watchdog import _ENDED_LINE, _QUARANTINE_WRITE, _metric, filling
from vault_service.entrypoints.lock_watchdog import main

_LAST_LOOK = "tokenvault_lock_watchdog_last_look_timestamp_seconds"


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own, with the stack's logins."""
    with cluster_of_its_own(tmp_path / "pg") as postgres:
        yield postgres


def _vault_login(admin: psycopg.Connection, pg: Postgres, name: str, limit: int = 3) -> tuple[str, str]:
    """A login as Vault's database engine makes it for `tokenvault-watchdog` (docs/production.md, step 3): its DSN
    and password."""
    password = secrets.token_urlsafe(18)
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {} IN ROLE tokenvault_watchdog").format(
            sql.Identifier(name), sql.Literal(password), sql.Literal(limit)
        )
    )
    return make_conninfo(pg.watchdog_dsn, user=name, password=password), password


def _render(path: Path, dsn: str) -> None:
    """Write `dsn` into `path` as the agent renders a template: a new file renamed over the old one."""
    new = path.with_suffix(".new")
    new.write_text(dsn + "\n")
    new.chmod(0o600)
    os.replace(new, path)


def _sessions(admin: psycopg.Connection, login: str) -> list[int]:
    rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s", (login,)).fetchall()
    return [int(row[0]) for row in rows]


@pytest.mark.timeout(180)
def test_the_watchdog_logs_in_with_the_rotated_credentials_of_its_dsn_file_and_keeps_ending_hogs(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """The agent renders a new login into the file, Vault drops the old one, the watchdog's connection is ended:
    it logs in again as the new login, is healthy, and ends an ETL session filling the lock table within 5 s. Its
    log names no login and no password. Before, the DSN was read once: every reconnection was refused."""
    pg = private_postgres
    dsn_file = tmp_path / "secrets" / "dsn"
    dsn_file.parent.mkdir()
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    env = {"TOKENVAULT_WATCHDOG_DSN_FILE": str(dsn_file), "TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}
    probe = {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        first_dsn, first_password = _vault_login(admin, pg, "v-watchdog-first")
        _render(dsn_file, first_dsn)
        pid = start_lock_watchdog(env, log_file)
        try:
            wait_until(lambda: main(probe, ["health"]) == 0, "a look", 10, pid, log_file)
            old_sessions = _sessions(admin, "v-watchdog-first")
            assert len(old_sessions) == 3, old_sessions  # its warm connection and spares: every slot (A4)
            # The lease ends: the agent renders the next login's DSN, Vault drops the old login (its revocation).
            second_dsn, second_password = _vault_login(admin, pg, "v-watchdog-second")
            _render(dsn_file, second_dsn)
            admin.execute('DROP ROLE "v-watchdog-first"')
            # Its connection ended under it (a Postgres restart, a network blip): it must log in again.
            ended = admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (old_sessions,))
            assert ended.fetchall() == [(True,)] * 3
            cut = time.monotonic()
            wait_until(lambda: len(_sessions(admin, "v-watchdog-second")) >= 1, "a login as the new one", 10, pid,
                       log_file)  # fmt: skip
            again = time.monotonic() - cut
            wait_until(lambda: main(probe, ["health"]) == 0, "a look", 10, pid, log_file)
            with filling(_QUARANTINE_WRITE, pg.etl_dsn, seconds=30.0) as filler:  # and it keeps looking
                filler.start()
                filler.thread.join(35)
            print(f"WATCHDOG: logged in as the rotated login {again:.2f} s after its connection was ended; the ETL's"
                  f" filler ended after {filler.ended_after} s")  # fmt: skip
        finally:
            stop_pid(pid)
    assert filler.ended_after is not None and filler.ended_after < 5.0, "the ETL's filler was not ended within 5 s"
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    ended_lines = [line for line in lines if _ENDED_LINE in str(line.get("message"))]
    assert [line["pid"] for line in ended_lines] == [filler.pid]
    assert not [line for line in lines if line.get("level") == "ERROR" and line not in ended_lines], lines
    for secret in (first_password, second_password, "v-watchdog"):
        assert secret not in text


def test_a_dsn_file_missing_empty_or_exposing_the_password_is_refused_at_the_start(
    private_postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 saying what is wrong with the file, never quoting the DSN; both settings at once is refused too."""
    pg = private_postgres
    dsn_file = tmp_path / "dsn"
    setting = {"TOKENVAULT_WATCHDOG_DSN_FILE": str(dsn_file)}
    assert main(setting, []) == 2
    assert "TOKENVAULT_WATCHDOG_DSN_FILE points to" in capsys.readouterr().err  # not there (yet)
    dsn_file.write_text("\n")
    assert main(setting, []) == 2
    assert "is empty" in capsys.readouterr().err
    exposed = pg.watchdog_dsn.partition("?")[0]  # no require_auth: libpq would send the password to an impostor
    dsn_file.write_text(exposed)
    assert main(setting, []) == 2
    err = capsys.readouterr().err
    assert "may reach the database over TCP" in err and exposed not in err
    dsn_file.write_text(pg.watchdog_dsn)
    assert main(setting | {"TOKENVAULT_WATCHDOG_DSN": pg.watchdog_dsn}, []) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_the_watchdog_whose_login_is_dropped_under_its_live_sessions_logs_in_as_the_rendered_one(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Vault's revocation at a lease's end drops the login and leaves its sessions (its default statements end none):
    each statement of theirs is refused from then on. The watchdog's warm connection and spares were such sessions,
    kept because they were not broken: every look failed (InsufficientPrivilege) for ever, every rule off, and it
    never logged in as the login the agent had rendered (review 36, R36-3: 32 failed looks in 8 s, 0 sessions of the
    new login). Now a refused look closes its connection: within seconds it looks as the new login, holds its slots
    - all 5 of its CONNECTION LIMIT, not the first login's 3 (R36-8: the limit was read once) - and the dropped
    login's sessions are gone."""
    pg = private_postgres
    dsn_file = tmp_path / "secrets" / "dsn"
    dsn_file.parent.mkdir()
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    env = {"TOKENVAULT_WATCHDOG_DSN_FILE": str(dsn_file), "TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}
    orphans = "SELECT count(*) FROM pg_stat_activity WHERE usesysid IS NOT NULL AND usename IS NULL"
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        first_dsn, _ = _vault_login(admin, pg, "v-watchdog-first")
        _render(dsn_file, first_dsn)
        pid = start_lock_watchdog(env, log_file)
        try:
            wait_until(lambda: len(_sessions(admin, "v-watchdog-first")) == 3, "its slots held", 10, pid, log_file)
            second_dsn, _ = _vault_login(admin, pg, "v-watchdog-second", limit=5)
            _render(dsn_file, second_dsn)
            admin.execute('DROP ROLE "v-watchdog-first"')  # as Vault's revocation: its sessions left alive
            dropped = time.monotonic()
            wait_until(lambda: len(_sessions(admin, "v-watchdog-second")) == 5, "the new login's slots held", 10, pid,
                       log_file)  # fmt: skip
            again = time.monotonic() - dropped
            held_at = time.time()
            wait_until(lambda: _metric(port, _LAST_LOOK) > held_at, "a look since", 10, pid, log_file)
            left = admin.execute(orphans).fetchone()
            print(f"WATCHDOG: looking as the rendered login {again:.2f} s after the old one was dropped; left {left}")
        finally:
            stop_pid(pid)
    assert left == (0,), "the dropped login's sessions were kept"
