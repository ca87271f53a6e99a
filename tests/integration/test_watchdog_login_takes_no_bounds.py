"""The watchdog's login ends no session the watchdog's rules would not, whatever it passes (migration 0060; F10).

Attack 32, F10: watchdog.end_notify_queue_holder(bound, before) took its bound and its time anchor from the caller,
and watchdog.end_old_transactions(bound) its bound: the watchdog's login (an insider too - a stolen pod credential)
looped `end_notify_queue_holder(-1, 'infinity')` on an EMPTY queue and ended one session in a transaction per call,
of any login - 76 of the vault's sessions and the ETL's batch in 8 s - and `end_old_transactions(0.001)` ended every
analyst's and the ETL's transaction at once. Now the bounds, the anchor and the pace are the server's. Here, as the
watchdog's login on a cluster of the test's own (its migrations, its logins): the tester's calls, then its own
listener holding the queue's tail while its own notifier fills it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import WATCHDOG_LOGIN, Postgres
from devstack.procs import free_port
from tests.integration.member_logins import member_login
from tests.integration.test_lock_watchdog import _lines, _metric, private_postgres, watchdog

__all__ = ["private_postgres"]  # the fixture, used by name

QUEUE_MAX_BYTES = 8 * 1024**3
"""PostgreSQL 15's NOTIFY queue at most (pg_notification_queue_usage() is a share of it)."""
BOUND_BYTES = 0.001 * QUEUE_MAX_BYTES
"""The server's bound (watchdog.rule_bounds' default; ~8.4 MB)."""
CAP_BYTES = 24 * 1024**2
"""The notifier stops here in any case."""
_SEND = "SELECT count(pg_notify('q', repeat('x', 7900) || g)) FROM generate_series(1, 128) g"
"""~1 MB of notifications, one transaction."""
_TESTERS_CALL = "SELECT pid, login FROM watchdog.end_notify_queue_holder(-1, 'infinity')"
_THE_CALL = "SELECT pid, login FROM watchdog.end_notify_queue_holder()"


def _end_a_holder(dog: psycopg.Connection) -> tuple[int, str] | None:
    """The attacker's call: the tester's (bound -1, anchor infinity) where the function takes them, else the one
    there is. The session it ended, if any."""
    try:
        row = dog.execute(_TESTERS_CALL).fetchone()
    except psycopg.errors.UndefinedFunction:  # 0060: no parameters to pass
        row = dog.execute(_THE_CALL).fetchone()
    return None if row is None or row[0] is None else (int(row[0]), str(row[1]))


def _there(admin: psycopg.Connection, pid: int) -> bool:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


def _queue_bytes(admin: psycopg.Connection) -> float:
    row = admin.execute("SELECT pg_notification_queue_usage()").fetchone()
    return float(row[0]) * QUEUE_MAX_BYTES if row else 0.0


