"""Connection checks for psycopg pools that cost no round trip on a healthy connection."""

from __future__ import annotations

import os
import select
import threading

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from tokenvault_common.database_dsn import Conninfo, DsnFile


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
    before anyone gets it.
    The Vault agent renders the next login into the file before Vault drops the old one, and Vault's default
    revocation drops the role without ending its sessions: their every statement is refused from then on, and they
    pass check_connection_cheaply (nothing to read). The vault's pool served such a connection: 10 of 10 Tokenize
    calls INTERNAL, until psycopg_pool retired it by age (an hour; review 36, R36-4). The file's login is read again
    only when the file changed (its inode, size or modification time: a stat per check). `pool`: set once the pool
    exists (`attach`): drained at a retirement, so its other connections of the old login go at once, not each at a
    caller's cost (psycopg_pool waits about a second after a failed check).
    """

    def __init__(self, conninfo: Conninfo) -> None:
        self._path = conninfo.path if isinstance(conninfo, DsnFile) else None
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._user: str | None = None
        self._pool: ConnectionPool | None = None

    def attach(self, pool: ConnectionPool) -> ConnectionPool:
        """Drain `pool` when a connection of an old login is found; `pool` returned."""
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
        """Raise (the connection closed) when it is dead or of a login the DSN file no longer names."""
        check_connection_cheaply(conn)
        login = self.login_now()
        if login is None or conn.info.user == login:
            return
        conn.close()  # closed: the pool discards it (a connection that fails a check open goes back to the pool)
        if self._pool is not None:
            self._pool.drain()
        raise psycopg.OperationalError("a connection of a login its DSN file no longer names: retired")
