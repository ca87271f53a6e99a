"""Any login's session filling PostgreSQL's shared lock table is ended by the operators' watchdog (migration 0048).

Attack 29, F1/F2 for the ETL's login: `SAVEPOINT a; INSERT INTO public.etl_quarantine ...` thousands of times in one
transaction (one XID lock per subtransaction that wrote), or temporary tables in a loop (refused since 0051: review 34,
R34-1), filled the table and every vault call failed; the vault's login may not end the ETL's sessions (its own rule,
0047, ends its role's only). The watchdog - `python -m vault_service.entrypoints.lock_watchdog`, started here as the
stack starts it, logged in as a login IN ROLE tokenvault_watchdog - ends it. Each test runs on a PostgreSQL cluster of
its own (a full table breaks every session of its cluster); each filler is always stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from devstack.isolation import python_command
from devstack.postgres import Postgres, pg_ctl
from devstack.procs import free_port, spawn, stop_pid, wait_until
from devstack.services import start_lock_watchdog
from devstack.stack import REPO, lock_watchdog_env
from etl_service.adapters.postgres import PostgresLoginStore
from etl_service.domain.messages import QuarantineRecord, UserLoginRow
from tests.conftest import running_vault
from tests.integration.member_logins import member_login
from tests.integration.own_cluster import cluster_of_its_own
from tests.integration.test_lock_hogs_ended import _WRITE, Filler, _calls, _issue, _locks_by_pid, _max_locks
from vault_service.adapters.postgres.lock_hogs import ANY_LOGIN_HOGS, HOG_LOCKS, HogRule, LockHogWatch
from vault_service.adapters.postgres.watchdog_login import WatchdogLogin
from vault_service.entrypoints.lock_watchdog import main

_ENDED_LINE = "entries of PostgreSQL's lock table"
_QUARANTINE_WRITE = (
    "SAVEPOINT a; INSERT INTO public.etl_quarantine (event_id, sqs_message_id, reason, detail)"
    " VALUES ('hog-{n}', 'a', 'a', 'a');"
)
"""The ETL's login's fill (attack 29, F1): a savepoint never released, a quarantine row apiece."""
_TEMP_TABLE_WRITE = "SAVEPOINT a; CREATE TEMP TABLE hog_{n} (a integer);"
"""Its fill with temporary tables (F2): each holds lock entries until the transaction ends. Refused since 0051."""
SENT = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own, with the vault's settings and the stack's logins (the watchdog's)."""
    with cluster_of_its_own(tmp_path / "pg") as postgres:
        yield postgres


@contextlib.contextmanager
def watchdog(pg: Postgres, log_file: Path, extra: dict[str, str] | None = None) -> Iterator[int]:
    """The watchdog process, started as the stack starts it (its "started" line: checked and looking); stopped.

    `extra`: more of its settings (its metrics port)."""
    pid = start_lock_watchdog(lock_watchdog_env({"PG_WATCHDOG_DSN": pg.watchdog_dsn}) | (extra or {}), log_file)
    try:
        yield pid
    finally:
        stop_pid(pid)


@contextlib.contextmanager
def looking_watchdog(pg: Postgres, log_file: Path) -> Iterator[tuple[int, int, dict[str, str]]]:
    """`watchdog` with its plain metrics on a port of its own, once `health` says it looked: (pid, port, the
    settings `main(..., ["health"])` probes it with); stopped."""
    port = free_port()
    probe = {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}
    with watchdog(pg, log_file, probe) as pid:
        wait_until(lambda: main(probe, ["health"]) == 0, "a look", 10, pid, log_file)
        yield pid, port, probe


