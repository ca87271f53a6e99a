"""A login's listener holding the NOTIFY queue's tail while it fills is ended by the operators' watchdog (0053).

Review 35, R35-1: LISTEN/NOTIFY need no privilege; an analyst's `LISTEN q; BEGIN; SELECT 1;` left idle in transaction
holds the queue's tail (a backend reads notifications only between transactions) while a second session sends ~8 KB
notifications: pg_notify grew 1.16 GB in 5 s, the data disk filled, the ETL's writes failed DiskFull and the
checkpointer PANICked. The watchdog (the real process, on a cluster of the test's own) ends the sessions in a
transaction older than the queue's growth once pg_notification_queue_usage() passes NOTIFY_QUEUE_BOUND. Bounded: the
notifier stops at CAP_BYTES of queue whatever happens (an unbounded probe once filled this machine's disk).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import ANALYST_LOGIN, Postgres
from devstack.procs import free_port
from tests.integration.test_lock_watchdog import _lines, _metric, private_postgres, watchdog
from vault_service.adapters.postgres.watchdog_login import NOTIFY_QUEUE_BOUND

__all__ = ["private_postgres"]  # the fixture, used by name

QUEUE_MAX_BYTES = 8 * 1024**3
"""PostgreSQL 15's NOTIFY queue at most (pg_notification_queue_usage() is a share of it)."""
CAP_BYTES = 48 * 1024**2
"""The notifier stops here in any case: a few tens of MB of pg_notify on the test's own cluster."""
_SEND = "SELECT count(pg_notify('q', repeat('x', 7900) || g)) FROM generate_series(1, 128) g"
"""~1 MB of notifications, one transaction (autocommit): the reviewer's 7,900-byte payloads."""
_ENDED = "older than the NOTIFY queue's growth"


def _queue_bytes(admin: psycopg.Connection) -> float:
    row = admin.execute("SELECT pg_notification_queue_usage()").fetchone()
    return float(row[0]) * QUEUE_MAX_BYTES if row else 0.0


def _there(admin: psycopg.Connection, pid: int) -> bool:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


def _send_until_ended(
    admin: psycopg.Connection, notifier: psycopg.Connection, held: int, seconds: float
) -> tuple[float, float | None, float]:
    """Notifications sent (~1 MB, then a pause: ~10 MB/s) until session `held` is gone, the queue reaches CAP_BYTES
    or `seconds` pass; then three more, for the tail to move. (The queue's peak, when `held` was gone after the start
    or None, the queue after.)"""
    started = time.monotonic()
    peak, ended_after = _queue_bytes(admin), None
    while peak < CAP_BYTES and time.monotonic() - started < seconds:
        notifier.execute(_SEND)
        peak = max(peak, _queue_bytes(admin))
        if not _there(admin, held):
            ended_after = time.monotonic() - started
            break
        time.sleep(0.1)
    for _ in range(3):  # the tail moves when a notifier next writes a page
        notifier.execute(_SEND)
    return peak, ended_after, _queue_bytes(admin)