@pytest.mark.timeout(60)
def test_the_watchdogs_login_ends_nothing_on_demand_and_its_own_listener_first(private_postgres: Postgres) -> None:
    """1. As the watchdog's login: end_old_transactions(0.001), the NOTIFY rule 100 times on an empty queue (the
    tester's -1, 'infinity') and end_vault_sessions_past_budget(1) end nothing: an analyst's fresh transaction, the
    ETL's, the vault's and its pool's 2 idle sessions stay.
    2. Its own listener holds the tail (LISTEN; BEGIN) while its own notifier fills the queue past the bound, and it
    calls the rule in a loop for 1.5 s: its listener is ended (first: before the ETL's older transaction), nothing
    else, the vault's session (older than all) stays in the same transaction. 3. A caller that LISTENs is refused.
    Before 0060: in part 1, end_old_transactions(0.001) ended the analyst's and the ETL's sessions, and the NOTIFY
    rule's first call the vault's (0059's budget of 1 the pool's: measured on 0059 alone before the NOTIFY calls)."""
    pg = private_postgres
    conns = {
        name: psycopg.connect(dsn, autocommit=True)
        for name, dsn in (
            ("vault", pg.vault_dsn),
            ("etl", pg.etl_dsn),
            ("analyst", pg.analyst_dsn),
            ("listener", pg.watchdog_dsn),
            ("notifier", pg.watchdog_dsn),
        )
    }
    with (
        contextlib.ExitStack() as closing,
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.watchdog_dsn, autocommit=True) as dog,
    ):
        for conn in conns.values():
            closing.callback(conn.close)
        pids = {name: conn.info.backend_pid for name, conn in conns.items()}
        conns["vault"].execute("BEGIN")  # a key job's hold: the oldest transaction of all
        xid = conns["vault"].execute("SELECT txid_current()").fetchone()
        conns["etl"].execute("BEGIN")  # a batch between two statements
        conns["etl"].execute("SELECT 1")
        conns["analyst"].execute("BEGIN")  # a fresh analyst's
        conns["analyst"].execute("SELECT 1")
        pool = [psycopg.connect(pg.vault_dsn, autocommit=True) for _ in range(2)]  # the vault's pool: 3 in all
        for conn in pool:
            closing.callback(conn.close)
        pool_pids = [conn.info.backend_pid for conn in pool]
        started = time.monotonic()
        old_rows = dog.execute("SELECT pid, login, ended FROM watchdog.end_old_transactions(0.001)").fetchall()
        old_ended = [(pid, login) for pid, login, ended in old_rows if pid is not None and ended]
        ended_on_demand = [found for _ in range(100) if (found := _end_a_holder(dog)) is not None]
        budget_rows = dog.execute("SELECT pid, login, ended FROM watchdog.end_vault_sessions_past_budget(1)").fetchall()
        budget_ended = [(pid, login) for pid, login, ended in budget_rows if pid is not None and ended]
        on_demand_seconds = time.monotonic() - started
        stayed = {name: _there(admin, pids[name]) for name in ("vault", "etl", "analyst")}
        stayed |= {f"pool {n}": _there(admin, pid) for n, pid in enumerate(pool_pids)}
        print(
            f"WD-LOGIN-ON-DEMAND: end_old_transactions(0.001) and 100 calls of the NOTIFY rule in"
            f" {on_demand_seconds:.2f} s (queue {_queue_bytes(admin) / 2**20:.1f} MB), then"
            f" end_vault_sessions_past_budget(1): ended {old_ended}, {ended_on_demand}, {budget_ended}; stayed {stayed}"
        )
        assert old_ended == [] and ended_on_demand == [] and budget_ended == [], (
            old_ended,
            ended_on_demand,
            budget_ended,
        )
        assert all(stayed.values()), stayed
        conns["analyst"].execute("COMMIT")

        # its own listener holds the tail (begun after the ETL's and the vault's transactions) and it fills the queue
        conns["listener"].execute("LISTEN q")
        conns["listener"].execute("BEGIN")
        conns["listener"].execute("SELECT 1")
        while _queue_bytes(admin) <= 1.2 * BOUND_BYTES and _queue_bytes(admin) < CAP_BYTES:
            conns["notifier"].execute(_SEND)
        filled = _queue_bytes(admin)
        ended: list[tuple[int, str]] = []
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            found = _end_a_holder(dog)
            if found is not None:
                ended.append(found)
            if not _there(admin, pids["listener"]) and _queue_bytes(admin) < CAP_BYTES:
                conns["notifier"].execute(_SEND)  # it goes on sending: the tail moves, the queue is cut
            time.sleep(0.02)
        after = _queue_bytes(admin)
        stayed = {name: _there(admin, pids[name]) for name in ("vault", "etl")}
        vault_same = conns["vault"].execute("SELECT txid_current()").fetchone() == xid
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):  # a caller that LISTENs: refused
            dog.execute("LISTEN q")
            dog.execute(_THE_CALL)
    print(
        f"WD-LOGIN-OWN-LISTENER: queue filled to {filled / 2**20:.1f} MB by its own notifier (bound"
        f" {BOUND_BYTES / 2**20:.1f} MB); calls for 1.5 s ended {ended}; queue after {after / 2**20:.1f} MB;"
        f" stayed {stayed}, the vault's transaction the same: {vault_same}"
    )
    assert [pid for pid, _ in ended] == [pids["listener"]], ended  # its own listener, and nothing else
    assert stayed == {"vault": True, "etl": True} and vault_same, stayed
    assert after < BOUND_BYTES, after


