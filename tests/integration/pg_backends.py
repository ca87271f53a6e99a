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