def _lines(log_file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


@contextlib.contextmanager
def filling(write: str, dsn: str, seconds: float) -> Iterator[Filler]:
    """An ETL-login session sending `write` in batches of 500, until ended or `seconds` (always stopped)."""
    filler = Filler(dsn, most=110_000, seconds=seconds, write=write)
    try:
        yield filler
    finally:
        filler.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("write", "max_locks", "drop_first"),
    [
        (_QUARANTINE_WRITE, None, False),
        (_QUARANTINE_WRITE, 64, False),
        (_QUARANTINE_WRITE, 64, True),
    ],
    ids=["savepoints-shipped-512", "savepoints-old-default-64", "savepoints-64-after-its-connection-dropped"],
)
def test_an_etl_session_filling_the_lock_table_is_ended_by_the_watchdog_and_the_vault_serves(
    stack_env: dict[str, str], private_postgres: Postgres, tmp_path: Path, write: str, max_locks: int | None,
    drop_first: bool,
) -> None:  # fmt: skip
    """Ended within 5 s, one line (pid, entries; no statement), vault calls served after. Before 0048 and the
    watchdog nothing ended it (the vault's rule leaves other roles' sessions: test_lock_hogs_ended.py)."""
    pg = private_postgres
    if max_locks is not None:
        _max_locks(pg, max_locks)
    log_file = tmp_path / "lock_watchdog.log"
    with running_vault(stack_env, TOKENVAULT_DATABASE_DSN=pg.vault_dsn) as vault, watchdog(pg, log_file):
        token, value = _issue(vault, stack_env)
        if drop_first:  # its connections ended under it: the next look logs in again
            time.sleep(1.0)  # its first look (0.25 s after its start) opened it
            with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'watchdog'"
                ).fetchall()
            assert ended == [(True,)] * 3  # its warm connection and its spares: its login's every slot (A4)
        time.sleep(1.0)
        with filling(write, pg.etl_dsn, seconds=30.0) as filler:
            filler.start()
            filler.thread.join(35)
            after = _calls(vault, stack_env, token, value, 2.0)
            print(
                f"WATCHDOG: ETL filler ended after {filler.ended_after} s with {filler.nested} statements sent,"
                f" {filler.refused} batches refused; calls after: {after}"
            )
    assert filler.ended_after is not None and filler.ended_after < 5.0, "the ETL's filler was not ended within 5 s"
    assert after and all(outcome == "ok" for _, outcome in after), after
    lines = _lines(log_file)
    ended_lines = [line for line in lines if _ENDED_LINE in str(line.get("message"))]
    assert len(ended_lines) == 1, ended_lines
    assert ended_lines[0]["pid"] == filler.pid and int(str(ended_lines[0]["locks"])) > HOG_LOCKS
    text = log_file.read_text()
    assert "etl_quarantine" not in text and "hog_" not in text and "hog-" not in text and "tokenvault_etl" not in text
    if drop_first:
        assert any("a look failed" in str(line.get("message")) for line in lines)


