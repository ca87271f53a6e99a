"""Ending a PostgreSQL backend as the server would (an admin, a restart, a failover), and telling whether one lives."""

from __future__ import annotations

import time

import psycopg


def terminate_backend(admin_dsn: str, pid: int) -> None:
    """`pg_terminate_backend(pid)` as the superuser of `admin_dsn`, then wait (10 s at most) until it is gone."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the terminated backend did not exit"
            time.sleep(0.02)


def session_alive(conn: psycopg.Connection) -> bool:
    """Whether `conn`'s backend still answers a statement (False once something ended it)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def lower_the_watch_floor(admin_dsn: str, held_seconds: float, waited_seconds: float = 1.0) -> None:
    """Bring migration 0050's server-side bounds (5 s, 1 s) down to a test watch's shorter timers.

    Only in a test's own database (`admin_dsn` pointed at it): vault.end_role_session still refuses to end a
    session before these, as it refuses before 5 s and 1 s in the vault's."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            "UPDATE vault.lock_watch_floor SET held_seconds = %s, waited_seconds = %s", (held_seconds, waited_seconds)
        )


def lower_the_transaction_floor(admin_dsn: str, seconds: float) -> None:
    """Bring migration 0060's floor on watchdog.end_old_transactions()'s bound (300 s) down to a test's bound.

    Only in a test's own cluster (`admin_dsn` pointed at it): the function still refuses a bound under it, as it
    refuses one under 300 s in the vault's."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("UPDATE watchdog.rule_bounds SET max_transaction_floor_seconds = %s", (seconds,))
