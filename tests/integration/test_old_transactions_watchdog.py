"""Analysts' and the ETL's transactions older than a bound are ended by the operators' watchdog (migration 0057).

Attack 32, F2: an analyst's `BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM public.user_logins;` left
idle (or a long `SELECT pg_sleep(...)`: its statement's snapshot) keeps the xmin horizon, so every version of the
vault's metering row (vault.call_budget) written since is kept and each metering statement walks them all: +34 ns per
kept version, without bound (0.34 ms -> 2.56 ms per statement after 64,000 calls); nothing ended it. The watchdog -
the real process, as the stack starts it, on a cluster of the test's own, its bound set to 2 s for the test - ends
them; the vault's, a superuser's and a fresh analyst's short transactions stay.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import ANALYST_LOGIN, Postgres
from devstack.procs import free_port
from tests.integration.pg_backends import lower_the_transaction_floor
from tests.integration.test_lock_watchdog import _lines, _metric, private_postgres, watchdog

__all__ = ["private_postgres"]  # the fixture, used by name

BOUND_SECONDS = 2.0
"""TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS for the test (300 by default; the cluster's floor, 300 s, lowered to
1 s by its owner: migration 0060)."""
_ENDED = "whose transaction was older than"


def _there(admin: psycopg.Connection, pid: int) -> bool:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


@pytest.mark.timeout(60)
def test_analysts_and_the_etls_old_transactions_are_ended_and_the_vaults_and_short_ones_are_not(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """An analyst's snapshot held idle, an analyst's long statement and the ETL's idle snapshot are each ended within
    a look or two of the bound (one WARNING line each: pid, login, age; no statement; counted); an older transaction
    of the serving role (a key job's hold) and of a superuser, and a fresh analyst's short transactions one after
    another for the whole time, are not. Before 0057 nothing ended any of them."""
    pg = private_postgres
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    settings = {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port), "TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS": "2"}
    lower_the_transaction_floor(pg.admin_dsn, 1.0)
    conns = {
        name: psycopg.connect(dsn, autocommit=True)
        for name, dsn in (
            ("superuser", pg.admin_dsn),
            ("vault", pg.vault_dsn),
            ("idle", pg.analyst_dsn),
            ("active", pg.analyst_dsn),
            ("etl", pg.etl_dsn),
            ("fresh", pg.analyst_dsn),
        )
    }
    pids = {name: conn.info.backend_pid for name, conn in conns.items()}
    stop = threading.Event()
    fresh_transactions: list[float] = []
    active_error: list[BaseException] = []

    def short_transactions() -> None:  # a fresh analyst's: one after another, each well under the bound
        conn = conns["fresh"]
        while not stop.is_set():
            began = time.monotonic()
            with conn.transaction():
                conn.execute("SELECT count(*) FROM public.user_logins")
                time.sleep(0.4)
            fresh_transactions.append(time.monotonic() - began)

    def long_statement() -> None:
        try:
            conns["active"].execute("SELECT pg_sleep(30)")
        except psycopg.OperationalError as error:
            active_error.append(error)

    with (
        contextlib.ExitStack() as closing,
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        watchdog(pg, log_file, settings),
    ):
        for conn in conns.values():
            closing.callback(conn.close)
        conns["superuser"].execute("BEGIN")
        conns["superuser"].execute("SELECT txid_current()")
        conns["vault"].execute("BEGIN")  # a key job's hold: older than every analyst's
        vault_xid = conns["vault"].execute("SELECT txid_current()").fetchone()
        conns["idle"].execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conns["idle"].execute("SELECT count(*) FROM public.user_logins")  # the snapshot, kept: backend_xmin held
        conns["etl"].execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conns["etl"].execute("SELECT 1")
        held_at = time.monotonic()
        threads = [threading.Thread(target=f, daemon=True) for f in (long_statement, short_transactions)]
        for thread in threads:
            thread.start()
        gone_after: dict[str, float] = {}
        while time.monotonic() - held_at < 3 * BOUND_SECONDS and len(gone_after) < 3:
            for name in ("idle", "active", "etl"):
                if name not in gone_after and not _there(admin, pids[name]):
                    gone_after[name] = time.monotonic() - held_at
            time.sleep(0.05)
        time.sleep(0.6)  # a look or two more: nothing else is ended
        stop.set()
        for thread in threads:
            thread.join(5)
        stayed = {name: _there(admin, pids[name]) for name in ("superuser", "vault", "fresh")}
        vault_same = conns["vault"].execute("SELECT txid_current()").fetchone() == vault_xid
        counted = _metric(port, 'tokenvault_lock_watchdog_old_transaction_sessions_total{ended="true"}')
        oldest = _metric(port, "tokenvault_lock_watchdog_oldest_transaction_seconds")
        bound = _metric(port, "tokenvault_lock_watchdog_max_transaction_seconds")
    ended_after = {name: round(after, 2) for name, after in gone_after.items()}
    print(
        f"OLD-TRANSACTIONS: bound {BOUND_SECONDS} s; ended after {ended_after} s;"
        f" stayed {stayed}; fresh analyst's transactions {len(fresh_transactions)}, longest"
        f" {max(fresh_transactions, default=0):.2f} s; counted {counted}, oldest left {oldest:.2f} s"
    )
    assert sorted(gone_after) == ["active", "etl", "idle"], f"not ended within {3 * BOUND_SECONDS} s: {gone_after}"
    assert all(BOUND_SECONDS <= after < BOUND_SECONDS + 1.5 for after in gone_after.values()), gone_after
    assert active_error, "the long statement was not ended"
    assert stayed == {"superuser": True, "vault": True, "fresh": True} and vault_same
    assert len(fresh_transactions) >= 5
    assert counted == 3.0 and bound == BOUND_SECONDS and oldest < BOUND_SECONDS
    lines = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    assert sorted((line["pid"], line["login"]) for line in lines) == sorted(
        [(pids["idle"], ANALYST_LOGIN), (pids["active"], ANALYST_LOGIN), (pids["etl"], "tokenvault_etl")]
    ), lines
    by_pid = {line["pid"]: line for line in lines}
    assert by_pid[pids["idle"]]["held_horizon"] is True and by_pid[pids["idle"]]["idle"] is True
    assert by_pid[pids["active"]]["idle"] is False
    text = log_file.read_text()
    assert "user_logins" not in text and "pg_sleep" not in text


BURNT_IDS = 50_000
"""Transaction ids the analyst burns behind its own held snapshot (the tester burnt 181,000 a second)."""
BURN = (
    "DO $$ BEGIN FOR i IN 1.." + str(BURNT_IDS) + " LOOP PERFORM pg_catalog.pg_current_xact_id(); COMMIT; END LOOP;"
    " END $$"
)


def _frozen_age(admin: psycopg.Connection) -> int:
    """VACUUM (FREEZE) a table of the vault's, then its age(relfrozenxid): how far back freezing could not reach."""
    admin.execute("VACUUM (FREEZE) vault.call_budget")
    row = admin.execute("SELECT age(relfrozenxid) FROM pg_class WHERE oid = 'vault.call_budget'::regclass").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(60)
def test_transaction_ids_burnt_behind_a_held_snapshot_are_frozen_once_the_watchdog_ends_it(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Attack 32, F4: an analyst (who may write nothing) assigns transaction ids with pg_current_xact_id() and COMMIT
    in a loop while another session of its own holds a snapshot: VACUUM freezes nothing past the snapshot, and at
    ~2.1 billion ids PostgreSQL refuses every write. Here 50,000 ids are burnt behind the snapshot: while it is held a
    VACUUM (FREEZE) leaves them all unfrozen; once the watchdog has ended the holder (its bound, 4 s here) the same
    VACUUM freezes them, and the watchdog's gauge of the database's age(datfrozenxid) has counted them. Before 0057
    the holder stayed, and the second VACUUM left them unfrozen as the first."""
    pg = private_postgres
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    settings = {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port), "TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS": "4"}
    lower_the_transaction_floor(pg.admin_dsn, 1.0)
    with (
        contextlib.ExitStack() as closing,
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        watchdog(pg, log_file, settings),
    ):
        holder, burner = (psycopg.connect(pg.analyst_dsn, autocommit=True) for _ in range(2))
        closing.callback(holder.close)  # closed, not committed: the watchdog ends it
        closing.callback(burner.close)
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM public.user_logins")  # the snapshot, kept idle
        held_at = time.monotonic()
        burner.execute("SET synchronous_commit = off")  # each session's own: no commit waits for a flush
        burner.execute(BURN)
        burnt_in = time.monotonic() - held_at
        age_held = _frozen_age(admin)
        still_held = _there(admin, holder.info.backend_pid)
        while _there(admin, holder.info.backend_pid) and time.monotonic() - held_at < 10:
            time.sleep(0.05)
        ended_after = time.monotonic() - held_at
        age_after = _frozen_age(admin)
        gauge = _metric(port, "tokenvault_lock_watchdog_database_xid_age")
    print(
        f"XID-BURN: {BURNT_IDS} ids burnt in {burnt_in:.2f} s; frozen age with the snapshot held {age_held}, after the"
        f" holder was ended ({ended_after:.2f} s) {age_after}; gauge {gauge:.0f}"
    )
    assert still_held, f"the burn took {burnt_in:.2f} s, past the bound: the first VACUUM proves nothing"
    assert age_held >= BURNT_IDS, age_held  # nothing frozen past the held snapshot
    assert ended_after < 4 + 1.5, f"the holder was not ended ({ended_after:.2f} s)"
    assert age_after < 1_000, age_after  # frozen, once nothing held the horizon
    assert gauge >= BURNT_IDS, gauge