@pytest.mark.timeout(60)
def test_a_listener_idle_in_transaction_while_the_queue_fills_is_ended_and_the_etl_writes(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Without the watchdog the listener stays past the bound; with it, the sessions in a transaction older than the
    queue's growth are ended oldest first while it grows - an older bystander's, then the listener - within 2 s of the
    watchdog's start (one line each: pid, login, usage; counted), the queue is cut, the ETL's writes go on; a
    superuser's older transaction is spared. Before 0053 nothing ended it (the notifier reached CAP_BYTES)."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    superuser = psycopg.connect(pg.admin_dsn, autocommit=True)  # closed, not committed, at the end
    bystander = psycopg.connect(pg.analyst_dsn, autocommit=True)
    listener = psycopg.connect(pg.analyst_dsn, autocommit=True)
    with (
        contextlib.closing(superuser),
        contextlib.closing(bystander),
        contextlib.closing(listener),
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.analyst_dsn, autocommit=True) as notifier,
        psycopg.connect(pg.etl_dsn, autocommit=True) as etl,
    ):
        superuser.execute("BEGIN")  # older than the listener's: exempt
        superuser.execute("SELECT 1")
        bystander.execute("BEGIN")  # older than the listener's, listening to nothing: ended first, then the listener
        bystander.execute("SELECT 1")
        time.sleep(0.01)
        listener.execute("LISTEN q")
        listener.execute("BEGIN")
        listener.execute("SELECT 1")  # idle in transaction: the queue's tail stays here
        held = listener.info.backend_pid
        bystander_pid = bystander.info.backend_pid
        time.sleep(0.05)
        # without the watchdog: past the bound, and the listener stays
        while _queue_bytes(admin) <= 1.5 * bound_bytes:
            notifier.execute(_SEND)
        time.sleep(0.6)
        assert _there(admin, held), "the listener went by itself"
        before = _queue_bytes(admin)
        with watchdog(pg, log_file, {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}):
            peak, ended_after, after = _send_until_ended(admin, notifier, held, 8.0)
            etl.execute(
                "INSERT INTO public.etl_quarantine (event_id, sqs_message_id, reason, detail)"
                " VALUES ('notify-after', 'a', 'a', 'a')"
            )
            time.sleep(0.3)
            counted = _metric(port, 'tokenvault_lock_watchdog_notify_queue_sessions_total{ended="true"}')
            superuser_there = _there(admin, superuser.info.backend_pid)
        print(
            f"NOTIFY-WATCHDOG: queue {before / 2**20:.1f} MB held without the watchdog; listener ended"
            f" {ended_after} s after its start, queue peak {peak / 2**20:.1f} MB, after {after / 2**20:.1f} MB"
            f" (bound {bound_bytes / 2**20:.1f} MB, cap {CAP_BYTES / 2**20:.0f} MB)"
        )
    assert ended_after is not None and ended_after < 2.0, f"the listener was not ended (queue {peak / 2**20:.0f} MB)"
    assert after < bound_bytes, after
    assert superuser_there
    assert counted == 2.0
    lines = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    assert [line["pid"] for line in lines] == [bystander_pid, held], lines
    assert all(line["login"] == ANALYST_LOGIN and line["level"] == "ERROR" for line in lines)
    assert [line["sessions_ended"] for line in lines] == [1, 2]
    assert "xxxx" not in log_file.read_text()


@pytest.mark.timeout(30)
def test_an_analysts_listener_is_ended_before_an_older_vault_transaction(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Review 35, R35-1's order (0054): the serving role's session (a vault key job's hold) in a transaction OLDER than
    an analyst's listener idle in transaction, a notifier past the bound: the listener is ended, the vault's session
    is not (still there, the same transaction open), and the queue falls. On 0053's order (oldest first) the vault's
    session was ended first - an insider's analyst login could end the vault's or the ETL's sessions on demand."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    log_file = tmp_path / "lock_watchdog.log"
    vault = psycopg.connect(pg.vault_dsn, autocommit=True)
    listener = psycopg.connect(pg.analyst_dsn, autocommit=True)
    with (
        contextlib.closing(vault),
        contextlib.closing(listener),
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.analyst_dsn, autocommit=True) as notifier,
    ):
        vault.execute("BEGIN")  # the key job's hold: older than the listener's transaction
        xid = vault.execute("SELECT txid_current()").fetchone()
        vault_pid = vault.info.backend_pid
        time.sleep(0.01)
        listener.execute("LISTEN q")
        listener.execute("BEGIN")
        listener.execute("SELECT 1")  # idle in transaction: the queue's tail stays here
        held = listener.info.backend_pid
        while _queue_bytes(admin) <= 1.5 * bound_bytes:
            notifier.execute(_SEND)
        with watchdog(pg, log_file):
            peak, ended_after, after = _send_until_ended(admin, notifier, held, 6.0)
            time.sleep(0.3)  # a look more: the vault's session is still not ended
            vault_there = _there(admin, vault_pid)
        print(
            f"NOTIFY-ORDER: listener ended {ended_after} s after the watchdog's start, queue peak"
            f" {peak / 2**20:.1f} MB, after {after / 2**20:.1f} MB; the vault's older session there: {vault_there}"
        )
        assert vault_there, "the vault's older session was ended (0053's order: oldest first)"
        assert vault.execute("SELECT txid_current()").fetchone() == xid  # the same transaction, still open
        assert vault.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert ended_after is not None and ended_after < 2.0, f"the listener was not ended (queue {peak / 2**20:.0f} MB)"
    assert after < bound_bytes, after
    lines = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    assert [(line["pid"], line["login"]) for line in lines] == [(held, ANALYST_LOGIN)], lines