@pytest.mark.timeout(120)
def test_the_etls_temporary_table_fills_are_refused_at_their_first_table(private_postgres: Postgres) -> None:
    """Review 34, R34-1: the ETL's login staged a temporary inheritance tree (`CREATE TEMP TABLE p`, then children
    `INHERITS (p)` in small transactions), then `LOCK TABLE p IN ACCESS EXCLUSIVE MODE` filled the lock table in
    0.06-0.14 s, before the watchdog's next look, and every look after failed `out of shared memory`: never ended.
    Since 0051 its login has no TEMPORARY: the tree's first table, and F2's table-per-savepoint fill, are refused;
    it may create no table elsewhere either, nor take a strong lock (UPDATE, DELETE or TRUNCATE) on any relation."""
    pg = private_postgres
    with psycopg.connect(pg.etl_dsn) as etl:
        for first in (
            "CREATE TEMP TABLE p (a integer)",  # the reviewer's tree: its parent
            "CREATE TABLE pg_temp.p (a integer)",
            _TEMP_TABLE_WRITE.format(n=0),  # F2's fill: its first table
            "CREATE TABLE public.p (a integer)",
            "CREATE UNLOGGED TABLE public.p (a integer)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                etl.execute(first)
            etl.rollback()
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        lockable = admin.execute(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            " AND has_table_privilege('tokenvault_etl', c.oid, 'UPDATE,DELETE,TRUNCATE')"
        ).fetchall()
        may_temp = admin.execute(
            "SELECT r.rolname FROM pg_catalog.pg_roles r WHERE NOT r.rolsuper AND r.rolcanlogin"
            " AND NOT pg_has_role(r.oid, 'tokenvault_owner', 'MEMBER')"
            " AND has_database_privilege(r.oid, current_database(), 'TEMPORARY')"
        ).fetchall()
    # pg_settings was the last (PUBLIC's UPDATE, revoked by 0052: attack 31, F3)
    assert lockable == [] and may_temp == [], (lockable, may_temp)


@pytest.mark.timeout(120)
def test_the_watchdogs_login_may_do_nothing_but_end_the_sessions_of_the_rule(private_postgres: Postgres) -> None:
    """It reads no table, runs no other function, creates no temporary table, signals no session itself; through
    0048's function it ends no ETL session under the threshold, nor the owner's members', nor a superuser's."""
    pg = private_postgres
    with (
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.watchdog_dsn, autocommit=True) as dog,
    ):
        password = secrets.token_urlsafe(18)
        admin.execute(  # a migrator of a managed PostgreSQL: a member of the owner, not a superuser
            sql.SQL("CREATE ROLE migrator LOGIN PASSWORD {} IN ROLE tokenvault_owner").format(sql.Literal(password))
        )
        relations = admin.execute(
            "SELECT c.oid::regclass::text, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('vault', 'public', 'watchdog') AND c.relkind IN ('r', 'p', 'v', 'm', 'S')"
        ).fetchall()
        functions = admin.execute(
            "SELECT p.oid::regprocedure::text, p.oid, p.pronamespace FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname IN ('vault', 'public', 'watchdog')"
        ).fetchall()
        assert len(relations) > 10 and len(functions) > 20
        readable = [
            r
            for r, oid in relations
            if dog.execute("SELECT has_table_privilege(%s::oid, 'SELECT,INSERT,UPDATE,DELETE')", (oid,)).fetchone()
            != (False,)
        ]
        runnable = [  # EXECUTE and USAGE on its schema (a few of schema vault's trigger functions are PUBLIC's)
            f
            for f, oid, schema in functions
            if dog.execute(
                "SELECT has_function_privilege(%s::oid, 'EXECUTE') AND has_schema_privilege(%s::oid, 'USAGE')",
                (oid, schema),
            ).fetchone()
            == (True,)
        ]
        expected = [
            "watchdog.end_lock_hogs()",
            "watchdog.end_notify_queue_holder()",
            "watchdog.end_old_transactions(double precision)",
            "watchdog.end_vault_sessions_past_budget(integer)",
        ]
        assert readable == [] and sorted(runnable) == expected, (readable, runnable)
        for statement in (
            "SELECT count(*) FROM public.user_logins",
            "SELECT count(*) FROM public.etl_quarantine",
            "SELECT count(*) FROM vault.tokens",
            "CREATE TEMP TABLE t (a integer)",
            "SELECT pg_advisory_lock(1)",
            "SELECT * FROM vault.end_lock_hogs('{}')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                dog.execute(statement)
        may = {
            role: admin.execute(
                "SELECT has_function_privilege(%s, 'watchdog.end_lock_hogs()', 'EXECUTE')", (role,)
            ).fetchone()
            for role in ("tokenvault_watchdog", "tokenvault_vault", "tokenvault_etl", "tokenvault_analyst", "public")
        }
        assert may == {
            "tokenvault_watchdog": (True,),
            "tokenvault_vault": (False,),
            "tokenvault_etl": (False,),
            "tokenvault_analyst": (False,),
            "public": (False,),
        }

        def hold(conn: psycopg.Connection, n: int, write: str) -> int:
            conn.execute("".join(write.format(n=i) for i in range(n)).encode())
            return _locks_by_pid(admin)[conn.info.backend_pid]

        with (
            psycopg.connect(pg.etl_dsn) as small_etl,
            psycopg.connect(pg.admin_dsn) as superuser,
            psycopg.connect(make_conninfo(pg.admin_dsn, user="migrator", password=password)) as owner_member,
        ):
            held = {
                "etl": hold(small_etl, 200, _QUARANTINE_WRITE),
                "superuser": hold(superuser, 400, _WRITE),  # call-budget rows of made-up clients (the owner's)
                "owner's member": hold(owner_member, 400, _WRITE.replace("hog-", "hog-o-")),
            }
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # no pg_signal_backend of its own
                dog.execute("SELECT pg_terminate_backend(%s)", (small_etl.info.backend_pid,))
            found = dog.execute("SELECT pid, locks, ended FROM watchdog.end_lock_hogs()").fetchall()
            for conn in (small_etl, superuser, owner_member):
                assert conn.execute("SELECT 1").fetchone() == (1,)  # still there
    print(f"WATCHDOG spared: entries held {held}; rule found {found}")
    assert held["etl"] <= HOG_LOCKS < min(held["superuser"], held["owner's member"])
    assert [row for row in found if row[2]] == []


def _rows(tag: str, n: int) -> list[UserLoginRow]:
    """`n` rows as the ETL loads them (tokens made up: the loader stores what it is given)."""
    day = date(2024, 1, 1)
    return [
        UserLoginRow(
            f"user-{i}",
            "android",
            f"tok_ip_{tag}_{i}",
            f"tok_dev_{tag}_{i}",
            "en_US",
            1,
            day,
            "1.0",
            f"{tag}-e{i}",
            f"{tag}-m{i}",
            SENT,
        )
        for i in range(n)
    ]


@pytest.mark.timeout(180)
def test_the_etls_own_busiest_session_stays_far_under_the_threshold(private_postgres: Postgres, tmp_path: Path) -> None:
    """The ETL's real loader (PostgresLoginStore): 2,000-row batches by COPY, the same again (unnest merge,
    reused-event check) with 200 quarantine records, while the watchdog looks every 0.25 s: none ended."""
    pg = private_postgres
    peak: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            while not stop.is_set():
                for pid, n in _locks_by_pid(admin).items():
                    peak[pid] = max(peak.get(pid, 0), n)
                time.sleep(0.002)

    log_file = tmp_path / "lock_watchdog.log"
    with watchdog(pg, log_file), ConnectionPool(pg.etl_dsn, min_size=1, max_size=1, open=True) as pool:
        with pool.connection() as conn:
            etl_pid = conn.info.backend_pid
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            store = PostgresLoginStore(pool)
            rows = _rows("load", 2000)
            assert store.write(rows, []).rows_inserted == 2000
            quarantined = [QuarantineRecord(f"q-{i}", f"qm-{i}", "invalid_json", "not JSON", SENT) for i in range(200)]
            again = store.write([*rows, *_rows("more", 2000)], quarantined)
            assert again.rows_inserted == 2000 and again.quarantined_inserted == 200
            time.sleep(0.5)
        finally:
            stop.set()
            sampler.join(5)
        with pool.connection() as conn:
            assert conn.info.backend_pid == etl_pid  # never ended
    busiest = peak.get(etl_pid, 0)
    print(f"WATCHDOG ETL: the ETL's loading session held at most {busiest} lock-table entries (rule: over {HOG_LOCKS})")
    assert not [line for line in _lines(log_file) if _ENDED_LINE in str(line.get("message"))]
    assert 0 < busiest < HOG_LOCKS // 4


def test_the_watchdog_refuses_to_start_misconfigured(
    private_postgres: Postgres, capsys: pytest.CaptureFixture[str]
) -> None:
    """No DSN; a login not IN ROLE tokenvault_watchdog (the vault's); a database without migration 0048: exit 2,
    saying what to fix."""
    pg = private_postgres
    assert main({}, []) == 2
    assert "TOKENVAULT_WATCHDOG_DSN is required" in capsys.readouterr().err
    assert main({"TOKENVAULT_WATCHDOG_DSN": pg.vault_dsn}, []) == 2
    assert "IN ROLE tokenvault_watchdog" in capsys.readouterr().err
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute("DROP FUNCTION watchdog.end_lock_hogs()")
    assert main({"TOKENVAULT_WATCHDOG_DSN": pg.watchdog_dsn}, []) == 2
    assert "apply migration 0048" in capsys.readouterr().err


def _running(pid: int) -> bool:
    """Whether the child `pid` still runs (not exited, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.timeout(120)
def test_the_watchdog_started_while_its_database_is_down_waits_for_it_and_looks_once_it_is_up(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Review 34, R34-4: PostgreSQL down (a failover) when the watchdog starts is an outage, not a misconfiguration:
    it keeps trying (logged), stays alive for its liveness probe, and looks as soon as the database is back. Before,
    it exited 2 ("cannot log in") and Kubernetes' CrashLoopBackOff kept it off for minutes."""
    pg = private_postgres
    pg_ctl(pg.data_dir, pg.bindir, pg.run_as, "stop")
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    env = lock_watchdog_env({"PG_WATCHDOG_DSN": pg.watchdog_dsn}) | {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}
    probe = {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}
    pid = spawn(python_command(None, Path(sys.prefix), "vault_service.entrypoints.lock_watchdog"), log_file, env, REPO)
    try:
        retries = lambda: log_file.read_text(errors="replace").count("cannot be reached") >= 3  # noqa: E731
        wait_until(retries, "retries", 30, pid, log_file)
        assert _running(pid), log_file.read_text()
        assert main(probe, ["health", "--alive"]) == 0  # liveness: its loop runs
        assert main(probe, ["health"]) == 1  # readiness: it has not looked
        pg_ctl(pg.data_dir, pg.bindir, pg.run_as, "start", port=pg.port)
        up = time.monotonic()
        wait_until(lambda: '"started"' in log_file.read_text(errors="replace"), "started", 30, pid, log_file)
        wait_until(lambda: main(probe, ["health"]) == 0, "a look", 10, pid, log_file)
        print(f"WATCHDOG: looking {time.monotonic() - up:.1f} s after its database came back")
    finally:
        stop_pid(pid)
    waits = [line for line in _lines(log_file) if "cannot be reached" in str(line.get("message"))]
    assert waits and all(float(str(line["retry_in_seconds"])) <= 15.0 for line in waits)


def test_a_login_the_server_refuses_is_a_misconfiguration(
    private_postgres: Postgres, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong password or a login that does not exist: exit 2 at once, saying the server refuses the login."""
    pg = private_postgres
    wrong = make_conninfo(pg.watchdog_dsn, password="not-" + secrets.token_hex(4))
    assert main({"TOKENVAULT_WATCHDOG_DSN": wrong}, []) == 2
    assert "refuses the login" in capsys.readouterr().err
    nobody = make_conninfo(pg.watchdog_dsn, user="nobody_" + secrets.token_hex(4))
    assert main({"TOKENVAULT_WATCHDOG_DSN": nobody}, []) == 2
    assert "refuses the login" in capsys.readouterr().err


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        found = re.search(rf"^{name} (\S+)$", reply.read().decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.timeout(120)
def test_the_watchdog_whose_function_disappears_after_its_start_is_unhealthy(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Review 34, R34-6: migration 0048's function dropped after the start (a rollback, a restore) and the
    watchdog's connection opened again: each look watches nothing, so it is a failed look (logged as an error,
    counted) and `health` says unhealthy. Before, the look returned nothing, counted as a success, and health said
    healthy while nothing was watched."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    with looking_watchdog(pg, log_file) as (pid, port, probe):
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            admin.execute("DROP FUNCTION watchdog.end_lock_hogs()")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'watchdog'")
        wait_until(lambda: main(probe, ["health"]) == 1, "unhealthy", 20, pid, log_file)
        assert main(probe, ["health", "--alive"]) == 0  # its loop runs: no restart, it says what is wrong
        assert _metric(port, "tokenvault_lock_watchdog_look_failures_total") > 0
    errors = [line for line in _lines(log_file) if line.get("level") == "ERROR"]
    assert any("no longer in the database" in str(line.get("message")) for line in errors), errors


@pytest.mark.timeout(120)
def test_a_session_gone_before_it_is_ended_is_not_reported_as_refused(
    private_postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    """Review 34, R34-7: a hog already gone (or exiting) when it is signalled and one the server refuses to end are
    told apart and each worded as it is. Before, both said "a superuser's, or the owner lacks pg_signal_backend"
    (4-7 lines per run for ETL sessions simply exiting), pointing the operator at grants that were not the cause."""
    pg = private_postgres
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that is no backend: as a hog's, ended or disconnected between the count and the signal
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "CREATE FUNCTION public.hog_gone() RETURNS TABLE (pid integer, locks bigint, ended boolean)"
                " LANGUAGE plpgsql AS $$ BEGIN pid := {pid}; locks := 300;"
                " ended := pg_catalog.pg_terminate_backend({pid}); RETURN NEXT; END $$"
            ).format(pid=sql.Literal(gone.pid))
        )
        admin.execute("REVOKE pg_signal_backend FROM tokenvault_owner")  # 0048's function is refused from now
    rule = HogRule("SELECT h.pid, h.locks, h.ended FROM public.hog_gone() h", "public.hog_gone()", "-", "-", False)
    caplog.set_level(logging.INFO, logger="vault_service.adapters.postgres.lock_hogs")
    as_admin = LockHogWatch(lambda: psycopg.connect(pg.admin_dsn), rule=rule)
    as_watchdog = LockHogWatch(lambda: psycopg.connect(pg.watchdog_dsn), rule=ANY_LOGIN_HOGS)
    with psycopg.connect(pg.etl_dsn) as hog:
        # an ETL session over the threshold, alive: refused (the owner lacks the grant); by savepoints that each
        # write (its temporary tables are refused since 0051)
        hog.execute("".join(_QUARANTINE_WRITE.format(n=n) for n in range(300)).encode())
        try:
            (was_gone,) = as_admin.end_lock_hogs()
            (refused,) = as_watchdog.end_lock_hogs()
        finally:
            as_admin.close()
            as_watchdog.close()
        hog_pid = hog.info.backend_pid
    assert (was_gone.pid, was_gone.ended, was_gone.gone) == (gone.pid, False, True)
    assert (refused.pid, refused.ended, refused.gone) == (hog_pid, False, False) and refused.locks > HOG_LOCKS
    said = {r.pid: (r.levelname, r.getMessage()) for r in caplog.records if hasattr(r, "pid")}
    assert said[gone.pid][0] == "INFO" and "already gone or exiting" in said[gone.pid][1]
    assert "pg_signal_backend" not in said[gone.pid][1]
    assert said[hog_pid][0] == "WARNING" and "refused to end it" in said[hog_pid][1]


def _iptables_installed() -> None:
    """apt-get install iptables where it is missing (a fresh machine: CI installs docker.io, which brings it, only in
    the compose test, after this one), as the compose test installs its engine; root is needed either way."""
    if shutil.which("iptables") is not None:
        return
    assert os.geteuid() == 0, "this test drops packets with iptables: run it as root (CI does)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "iptables"], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip


@contextlib.contextmanager
def _server_unreachable(port: int) -> Iterator[None]:
    """Every packet to and from the cluster's TCP `port` dropped (iptables; always removed): its connections half-open,
    as after a failover or a partition."""
    rules = [["INPUT", "-p", "tcp", "-i", "lo", "--dport", str(port), "-j", "DROP"],
             ["INPUT", "-p", "tcp", "-i", "lo", "--sport", str(port), "-j", "DROP"]]  # fmt: skip
    _iptables_installed()
    added = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)


@pytest.mark.timeout(180)
def test_a_look_on_a_half_open_connection_fails_within_a_bound_and_sigterm_stops_it(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Review 34, R34-5: its server gone without a word (packets dropped: a failover, a partition), a look fails
    within ~20 s (TCP keepalives, tcp_user_timeout; statement_timeout on the server), its loop keeps running and a
    SIGTERM stops it. Before, the look waited for the kernel (~15 minutes), the watchdog and its SIGTERM with it.
    Needs root and iptables (the dev container has both)."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    with looking_watchdog(pg, log_file) as (pid, _, probe):
        # its connections' bound, as a login of its role sees it (its own login's slots are all its: A4)
        with member_login(pg.admin_dsn, "tokenvault_watchdog") as member:
            with psycopg.connect(member) as own:
                assert own.execute("SHOW statement_timeout").fetchone() == ("0",)  # the role's own: none
            with WatchdogLogin(member).connect() as its:  # the watchdog's: bounded
                assert its.execute("SHOW statement_timeout").fetchone() == ("5s",)
        with _server_unreachable(pg.port):
            cut = time.monotonic()
            failed = lambda: "a look failed" in log_file.read_text(errors="replace")  # noqa: E731
            wait_until(failed, "a failed look", 40, pid, log_file)
            print(f"WATCHDOG: a look on a half-open connection failed after {time.monotonic() - cut:.1f} s")
            assert time.monotonic() - cut < 30
            assert main(probe, ["health", "--alive"]) == 0
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not _running(pid), "stopped", 20, None, None)
    assert '"stopped"' in log_file.read_text()
