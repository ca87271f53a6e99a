"""A pooled PostgreSQL connection waited for in short slices, so that a stop of the ETL ends the wait within 1 s.

psycopg_pool's `connection(timeout=...)` waits its whole timeout when the database is down (no connection to hand
out). A batch holding a message on its last receive made up to three such waits (its replay check, the re-read of a
load whose answer was lost, its quarantine rows; 10 s each, plus the login check after each), so a SIGTERM met it
mid-way and the stop took the whole grace, ended by the grace's release (etl51; session 48's closing note).
`pooled_connection` waits the same timeout in slices of STOP_CHECK_SECONDS and raises PoolTimeout
STOP_WAIT_SECONDS after `stopping` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

STOP_CHECK_SECONDS = 0.25
"""How often a wait for a pooled connection looks whether the ETL is stopping."""
STOP_WAIT_SECONDS = 1.0
"""How long such a wait goes on once the ETL stops: a pool opening a connection to a database that is up (it grows
from one connection as workers ask) hands it out within this, and the batch is committed within the grace."""


@contextmanager
def pooled_connection(pool: ConnectionPool, timeout: float, stopping: threading.Event) -> Iterator[psycopg.Connection]:
    """`pool.connection(timeout)`, whose wait ends with PoolTimeout STOP_WAIT_SECONDS after `stopping` is set."""
    deadline = time.monotonic() + timeout
    stop_seen = False
    while True:
        if stopping.is_set() and not stop_seen:
            stop_seen, deadline = True, min(deadline, time.monotonic() + STOP_WAIT_SECONDS)
        left = deadline - time.monotonic()
        try:
            conn = pool.getconn(timeout=max(min(STOP_CHECK_SECONDS, left), 0.001))
            break
        except PoolTimeout:
            if time.monotonic() >= deadline:
                raise
    try:
        with conn:  # commit or roll back; a pooled connection is not closed here (psycopg_pool.connection's way)
            yield conn
    finally:
        pool.putconn(conn)
