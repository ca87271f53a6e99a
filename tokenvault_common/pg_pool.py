"""Connection checks for psycopg pools that cost no round trip on a healthy connection."""

from __future__ import annotations

import select

import psycopg
from psycopg_pool import ConnectionPool


def check_connection_cheaply(conn: psycopg.Connection) -> None:
    """`check=` for ConnectionPool: ping only a connection that has something to read.

    A healthy idle connection has nothing waiting on its socket. One the server ended (a
    restart, `pg_terminate_backend`, an idle timeout) has the server's FATAL notice or the end
    of the stream waiting, so only then is the round trip of ConnectionPool.check_connection
    spent, and it raises, so the pool replaces the connection before anyone gets it.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)
