"""The audit upkeep's database connections: each statement bounded by a timeout, and severable from another thread.

Every statement of an upkeep round (the head, the newest checkpoint, the id sequence, storing a
checkpoint, each page of the segment read) runs in a transaction of its own whose
`statement_timeout` is pinned (`UpkeepConnections.timeout`), so a statement the database makes
wait - a lock held on its table - fails and the round is counted as failed.

The database owner can trap that timeout (a function of his on the statement's path catching
`query_canceled`), and a cancel request too, so the round is also timed in the vault's own
process (service/round_watchdog.py), which calls `sever`: every connection an upkeep statement
holds at that moment is shut down at its socket. Nothing on the server can catch that; the
statement raises at once in the round's thread (psycopg: the server closed the connection),
and the connection is closed before it goes back to the pool, so the next round - and no
append - gets a fresh one. Connections the appends hold are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

CLIENT_CHECK_MILLISECONDS = 1000
"""How often the server checks, while an upkeep statement runs, that the vault is still connected (PostgreSQL 14+)."""
_BOUNDED = (
    "SELECT set_config('statement_timeout', %s, true), set_config('client_connection_check_interval', %s, true),"
    " set_config('client_min_messages', 'error', true)"
)
"""The transaction's bounds, in one round trip: the statement timeout, the server's check for a client gone,
and no notice sent to the vault.

The third is pinned for every session at its start (session_settings.py); set again here because a
function of the database owner's, run by an earlier statement on this pooled connection, can have
changed it for the session, and a notice of hundreds of MB is read whole by libpq (retest 17,
finding A: the replica OOM-killed before the round exported its checkpoint).

The second only spares the server: a statement whose connection `sever` shut down then ends within a
second (a FATAL "connection to client lost", which no PL/pgSQL handler catches) instead of waiting on
- and, a lock released, committing - for a client that left. The database owner's function can
unset both in the session; the watchdog does not depend on either."""


class UpkeepConnections:
    """Connections lent from the vault's pool to the upkeep's statements, tracked while lent."""

    def __init__(self, pool: ConnectionPool) -> None:
        """Lends connections of `pool`."""
        self._pool = pool
        self._lock = threading.Lock()
        self._lent: set[psycopg.Connection[Any]] = set()
        self._severed: set[psycopg.Connection[Any]] = set()
        self.timeout: float | None = None
        """Seconds each upkeep statement may take before the server cancels it (None: no bound)."""

    @contextlib.contextmanager
    def statement(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in a transaction bounded by `timeout`, severable by `sever` until the block ends."""
        with self._pool.connection() as conn:
            with self._lock:
                self._lent.add(conn)
            try:
                with conn.transaction():
                    if self.timeout is not None:
                        milliseconds = max(1, int(self.timeout * 1000))
                        conn.execute(_BOUNDED, (f"{milliseconds}ms", f"{CLIENT_CHECK_MILLISECONDS}ms"))
                    yield conn
            finally:
                with self._lock:
                    self._lent.discard(conn)
                    severed = conn in self._severed
                    self._severed.discard(conn)
                if severed:  # its socket is shut: never back into the pool, where an append could take it
                    conn.close()

    def sever(self) -> int:
        """Shut down the socket of every connection an upkeep statement holds now; how many.

        Not a cancel request (which the server's owner can trap): the statement waiting on it
        raises in its own thread, and its connection is closed as it is given back.
        """
        with self._lock:
            lent = list(self._lent)
            self._severed.update(lent)
            for conn in lent:
                _shut_down(conn)
        return len(lent)


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    """Shut down `conn`'s socket (both ways) through a duplicate of its descriptor; psycopg keeps its own."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error) as error:  # already closed, by the server or by the round itself
        log.info("an audit upkeep connection was already closed (%s)", type(error).__name__)
