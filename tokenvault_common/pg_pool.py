"""Connection checks for psycopg pools that cost no round trip on a healthy connection."""

from __future__ import annotations

import logging
import os
import select
import threading
import time

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from tokenvault_common.database_dsn import Conninfo, DsnFile, conninfo_now

log = logging.getLogger(__name__)


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


class LoginCheck:
    """`check=` for a pool whose DSN may be a file rendered again: its connections of an older login retired too.

    check_connection_cheaply, and a connection of a login the file no longer names is closed - the pool drained -
    before anyone gets it, once that is safe: once the file's login is proven (a connection as it was made: its
    password and a slot of its CONNECTION LIMIT are there), or when the old login is refused itself (dropped).
    The Vault agent renders the next login into the file before Vault drops the old one, and Vault's default
    revocation drops the role without ending its sessions: their every statement is refused from then on, and they
    pass check_connection_cheaply (nothing to read). The vault's pool served such a connection: 10 of 10 Tokenize
    calls INTERNAL, until psycopg_pool retired it by age (an hour; review 36, R36-4). Retiring the old login's
    connections at the rendering alone was an outage of its own: whoever can read the rendered file (a sidecar on
    the secrets volume) can take every slot of the next login first, and the vault could connect as neither - 3 of
    3 Tokenize DEADLINE_EXCEEDED while the old login still worked (attack 35, N6). So at a checkout that finds a
    connection of another login, the file's login is tried (a connection opened and closed: at most one try at a
    time, one a second after a failure - the caller that makes it waits for it, the others do not); until it
    connects, each such connection is asked whether its login still exists (one catalog round trip, only then) and
    kept serving if it does. A failed try is logged once per login (ERROR when its slots are taken: someone else
    holds its sessions). The file's login is read again only when the file changed (its inode, size or
    modification time: a stat per check). `pool`: set once the pool exists (`attach`): its conninfo and settings
    are what the try connects with, and it is drained at a retirement, so its other connections of the old login
    go at once, not each at a caller's cost (psycopg_pool waits about a second after a failed check).
    """

    RETRY_SECONDS = 1.0
    """After a failed try as the file's login, the next is made no sooner than this."""

    def __init__(self, conninfo: Conninfo) -> None:
        self._path = conninfo.path if isinstance(conninfo, DsnFile) else None
        self._lock = threading.Lock()
        self._trying = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._user: str | None = None
        self._pool: ConnectionPool | None = None
        self._proven: str | None = None
        """The last login a connection was made as (by the pool, or by a try)."""
        self._next_try = 0.0
        self._warned: str | None = None
        """The login whose failed try was logged (once per login)."""

    def attach(self, pool: ConnectionPool) -> ConnectionPool:
        """Drain `pool` when an old login's connection is retired; try the file's login as it does. `pool` returned."""
        self._pool = pool
        return pool

    def login_now(self) -> str | None:
        """The login the DSN file names now; None without a file, or a file that names none or cannot be read."""
        if self._path is None:
            return None
        try:
            status = os.stat(self._path)
        except OSError:
            return None
        seen = (status.st_ino, status.st_size, status.st_mtime_ns)
        with self._lock:
            if seen != self._seen:
                try:
                    user = conninfo_to_dict(self._path.read_text().strip()).get("user")
                except (OSError, UnicodeDecodeError, psycopg.ProgrammingError):
                    return None  # the next connection's read of the file says what is wrong with it
                self._seen, self._user = seen, str(user) if user else None
            return self._user

    def __call__(self, conn: psycopg.Connection) -> None:
        """Raise (the connection closed) when it is dead or of a login the DSN file no longer names, retirable.

        Retirable: the file's login is proven (a connection as it was made) or the connection's own login is gone.
        """
        check_connection_cheaply(conn)
        login = self.login_now()
        if login is None:
            return
        if conn.info.user == login:
            self._proven = login  # the pool connected as it
            return
        if self._proven != login and not self._try(login, conn.info.user) and _login_exists(conn):
            return  # the file's login cannot connect yet; its predecessor still can: keep serving on it
        self._retire(conn)

    def _retire(self, conn: psycopg.Connection) -> None:
        conn.close()  # closed: the pool discards it (a connection that fails a check open goes back to the pool)
        if self._pool is not None:
            self._pool.drain()
        raise psycopg.OperationalError("a connection of a login its DSN file no longer names: retired")

    def _try(self, login: str, old: str) -> bool:
        """Whether a connection as `login` (the file's) was made now or before; a try at most once a RETRY_SECONDS."""
        pool = self._pool
        if pool is None:
            return True  # nothing to try with (not attached): retired at once
        if time.monotonic() < self._next_try or not self._trying.acquire(blocking=False):
            return self._proven == login
        try:
            if self._proven == login:
                return True
            try:
                kwargs = pool.kwargs() if callable(pool.kwargs) else pool.kwargs or {}
                psycopg.connect(conninfo_now(pool.conninfo), **{**kwargs, "connect_timeout": 5}).close()
            except Exception as error:  # psycopg.Error, DsnFileError: not proven, whatever stopped it
                self._next_try = time.monotonic() + self.RETRY_SECONDS
                if self._warned != login:
                    self._warned = login
                    _log_failed_try(login, old, error)
                return False
            self._proven = login
            if self._warned == login:
                log.warning("the DSN file's login %s connected: the connections of login %s retired", login, old)
            return True
        finally:
            self._trying.release()


def _login_exists(conn: psycopg.Connection) -> bool:
    """Whether the connection's login still exists and may log in (a round trip); False when the question fails."""
    try:
        row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (conn.info.user,)).fetchone()
        if not conn.autocommit:
            conn.rollback()  # handed out as it came: no transaction open (the ETL's pool)
    except psycopg.Error:
        return False
    return bool(row and row[0])


def _log_failed_try(login: str, old: str, error: Exception) -> None:
    """Log once that the file's login cannot connect: the server's reason (no DSN, no password in it)."""
    text = str(error).strip()
    reason = text.rpartition("FATAL:")[2].strip() if "FATAL:" in text else text.splitlines()[0] if text else ""
    reason = reason or type(error).__name__
    if "too many connections for role" in reason:
        log.error(
            "the DSN file names login %s, but its every slot is taken (%s): sessions of someone else's - a copy of"
            " its credentials? report it to the security team; serving on login %s's connections meanwhile",
            login,
            reason,
            old,
        )
    else:
        log.warning(
            "the DSN file names login %s, but a connection as it failed (%s); serving on login %s's connections"
            " until it connects or that login is refused",
            login,
            reason,
            old,
        )
