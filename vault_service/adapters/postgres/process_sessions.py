"""The database sessions this process's vault pools (and its lock watches) opened: never ended by its own rules."""

from __future__ import annotations

import threading
import weakref
from datetime import datetime

import psycopg

_BACKEND_START = (
    "SELECT backend_start FROM pg_catalog.pg_stat_activity WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()"
)


class ProcessSessions:
    """The database sessions this process's vault pools opened, while their connection is open (review 31, R31-6).

    Known by backend pid and session start (a pid the server gives again after a session ended is not taken
    for ours). The lock watch never ends one of these for keeping a session waiting, nor while it waits for a
    lock (what keeps it waiting is ended instead). One holding a watched lock `held_seconds` while not waiting
    for a lock is ended like any other session (review 33, R33-2): a vault statement stalled that long after its
    append (a disk stall at commit) fails; only this process's key operations (KEY_JOB_SESSIONS) holding the
    key-generation lock or key rows are never ended. The liveness holds take no watched lock.
    Thread-safe: pools open connections on their own threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[int, tuple[datetime | None, weakref.ref[psycopg.Connection[tuple[object, ...]]]]] = {}

    def note(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Note `conn`'s session as one of this process's (a pool's `configure`; one catalog read)."""
        row = conn.execute(_BACKEND_START).fetchone()
        with self._lock:
            self._sessions[conn.info.backend_pid] = (None if row is None else row[0], weakref.ref(conn))  # type: ignore[assignment]

    def sessions(self) -> frozenset[tuple[int, datetime | None]]:
        """(pid, session start) of this process's sessions whose connection is still open."""
        with self._lock:
            for pid, (_, ref) in list(self._sessions.items()):
                conn = ref()
                if conn is None or conn.closed:
                    del self._sessions[pid]
            return frozenset((pid, started) for pid, (started, _) in self._sessions.items())


PROCESS_SESSIONS = ProcessSessions()
"""This process's vault database sessions (bootstrap.open_vault_pool notes each connection its pools open)."""