@pytest.mark.timeout(60)
def test_a_watchdog_set_under_the_databases_floor_says_so_at_its_start_and_keeps_the_floor(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS=2 on a database whose floor is the default 300 s: at its first look
    (its start) the watchdog logs one WARNING naming both, its gauge of the bound says 300, and an analyst's
    transaction 3 s old is not ended. Before 0060 it was ended at 2 s, the floor nowhere."""
    pg = private_postgres
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    settings = {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port), "TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS": "2"}
    with (
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.analyst_dsn, autocommit=True) as analyst,
    ):
        analyst.execute("BEGIN")
        analyst.execute("SELECT 1")
        held_at = time.monotonic()
        with watchdog(pg, log_file, settings):
            time.sleep(max(0.0, 3.0 - (time.monotonic() - held_at)))
            there = _there(admin, analyst.info.backend_pid)
            bound = _metric(port, "tokenvault_lock_watchdog_max_transaction_seconds")
    said = [line for line in _lines(log_file) if "under the database's floor" in str(line.get("message"))]
    print(
        f"WD-FLOOR: setting 2 s, floor 300 s: said {len(said)} time(s); gauge {bound}; the analyst's 3 s old: {there}"
    )
    assert there and bound == 300.0
    assert len(said) == 1 and said[0]["level"] == "WARNING" and said[0]["in_force_seconds"] == 300.0, said


@pytest.mark.timeout(60)
def test_another_session_of_the_watchdogs_login_holding_the_notify_rules_row_is_ended_within_seconds(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """F10's remainder: the watchdog's login calls the NOTIFY rule inside a transaction and sits idle, so the rule's
    state row stays locked and every look of the real watchdog ends nothing (SKIP LOCKED). With migration 0061 the
    old-transaction rule ends such a session once its transaction is 2 s old (the watchdog's own looks are single
    statements of milliseconds); the real watchdog's own session is never ended, and its looks go on. Before 0061
    the holder stayed until the 300 s floor."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    with (
        contextlib.ExitStack() as closing,
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        member_login(pg.admin_dsn, "tokenvault_watchdog") as other_pod,  # its own login's slots are all its (A4)
        watchdog(pg, log_file, {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(free_port())}) as dog_pid,
    ):
        holder = psycopg.connect(other_pod, autocommit=True)
        closing.callback(holder.close)  # closed, not committed: the watchdog ends it
        holder.execute("BEGIN")
        holder.execute(_THE_CALL).fetchall()  # the state row, now locked until this transaction ends
        held_at, holder_pid = time.monotonic(), holder.info.backend_pid
        while _there(admin, holder_pid) and time.monotonic() - held_at < 8:
            time.sleep(0.05)
        ended_after = time.monotonic() - held_at
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (WATCHDOG_LOGIN,)).fetchone()
        watchdog_sessions = int(row[0]) if row else 0
    print(f"WD-ROW-HOLDER: ended after {ended_after:.2f} s; the watchdog's sessions left {watchdog_sessions}")
    assert ended_after < 2 + 1.5, f"the state row's holder was not ended ({ended_after:.2f} s)"
    lines = [line for line in _lines(log_file) if "whose transaction was older than" in str(line.get("message"))]
    assert [line["pid"] for line in lines] == [holder_pid], lines
    assert watchdog_sessions >= 1 and dog_pid  # the real watchdog's own session stayed, and it looked on


def _own_login_sessions(admin: psycopg.Connection) -> list[int]:
    rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s ORDER BY pid", (WATCHDOG_LOGIN,))
    return [int(row[0]) for row in rows.fetchall()]


@pytest.mark.timeout(60)
def test_a_copy_of_the_watchdogs_login_gets_no_session_while_it_runs(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Attack 33, A4: PostgreSQL lets a login end its own sessions, so a copy of the watchdog's credentials ended the
    real watchdog's session and held its login's 3 slots: every rule off, the NOTIFY queue filling at ~210 MB/s. Now
    the watchdog holds every slot of its login (a warm connection and spares up to its CONNECTION LIMIT) and ends any
    session of its login not its own. Here a copy logged in before the watchdog started (the one window left) is ended
    at its first looks (one ERROR line, counted), the watchdog then holds all 3 slots, and the copy's next logins are
    refused. Before: the copy stayed and logged in again at will."""
    pg = private_postgres
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        early = psycopg.connect(pg.watchdog_dsn, autocommit=True)  # in before the watchdog: the window left
        early_pid = early.info.backend_pid
        with contextlib.closing(early), watchdog(pg, log_file, {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}):
            started = time.monotonic()
            while time.monotonic() - started < 5 and (
                early_pid in _own_login_sessions(admin) or len(_own_login_sessions(admin)) < 3
            ):
                time.sleep(0.05)
            held_after = time.monotonic() - started
            held = _own_login_sessions(admin)
            refused: list[str] = []
            for _ in range(3):
                try:
                    psycopg.connect(pg.watchdog_dsn, connect_timeout=5).close()
                    refused.append("connected")
                except psycopg.OperationalError as error:
                    refused.append(" ".join(str(error).split())[-60:])
            counted = _metric(port, "tokenvault_lock_watchdog_own_login_strangers_total")
    said = [line for line in _lines(log_file) if "not this watchdog's" in str(line.get("message"))]
    print(
        f"WD-OWN-LOGIN: the early copy ({early_pid}) ended and every slot held after {held_after:.2f} s: {held};"
        f" the copy's logins then: {refused}; counted {counted}; said {len(said)}"
    )
    assert early_pid not in held and len(held) == 3, held
    assert all("too many connections for role" in outcome for outcome in refused), refused
    assert counted == 1.0 and [line["pid"] for line in said] == [early_pid], said
